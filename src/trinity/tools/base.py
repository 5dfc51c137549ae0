"""The tool interface Tetyana calls through: the built-in tools implement it, and so does the
:class:`~trinity.tools.hub.ToolHub` that adds any number of MCP servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from trinity.state import ToolResult


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    """Namespaced name, ``server.tool`` (``fs.write``, ``shell.run``)."""
    description: str
    input_schema: dict[str, Any] = field(default_factory=dict)
    """JSON schema of the arguments object."""
    idempotent: bool = False
    """Making the same call twice leaves things as making it once (reads, a write of the same
    content): a call cut off by a crash may simply be made again."""
    idempotent_unless: tuple[str, ...] = ()
    """Arguments that, when true, make a call of this tool not idempotent (``append``)."""

    def repeatable(self, args: dict[str, Any]) -> bool:
        """Whether this call may be made again without changing more than it did once."""
        return self.idempotent and not any(args.get(name) for name in self.idempotent_unless)


@runtime_checkable
class ToolProvider(Protocol):
    async def list_tools(self) -> list[ToolSpec]: ...

    async def call(
        self, name: str, args: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        """Call a tool. Failures (unknown tool, invalid arguments, tool errors, timeouts) come
        back as ``ToolResult(ok=False, error=...)`` — an observation for the planner, not an
        exception."""
        ...

    async def aclose(self) -> None: ...
