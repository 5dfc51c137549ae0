"""One configured MCP server: :class:`_Server`.

It owns the server's pooled connection (started on first use, shared by every call, retired
and restarted under the restart policy), the cached tool list (listed again only after a
restart or a list_changed notice), and the call path that turns every failure into an
``ok=False`` :class:`ToolResult`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mcp import types
from mcp.shared.exceptions import MCPError

from trinity.observability.spans import trace_carrier
from trinity.state import ToolResult
from trinity.tools.base import ToolSpec
from trinity.tools.hub.connection import _Connection
from trinity.tools.hub.errors import _describe_exception, _Unavailable
from trinity.tools.hub.names import _unknown_tool
from trinity.tools.hub.restarts import RestartPolicy, _RestartTracker
from trinity.tools.hub.results import _convert_result
from trinity.tools.hub.validation import _Tool
from trinity.tools.mcp_config import HttpServerConfig, ServerConfig

# One logger for the whole hub, named as before the split, so logging configured for
# "trinity.tools.hub" sees the same records under the same name.
logger = logging.getLogger("trinity.tools.hub")

_MAX_LIST_PAGES = 100
# Protocol errors the streamable HTTP transport makes of non-2xx answers (-32600 "Session
# terminated", -32603 "Server returned an error response"), and a server's own failure.
_HTTP_SESSION_ERRORS = frozenset({types.INVALID_REQUEST, types.INTERNAL_ERROR})


class _Server:
    """One configured server: its pooled connection, restarts and cached tool list."""

    def __init__(self, config: ServerConfig, policy: RestartPolicy) -> None:
        self.config = config
        self.name = config.name
        self.last_error: str | None = None
        self._restarts = _RestartTracker(policy)
        self._conn: _Connection | None = None
        self._starting: asyncio.Task[_Connection] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closing = False
        self._tools: dict[str, _Tool] = {}
        self._tools_version = 0  # bumped by notifications/tools/list_changed
        self._listed: tuple[_Connection, int] | None = None  # what _tools was listed from
        self._list_lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        conn = self._conn
        return conn.pid if conn is not None and conn.usable else None

    @property
    def cached_specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self._tools.values()]

    # connection ------------------------------------------------------------------------------

    async def connection(self) -> _Connection:
        """The live connection, starting (or restarting) the server when there is none."""
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if conn is not None:  # died since its last use
            self._mark_broken(conn, f"ended while idle ({conn.end_reason or 'exited'})")
        if self._closing:
            raise _Unavailable("is shut down (the tool hub is closed)")
        starting = self._starting
        if starting is None:
            starting = self._starting = asyncio.create_task(self._start())
            starting.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            # Shielded: one caller's timeout must not abort a start that others wait for.
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if starting.cancelled() and task is not None and not task.cancelling():
                raise _Unavailable("was shut down while starting") from None
            raise

    async def _start(self) -> _Connection:
        try:
            delay = self._restarts.delay_before_start()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = _Connection(self.config, self._tools_changed)
            try:
                await conn.open()
            except _Unavailable as exc:
                self._restarts.record_failure()
                self.last_error = f"could not start: {exc}"
                raise _Unavailable(self.last_error) from None
            self._conn = conn
            return conn
        finally:
            self._starting = None

    def _tools_changed(self) -> None:
        self._tools_version += 1

    def _mark_broken(self, conn: _Connection, reason: str, *, failure: bool = True) -> None:
        """Stop using ``conn`` (closed in the background); count a ``failure`` once."""
        if conn.broken is None:
            conn.broken = reason
            if failure and not self._closing:
                self._restarts.record_failure()
                self.last_error = reason
        if self._conn is conn:
            self._conn = None
            task = asyncio.create_task(conn.close(kill=True))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    # tools -----------------------------------------------------------------------------------

    async def tools(self, conn: _Connection) -> dict[str, _Tool]:
        """The server's tools, listed again only after a restart or a list_changed notice."""
        if self._listed == (conn, self._tools_version):
            return self._tools
        async with self._list_lock:
            version = self._tools_version
            if self._listed == (conn, version):
                return self._tools
            assert conn.session is not None
            listed: list[types.Tool] = []
            params: types.PaginatedRequestParams | None = None
            for _ in range(_MAX_LIST_PAGES):
                page = await conn.session.list_tools(params=params)
                listed.extend(page.tools)
                if not page.next_cursor:
                    break
                params = types.PaginatedRequestParams(cursor=page.next_cursor)
            self._tools = {tool.name: _Tool(self.name, tool) for tool in listed}
            self._listed = (conn, version)
            return self._tools

    async def list_specs(self, limit: float) -> list[ToolSpec]:
        """Current specs; on failure the last known ones (calls will restart the server)."""
        conn = None
        try:
            async with asyncio.timeout(limit):
                conn = await self.connection()
                return [tool.spec for tool in (await self.tools(conn)).values()]
        except TimeoutError:
            if conn is not None:
                self._mark_broken(conn, f"timed out listing tools after {limit:g}s")
            problem = f"timed out after {limit:g}s"
        except _Unavailable as exc:
            problem = str(exc)
        except Exception as exc:
            if conn is not None and self._after_error(conn, exc):
                self._mark_broken(conn, "crashed or closed the connection")
            problem = _describe_exception(exc)
        self.last_error = problem
        logger.warning("MCP server %r: cannot list tools: %s", self.name, problem)
        return self.cached_specs

    # calls -----------------------------------------------------------------------------------

    async def call(self, tool_name: str, args: dict[str, Any], limit: float) -> ToolResult:
        qualified = f"{self.name}.{tool_name}"
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(limit):
                conn = await self.connection()
                tool = (await self.tools(conn)).get(tool_name)
                if tool is None:
                    return _unknown_tool(qualified, self.cached_specs, server=self.name)
                problem = tool.argument_errors(args)
                if problem is not None:
                    error = f"invalid arguments for {qualified}: {problem}"
                    return ToolResult(ok=False, error=error)
                assert conn.session is not None
                conn.in_flight += 1
                try:
                    # the caller's trace goes along (W3C traceparent in the request's _meta)
                    carrier = trace_carrier()
                    result = await conn.session.call_tool(
                        tool_name,
                        args,
                        meta=carrier or None,  # type: ignore[arg-type]
                    )
                finally:
                    conn.in_flight -= 1
        except TimeoutError:
            if conn is None:
                return ToolResult(
                    ok=False,
                    error=f"{qualified}: timed out after {limit:g}s "
                    f"(MCP server {self.name!r} was still starting)",
                )
            # A server that ignored one request may ignore the next: start afresh next time.
            self._mark_broken(conn, f"timed out after {limit:g}s")
            return ToolResult(ok=False, error=f"{qualified}: timed out after {limit:g}s")
        except _Unavailable as exc:
            return ToolResult(ok=False, error=f"{qualified}: MCP server {self.name!r} {exc}")
        except Exception as exc:  # MCP errors, and the SDK's own checks (schemas, protocol)
            if conn is not None and self._after_error(conn, exc):
                return self._lost(conn, qualified)
            renewed = "; the session will be renewed on next use" if conn and conn.broken else ""
            return ToolResult(ok=False, error=f"{qualified}: {_describe_exception(exc)}{renewed}")
        self._restarts.record_success()
        return _convert_result(qualified, result)

    def _after_error(self, conn: _Connection, exc: Exception) -> bool:
        """Retire ``conn`` if ``exc`` shows it is unusable; True when the server was lost."""
        code = exc.code if isinstance(exc, MCPError) else None
        if code == types.CONNECTION_CLOSED or not conn.usable:
            return True
        if code in _HTTP_SESSION_ERRORS and isinstance(self.config, HttpServerConfig):
            # The HTTP session may be gone: a restarted server forgot it (400/404), a proxy
            # failed (5xx). A fresh session costs one handshake; a stale one fails every call.
            # Not a failure for the restart cap: a healthy server may answer one call so.
            self._mark_broken(conn, _describe_exception(exc), failure=False)
        return False

    def _lost(self, conn: _Connection, qualified: str) -> ToolResult:
        if self._closing:
            error = f"{qualified}: MCP server {self.name!r} was shut down during the call"
            return ToolResult(ok=False, error=error)
        self._mark_broken(conn, "crashed or closed the connection")
        return ToolResult(
            ok=False,
            error=f"{qualified}: MCP server {self.name!r} crashed or closed the connection "
            f"during the call; it will be restarted on next use{conn.stderr_hint()}",
        )

    # shutdown --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closing = True
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.wait({self._starting})
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        if self._retiring:
            await asyncio.wait(set(self._retiring))
