"""The answer to a tool name nobody has: the closest names, or the ones there are."""

from __future__ import annotations

import difflib

from trinity.state import ToolResult
from trinity.tools.base import ToolSpec


def _unknown_tool(
    name: str, known: list[ToolSpec], *, server: str | None = None, servers: list[str] | None = None
) -> ToolResult:
    names = [spec.name for spec in known]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    where = f" on MCP server {server!r}" if server else ""
    if close:
        hint = f"; did you mean {', '.join(close)}?"
    elif names:
        shown = ", ".join(sorted(names)[:15])
        hint = f"; available: {shown}{', …' if len(names) > 15 else ''}"
    else:
        hint = ""
    if servers:
        hint += f" (MCP servers: {', '.join(servers)})"
    return ToolResult(ok=False, error=f"unknown tool {name!r}{where}{hint}")
