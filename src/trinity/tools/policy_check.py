"""A permission policy checked against the tools it is about, before a run starts.

A rule naming ``shell.runn``, ``Shell.Run`` or an argument the tool does not have would load
and deny nothing. So every rule's tool glob must match a built-in tool or the namespace of a
configured MCP server (whose own tools are only known once it runs), and every argument a rule
names on built-in tools must be an argument of one of the tools it matches. Errors name the
closest real name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from trinity.tools.base import ToolSpec
from trinity.tools.permissions import PermissionPolicy, PermissionsError


def check_policy_tools(
    policy: PermissionPolicy, specs: Sequence[ToolSpec], servers: Iterable[str] = ()
) -> None:
    """Raise :class:`PermissionsError` for the first rule that names no known tool, or an
    argument none of its tools has. ``specs``: the tools known now (the built-in ones);
    ``servers``: the MCP servers configured, whose tools count as known."""
    names = [spec.name for spec in specs]
    namespaces = sorted(set(servers))
    for number, rule in enumerate(policy.rules, start=1):
        matched = [spec for spec in specs if fnmatchcase(spec.name, rule.tool)]
        on_server = any(
            fnmatchcase(f"{server}.x", rule.tool) or fnmatchcase(server, rule.tool.split(".")[0])
            for server in namespaces
        )
        if not matched and not on_server:
            hint = _closest(rule.tool, names + [f"{server}.*" for server in namespaces])
            raise PermissionsError(
                policy.source,
                f"{rule.tool!r} matches no tool{hint} (names are case-sensitive; MCP tools "
                "are SERVER.TOOL)",
                rule=number,
                field="tool",
            )
        if on_server or not rule.args:
            continue  # an MCP server's tools (and their arguments) are only known at run time
        known = sorted({arg for spec in matched for arg in _properties(spec)})
        for arg in rule.args:
            if arg not in known:
                hint = _closest(arg, known)
                tools = ", ".join(spec.name for spec in matched[:5])
                raise PermissionsError(
                    policy.source,
                    f"no argument {arg!r} in {tools}{hint}; arguments: {', '.join(known)}",
                    rule=number,
                    field=f"args.{arg}",
                )


def _properties(spec: ToolSpec) -> list[str]:
    properties = spec.input_schema.get("properties")
    return list(properties) if isinstance(properties, dict) else []


def _closest(name: str, candidates: Sequence[str]) -> str:
    lowered = {candidate.lower(): candidate for candidate in candidates}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[found[0]]!r}?)" if found else ""
