"""Tool permissions: allow, ask or deny each tool call by tool name and argument patterns.

A policy is a YAML file (``trinity run --permissions FILE``, ``TRINITY_PERMISSIONS_FILE``), or
the same structure as a mapping (``[permissions]`` in ``trinity.toml``)::

    default: allow              # allow | ask | deny: what happens when no rule matches
    path_args: [target]         # optional: more argument names that hold paths (see below)
    rules:
      - tool: "shell.run"
        args: {command: 're:\\brm\\b[^;&|`\\n)]*\\s-(-recursive\\b|[a-zA-Z]*[rR])'}
        action: deny
        reason: recursive delete
      - tool: "fs.write"
        args: {path: "!src/**"}  # anywhere outside src/: a person decides
        action: ask
      - tool: "everything.*"
        action: allow

How a call is matched
---------------------
* ``tool`` is a glob over the whole namespaced tool name (:func:`fnmatch.fnmatchcase`: ``*``,
  ``?``, ``[abc]``; case-sensitive). ``*`` crosses dots: ``everything.*`` is every tool of that
  server, ``*`` every tool.
* ``args`` maps argument names to patterns. A rule matches only when its tool glob and *every*
  pattern match. Arguments the rule does not name are ignored; an argument the call leaves out
  is matched as the empty string (so ``!src/**`` still catches a call that omits its path).
* A pattern is a glob by default, and the whole value must match it. In a *path argument*
  ``*`` and ``?`` stay within one folder and ``**`` crosses folders (``src/**`` is everything
  under ``src/``, ``**/*.py`` any Python file); in other arguments ``*`` matches anything,
  newlines included.
* ``re:`` makes the rest a Python regular expression that is *searched* anywhere in the value
  (anchor it with ``^``/``$`` or ``\\A``/``\\Z``).
* ``!`` negates the rest: the argument must *not* match it (``!src/**``, ``!re:^ls\\b``). To
  match a value that starts with ``!``, write a regex: ``re:^!``.
* A pattern that is not a string (``true``, ``3``, ``null``) matches that JSON text exactly.
* Values: a string is matched as it is; anything else (numbers, booleans, lists, objects) as
  its JSON text, ``json.dumps(value, sort_keys=True, ensure_ascii=False)``, e.g. ``true`` or
  ``["a", "b"]``.
* Path arguments (:data:`PATH_ARGUMENTS`, names ending in ``_path``, ``_file`` or ``_dir``, and
  the policy's ``path_args``) are normalised before matching, so ``..``, ``.``, doubled slashes,
  absolute spellings and symlinks cannot slip a call past a rule: ``./src/../x`` is ``x``.
  With a workspace (as Tetyana checks), the path is resolved the way the built-in tools resolve
  it (symlinks followed) and written relative to the workspace when it stays inside; a path that
  leaves the workspace is matched as its absolute path. Path patterns are normalised the same
  way (lexically), so ``./src/**`` means ``src/**``.

Precedence: among *all* rules that match a call, ``deny`` wins over ``ask`` and ``ask`` over
``allow``; the first matching rule with the winning action is the one reported. When no rule
matches, ``default`` decides. The order of rules therefore never weakens a deny.

Limits worth knowing: a pattern sees the text of a shell command, not what the shell will do
with it. ``r''m -rf /`` or ``$(printf rm) -rf /`` defeat any pattern on ``rm``. For shell tools,
prefer an allow-list (``default: ask`` plus ``allow`` rules for the commands you trust) or an
``ask`` rule for every command with shell metacharacters (``re:[;&|`$<>\\n]``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from trinity.errors import InputError
from trinity.security.inputs import HostileInputError, load_yaml
from trinity.tools.arguments import effective_args

MAX_POLICY_FILE_BYTES = 1_000_000

PATH_ARGUMENTS = frozenset(
    {
        "path",
        "file",
        "filename",
        "filepath",
        "dir",
        "directory",
        "cwd",
        "root",
        "source",
        "destination",
        "src",
        "dst",
    }
)
"""Argument names treated as paths (besides names ending in ``_path``, ``_file``, ``_dir``)."""
_PATH_SUFFIXES = ("_path", "_file", "_dir")

_AUDIT_VALUE_CHARS = 2_000


class Action(StrEnum):
    """What a policy says about a call, weakest first."""

    ALLOW = "allow"
    """Run the call."""
    ASK = "ask"
    """Pause the run until a person approves or denies the call."""
    DENY = "deny"
    """Refuse the call without running it; the step fails."""


_STRENGTH = {Action.ALLOW: 0, Action.ASK: 1, Action.DENY: 2}
_ACTIONS = ", ".join(a.value for a in Action)


class PermissionsError(InputError):
    """A permission policy that cannot be read or validated.

    The message names the source (file, with a line when known), the rule number (from 1) and
    the field: ``perms.yaml:7: rule 2: action: must be one of allow, ask, deny (got 'block')``.
    """

    def __init__(
        self,
        source: str,
        message: str,
        *,
        rule: int | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = source
        self.rule = rule
        self.field = field
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        parts = [where]
        if rule is not None:
            parts.append(f"rule {rule}")
        if field is not None:
            parts.append(field)
        super().__init__(": ".join([*parts, message]))


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one call."""

    action: Action
    rule: int | None
    """Number (from 1, as in error messages) of the rule that decided; ``None`` for the
    default."""
    reason: str
    """The rule's ``reason``, or a description of the rule (or of the default)."""


@dataclass(frozen=True, slots=True)
class ArgPattern:
    """One compiled argument pattern."""

    text: str
    """As written in the policy (non-string patterns as their JSON text)."""
    negate: bool
    regex: re.Pattern[str]
    search: bool
    """``re:`` patterns are searched; globs must match the whole value."""

    def matches(self, value: str) -> bool:
        hit = self.regex.search(value) if self.search else self.regex.fullmatch(value)
        return (hit is not None) != self.negate


@dataclass(frozen=True, slots=True)
class Rule:
    tool: str
    """Glob over the tool name."""
    action: Action
    args: dict[str, ArgPattern] = field(default_factory=dict)
    reason: str = ""

    def describe(self) -> str:
        shown = " ".join(f"{name}={p.text!r}" for name, p in self.args.items())
        return f"{self.tool} {shown}".strip()


@dataclass(frozen=True, slots=True)
class PermissionPolicy:
    """A validated permission policy. Build one with :meth:`load` or :meth:`from_data`."""

    default: Action = Action.ALLOW
    rules: tuple[Rule, ...] = ()
    path_args: frozenset[str] = frozenset()
    """Extra argument names treated as paths."""
    source: str = "<policy>"
    """Where the policy came from, for messages."""

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> PermissionPolicy:
        """Read and validate a YAML (or JSON) policy file."""
        name = str(path)
        file = Path(path).expanduser()
        try:
            if file.is_dir():
                raise PermissionsError(name, "is a directory, not a policy file")
            size = file.stat().st_size
            if size > MAX_POLICY_FILE_BYTES:
                raise PermissionsError(
                    name, f"file is {size} bytes; the limit is {MAX_POLICY_FILE_BYTES}"
                )
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PermissionsError(name, "file not found") from None
        except UnicodeDecodeError:
            raise PermissionsError(name, "not UTF-8 text") from None
        except OSError as exc:
            raise PermissionsError(name, f"cannot read: {exc.strerror}") from None
        try:
            data = load_yaml(text)
        except HostileInputError as exc:
            raise PermissionsError(name, str(exc), line=exc.line) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise PermissionsError(name, f"not valid YAML: {problem}", line=line) from None
        if data is None:
            raise PermissionsError(name, "the file is empty")
        return cls.from_data(data, source=name, lines=_rule_lines(text))

    @classmethod
    def from_data(
        cls, data: Any, *, source: str = "<policy>", lines: list[int] | None = None
    ) -> PermissionPolicy:
        """Validate a policy given as data (a parsed file, or ``[permissions]`` in TOML).
        ``lines`` (the line of each rule) makes errors point into the file."""
        if not isinstance(data, Mapping):
            raise PermissionsError(
                source, "a permission policy must be a mapping with 'default' and 'rules'"
            )
        unknown = sorted(set(data) - {"default", "rules", "path_args"})
        if unknown:
            raise PermissionsError(
                source, f"unknown field {unknown[0]!r} (expected default, rules, path_args)"
            )
        default = _action(data.get("default", "allow"), source, None, "default", None)
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise PermissionsError(source, "must be a list of rules", field="rules")
        path_args = data.get("path_args", [])
        if not isinstance(path_args, list) or not all(
            isinstance(name, str) and name for name in path_args
        ):
            raise PermissionsError(source, "must be a list of argument names", field="path_args")
        extra = frozenset(path_args)
        rules = tuple(
            _rule(raw, source, number, _line(lines, number), extra)
            for number, raw in enumerate(raw_rules, start=1)
        )
        return cls(default=default, rules=rules, path_args=extra, source=source)

    def to_data(self) -> dict[str, Any]:
        """The policy as plain data; :meth:`from_data` rebuilds the same policy from it."""
        return {
            "default": self.default.value,
            "path_args": sorted(self.path_args),
            "rules": [
                {
                    "tool": rule.tool,
                    "args": {name: p.text for name, p in rule.args.items()},
                    "action": rule.action.value,
                    "reason": rule.reason,
                }
                for rule in self.rules
            ],
        }

    # -- deciding ------------------------------------------------------------------------------

    def is_path_arg(self, name: str) -> bool:
        return name in PATH_ARGUMENTS or name.endswith(_PATH_SUFFIXES) or name in self.path_args

    def check(
        self,
        tool: str,
        args: Mapping[str, Any],
        *,
        workspace: Path | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide a call: deny over ask over allow among the matching rules, else the default.

        ``workspace`` is the folder relative paths are resolved against (see the module
        docstring); without it, paths are normalised lexically only. ``schema`` is the tool's
        argument schema: with it, rules see the arguments as the tool will (defaults filled
        in, ``"off"`` read as ``false``: :func:`~trinity.tools.arguments.effective_args`).
        """
        if schema is not None:
            args = effective_args(args, schema)
        texts: dict[str, str] = {}
        best: tuple[int, Rule] | None = None
        for number, rule in enumerate(self.rules, start=1):
            if not fnmatchcase(tool, rule.tool):
                continue
            matched = True
            for name, pattern in rule.args.items():
                if name not in texts:
                    texts[name] = self._value_text(name, args.get(name), workspace)
                if not pattern.matches(texts[name]):
                    matched = False
                    break
            if not matched:
                continue
            if best is None or _STRENGTH[rule.action] > _STRENGTH[best[1].action]:
                best = (number, rule)
                if rule.action == Action.DENY:
                    break  # nothing is stronger
        if best is None:
            return Decision(self.default, None, f"no rule matched: the default is {self.default}")
        number, rule = best
        return Decision(rule.action, number, rule.reason or f"rule {number}: {rule.describe()}")

    def _value_text(self, name: str, value: Any, workspace: Path | None) -> str:
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        if self.is_path_arg(name) and isinstance(value, str | None):
            return normalise_path(text, workspace)
        return text


def normalise_path(value: str, workspace: Path | None = None) -> str:
    """A path as a rule sees it: ``..`` and ``.`` collapsed, slashes single; with a workspace,
    resolved like the built-in tools resolve it and relative to the workspace if inside it."""
    if workspace is not None:
        try:
            root = workspace.resolve()
            candidate = Path(value or ".")
            full = (candidate if candidate.is_absolute() else root / candidate).resolve()
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop…
            full = None
        if full is not None:
            if full.is_relative_to(root):
                return full.relative_to(root).as_posix()
            return full.as_posix()
    text = posixpath.normpath(value) if value else "."
    if text.startswith("//"):  # POSIX keeps a leading '//'; for matching it is '/'
        text = "/" + text.lstrip("/")
    return text


def audit_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as the audit log stores them: long strings cut (a 5 MB write is not copied
    into every audit row), the rest as it is."""
    shown: dict[str, Any] = {}
    for name, value in args.items():
        if isinstance(value, str) and len(value) > _AUDIT_VALUE_CHARS:
            extra = len(value) - _AUDIT_VALUE_CHARS
            value = f"{value[:_AUDIT_VALUE_CHARS]}…[+{extra} characters]"
        shown[name] = value
    return shown


# -- validation and compiling ------------------------------------------------------------------


def _action(value: Any, source: str, rule: int | None, name: str, line: int | None) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise PermissionsError(
            source, f"must be one of {_ACTIONS} (got {value!r})", rule=rule, field=name, line=line
        ) from None


def _line(lines: list[int] | None, number: int) -> int | None:
    return lines[number - 1] if lines and number <= len(lines) else None


def _rule(raw: Any, source: str, number: int, line: int | None, path_args: frozenset[str]) -> Rule:
    def fail(message: str, name: str | None = None) -> PermissionsError:
        return PermissionsError(source, message, rule=number, field=name, line=line)

    if not isinstance(raw, Mapping):
        raise fail("must be a mapping with 'tool' and 'action'")
    unknown = sorted(set(raw) - {"tool", "args", "action", "reason"})
    if unknown:
        raise fail(f"unknown field {unknown[0]!r} (expected tool, args, action, reason)")
    tool = raw.get("tool")
    if tool is None:
        raise fail("required", "tool")
    if not isinstance(tool, str) or not tool.strip():
        raise fail("must be a non-empty string (a tool name or glob)", "tool")
    if "action" not in raw:
        raise fail(f"required (one of {_ACTIONS})", "action")
    action = _action(raw["action"], source, number, "action", line)
    reason = raw.get("reason", "")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise fail("must be a string", "reason")
    raw_args = raw.get("args", {})
    if raw_args is None:
        raw_args = {}
    if not isinstance(raw_args, Mapping):
        raise fail("must be a mapping of argument name to pattern", "args")
    args: dict[str, ArgPattern] = {}
    for name, pattern in raw_args.items():
        where = f"args.{name}"
        if not isinstance(name, str) or not name:
            raise fail("argument names must be non-empty strings", "args")
        try:
            is_path = name in PATH_ARGUMENTS or name.endswith(_PATH_SUFFIXES) or name in path_args
            args[name] = compile_pattern(pattern, path=is_path)
        except ValueError as exc:
            raise fail(str(exc), where) from None
    return Rule(tool=tool.strip(), action=action, args=args, reason=reason.strip())


def compile_pattern(pattern: Any, *, path: bool = False) -> ArgPattern:
    """Compile one argument pattern (see the module docstring); ``ValueError`` names what is
    wrong with it."""
    if isinstance(pattern, bool) or pattern is None or isinstance(pattern, int | float):
        text = json.dumps(pattern)
        return ArgPattern(text, False, re.compile(re.escape(text)), search=False)
    if not isinstance(pattern, str):
        raise ValueError("a pattern must be a string (or a number, true, false or null)")
    text = pattern
    negate = text.startswith("!")
    body = text[1:] if negate else text
    if body.startswith("re:"):
        try:
            regex = re.compile(body[3:])
        except re.error as exc:
            raise ValueError(f"bad regular expression {body[3:]!r}: {exc}") from None
        return ArgPattern(text, negate, regex, search=True)
    if path:
        body = normalise_path(body) if body else body
    return ArgPattern(text, negate, re.compile(glob_to_regex(body, path=path), re.S), False)


def glob_to_regex(pattern: str, *, path: bool) -> str:
    """Translate a glob into a regular expression for ``fullmatch``.

    ``*`` matches anything (within one folder when ``path``), ``**`` anything across folders,
    ``?`` one character, ``[abc]`` / ``[!abc]`` a character class.
    """
    one = "[^/]" if path else "."
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                i += 2
                if path and pattern.startswith("/", i):  # '**/' is zero or more folders
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append(f"{one}*")
        elif char == "?":
            out.append(one)
        elif char == "[":
            end = i + 1
            if end < n and pattern[end] == "!":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                elif body.startswith(("^", "[")):
                    body = "\\" + body
                out.append(f"[{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _rule_lines(text: str) -> list[int] | None:
    """The line (from 1) where each rule starts in a YAML document, when it can be told."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return None
