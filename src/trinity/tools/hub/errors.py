"""The hub's two failure helpers: :class:`_Unavailable` and :func:`_describe_exception`.

A server that cannot be used right now is signalled by :class:`_Unavailable`, raised by the
connection (a failed start), the restart tracker (the cap) and the server (hub closed), and
caught by the server to become an ``ok=False`` result. :func:`_describe_exception` turns any
other exception into the one-line reason those results carry. Both live here, apart from the
modules that use them, so none of those modules has to import another just for them.
"""

from __future__ import annotations


class _Unavailable(Exception):
    """The server cannot be used right now (failed start, restart cap, hub closed)."""


def _describe_exception(exc: BaseException) -> str:
    """A one-line reason, digging the first real error out of anyio's exception groups."""
    from mcp.shared.exceptions import MCPError  # (only a hub with servers gets here)

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
