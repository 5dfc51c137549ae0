"""The ToolHub: one :class:`ToolProvider` over many MCP servers and the local tools.

Tools of an MCP server are named ``server.tool`` (``time.get_current_time``,
``everything.echo``); local providers (the built-in tools) keep their own names (``fs.write``,
``shell.run``). Each server gets one pooled session, started on first use (or at
:meth:`ToolHub.start` for ``start = "eager"``) and shared by every call.

Failures are observations, never exceptions: :meth:`ToolHub.call` always returns a
:class:`ToolResult`. A server that dies fails the calls in flight with ``ok=False`` and is
restarted by the next call, with exponential backoff between restarts and a cap on failures
per time window (:class:`RestartPolicy`). A call that times out leaves the server's session
marked broken: a server that ignored one request may be wedged, so it is killed and restarted
on next use.

Arguments are checked against the tool's input JSON schema before anything is sent, and results
are flattened to text (non-text blocks summarised) and capped.

How a session lives: the SDK's transports and :class:`ClientSession` are async context managers
backed by anyio task groups, which must be entered and exited by one task. So each connection
has an owner task that enters them, reports ready, and parks until asked to stop; calls from any
task use the session in between. The end of the transport's read stream (a dead child, a closed
HTTP session) is watched so a dead connection is noticed before the next call is sent on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import httpx2
from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from trinity.errors import ConfigError, ToolError
from trinity.state import ToolResult
from trinity.tools.base import ToolProvider, ToolSpec
from trinity.tools.builtin import MAX_OUTPUT_CHARS
from trinity.tools.mcp_config import (
    HttpServerConfig,
    McpConfig,
    ServerConfig,
    StdioServerConfig,
    load_mcp_config,
    parse_mcp_config,
)

logger = logging.getLogger(__name__)

# The SDK logs what a misbehaving server does (unparsable stdout lines, a failed session DELETE)
# at WARNING and above. With no logging configured, Python's last-resort handler would print
# those, tracebacks included, into the CLI's stderr. A NullHandler stops that; the records
# still propagate to whatever handlers the application configures. ("client" is the name of
# the SDK's ClientSession logger.)
for _sdk_logger in ("mcp", "client"):
    logging.getLogger(_sdk_logger).addHandler(logging.NullHandler())

DEFAULT_TIMEOUT_S = 120.0
"""Per-call timeout when neither the call nor the server's config gives one."""

try:
    _VERSION = metadata.version("trinity-runtime")
except metadata.PackageNotFoundError:  # running from a bare source tree
    _VERSION = "0"
CLIENT_INFO = types.Implementation(name="trinity", version=_VERSION)

_STDERR_TAIL_BYTES = 4096
_CLOSE_GRACE_S = 8.0  # the SDK's stdio shutdown escalates over ~6.5 s at worst
_MAX_LIST_PAGES = 100
_MAX_ARGUMENT_ERRORS = 5
# Protocol errors the streamable HTTP transport makes of non-2xx answers (-32600 "Session
# terminated", -32603 "Server returned an error response"), and a server's own failure.
_HTTP_SESSION_ERRORS = frozenset({types.INVALID_REQUEST, types.INTERNAL_ERROR})


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a crashed (or wedged) server may be started again."""

    base_delay_s: float = 0.25
    """Wait before the second restart in a row; doubles for each further one. The first
    restart after a failure is immediate: one crash should cost one process start, no more."""
    max_delay_s: float = 30.0
    """Longest wait between two restarts."""
    max_failures: int = 5
    """After this many failures (crashes, failed starts, timeouts) within ``window_s``, calls
    fail fast, without starting the server, until the oldest of them leaves the window."""
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if min(self.base_delay_s, self.max_delay_s) < 0 or self.window_s <= 0:
            raise ConfigError("RestartPolicy: delays must be >= 0 and window_s > 0")
        if self.max_failures < 1:
            raise ConfigError("RestartPolicy: max_failures must be at least 1")


class _Unavailable(Exception):
    """The server cannot be used right now (failed start, restart cap, hub closed)."""


# -- one connection ----------------------------------------------------------------------------


class _StderrTail:
    """A stdio server's stderr, drained through a pipe we own.

    Nothing reaches our stdout or stderr; the last few KiB are kept for error messages ("server
    crashed: <its last words>"). The pipe's inode also identifies the child in /proc, since the
    SDK's transport does not expose its pid.
    """

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._read_fd: int | None = read_fd
        self.writer = os.fdopen(write_fd, "w", encoding="utf-8")
        """Handed to the SDK as the child's stderr; closed here once the child holds a copy."""
        self.inode = os.fstat(read_fd).st_ino
        self._data = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(read_fd, self._drain)

    def _drain(self) -> None:
        """Read what the pipe holds now (called by the loop, and before quoting the tail)."""
        while self._read_fd is not None:
            try:
                chunk = os.read(self._read_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:  # every writer is gone
                self._stop_reading()
                return
            self._data += chunk
            del self._data[:-_STDERR_TAIL_BYTES]

    def _stop_reading(self) -> None:
        if self._read_fd is not None:
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None

    def child_spawned(self) -> None:
        """Drop our copy of the write end, so the pipe ends when the server's copies do."""
        self.writer.close()

    def text(self, lines: int = 3) -> str:
        self._drain()  # a dying server's last words may not have been read yet
        tail = self._data.decode("utf-8", errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in tail[-lines:] if line.strip())

    def close(self) -> None:
        self.writer.close()
        self._drain()  # keep what is already in the pipe for the last error message
        self._stop_reading()


def _child_pid_with_stderr(inode: int) -> int | None:
    """Our child process whose fd 2 is the pipe ``inode``; None where /proc cannot say."""
    me, target = os.getpid(), f"pipe:[{inode}]"
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            if ppid == me and os.readlink(f"/proc/{entry}/fd/2") == target:
                return int(entry)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return None


class _WatchedReadStream:
    """The transport's read stream, calling ``on_end`` when it ends.

    The end of this stream is the one signal both transports give when the server is gone (a
    dead child's stdout reaches EOF; a failed HTTP transport closes it), and it comes before
    anybody sends on the dead session. It adds one frame per message, nothing else.
    """

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:  # the dispatcher reads it for per-message contextvars
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._on_end()
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Connection:
    """One live session with one server: a child process or an HTTP session."""

    def __init__(self, config: ServerConfig, on_tools_changed: Callable[[], None]) -> None:
        self.config = config
        self.session: ClientSession | None = None
        self.pid: int | None = None
        """The stdio child's pid; it leads its own process group (the SDK starts it so)."""
        self.broken: str | None = None
        """Why the hub stopped using this connection (a crash, a timeout, closing)."""
        self.end_reason: str | None = None
        """What ended the transport after the handshake, when it raised."""
        self.in_flight = 0
        """Tool calls awaiting an answer on this connection."""
        self._on_tools_changed = on_tools_changed
        self._ended = asyncio.Event()
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A start that failed after its waiter gave up must not log "never retrieved".
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._task: asyncio.Task[None] | None = None
        self._stderr = _StderrTail() if isinstance(config, StdioServerConfig) else None

    @property
    def usable(self) -> bool:
        return self.broken is None and not self._ended.is_set() and self.session is not None

    def stderr_hint(self) -> str:
        text = self._stderr.text() if self._stderr is not None else ""
        return f"; its stderr: {text}" if text else ""

    async def open(self) -> None:
        """Start the server and finish the handshake, or raise :class:`_Unavailable`."""
        self._task = asyncio.create_task(self._run(), name=f"mcp-server:{self.config.name}")
        limit = self.config.startup_timeout_s
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close(kill=True)
            raise _Unavailable(
                f"did not finish starting within {limit:g}s{self.stderr_hint()}"
            ) from None
        except _Unavailable:
            await self.close(kill=True)
            raise
        except BaseException:  # cancelled: leave no half-started child behind
            await self.close(kill=True)
            raise

    async def _run(self) -> None:
        """Owner task: enter the transport and session, serve until stopped, then leave."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                if self._stderr is not None:
                    self._stderr.child_spawned()
                    self.pid = _child_pid_with_stderr(self._stderr.inode)
                session = ClientSession(
                    _WatchedReadStream(read, self._ended.set),
                    write,
                    message_handler=self._on_message,
                    client_info=CLIENT_INFO,
                )
                await stack.enter_async_context(session)
                await session.initialize()
                self.session = session
                self._ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            reason = _describe_exception(exc)
            if not self._ready.done():
                self._ready.set_exception(_Unavailable(f"{reason}{self.stderr_hint()}"))
            else:
                self.end_reason = reason
        finally:
            self._ended.set()
            if not self._ready.done():
                self._ready.set_exception(_Unavailable("stopped while starting"))

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        config = self.config
        if isinstance(config, StdioServerConfig):
            assert self._stderr is not None
            params = StdioServerParameters(
                command=config.command, args=config.args, env=config.env or None, cwd=config.cwd
            )
            return stdio_client(params, errlog=self._stderr.writer)
        assert isinstance(config, HttpServerConfig)
        return _http_transport(config)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._on_tools_changed()

    def _kill_group(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    async def close(self, *, kill: bool = False) -> None:
        """Leave the session and stop the server; no child of it survives.

        ``kill`` skips the polite shutdown (close stdin, wait, SIGTERM): for a server that is
        wedged or still starting, waiting for it to cooperate only delays the caller.
        """
        self.broken = self.broken or "closed"
        if kill or not self._ready.done():
            self._kill_group()
        elif self.in_flight:
            # Work we are abandoning can keep a server alive after its stdin closes (a pending
            # timer in node does); SIGTERM lets it clean up without a 2 s wait for EOF to work.
            self._kill_group(signal.SIGTERM)
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=_CLOSE_GRACE_S)
            if not done:  # an HTTP transport stuck somewhere, or a kill survivor
                self._kill_group()
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
        # The SDK leaves a gracefully exited server's own children alive; Trinity does not.
        self._kill_group()
        self.pid = None  # the group is gone: never signal a number that may be reused
        if self._stderr is not None:
            self._stderr.close()


@contextlib.asynccontextmanager
async def _http_transport(config: HttpServerConfig) -> AsyncIterator[Any]:
    # The SDK's own defaults: 30 s to connect/write, 300 s read for long-lived SSE streams.
    client = httpx2.AsyncClient(headers=config.headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with client, streamable_http_client(config.url, http_client=client) as streams:
        yield streams


# -- one server --------------------------------------------------------------------------------


class _Tool:
    """A listed tool, its spec under the namespaced name, and its argument validator."""

    def __init__(self, server: str, tool: types.Tool) -> None:
        self.name = tool.name
        schema = dict(tool.input_schema or {})
        self.spec = ToolSpec(f"{server}.{tool.name}", tool.description or "", schema)
        self._validator: Validator | None = None
        self._quick_check: Callable[[dict[str, Any]], bool] | None = None
        self._compiled = False

    def argument_errors(self, args: dict[str, Any]) -> str | None:
        """``"<path>: <message>; …"`` when ``args`` break the input schema, else None."""
        validator = self._validator_once()
        if validator is None or (self._quick_check is not None and self._quick_check(args)):
            return None
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        parts = [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(arguments)'}: {error.message}"
            for error in errors[:_MAX_ARGUMENT_ERRORS]
        ]
        if len(errors) > _MAX_ARGUMENT_ERRORS:
            parts.append(f"and {len(errors) - _MAX_ARGUMENT_ERRORS} more")
        return "; ".join(parts)

    def _validator_once(self) -> Validator | None:
        # Compiled on first call, not at listing: a server may list hundreds of tools.
        if not self._compiled:
            self._compiled = True
            schema = self.spec.input_schema
            try:
                cls = validator_for(schema)
                cls.check_schema(schema)
                self._validator = cls(schema)
            except SchemaError as exc:
                # The server's bug, not the caller's: let the server judge the arguments.
                logger.warning("%s: input schema is not valid JSON schema: %s", self.spec.name, exc)
            else:
                self._quick_check = _quick_object_check(schema)
        return self._validator


# Keywords that never make an instance invalid (``format`` too: jsonschema asserts formats only
# when given a format checker, and the hub's validators have none).
_ANNOTATIONS = frozenset(
    {"description", "title", "default", "examples", "$comment", "format", "deprecated"}
)
_TOP_KEYWORDS = _ANNOTATIONS | {"$schema", "type", "properties", "required", "additionalProperties"}
_JSON_TYPES: dict[str, frozenset[type]] = {
    # Exact Python types, so bool (a subclass of int) is never taken for a number.
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "null": frozenset({type(None)}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
}
_ANY_TYPE = frozenset[type]()


def _quick_object_check(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """A fast yes for the flat schemas most tools have; None for any other schema.

    jsonschema costs tens of microseconds per call even for ``{"message": string}``, a tenth of
    a whole local MCP round trip. Most tool schemas are one object of typed fields, and for
    those this check says "valid" in about a microsecond. It only ever says yes when jsonschema
    would (anything it is unsure of is a no), and a no goes to jsonschema, which decides and
    writes the messages.
    """
    if not set(schema) <= _TOP_KEYWORDS or schema.get("type", "object") != "object":
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra_allowed = schema.get("additionalProperties", True)
    if (
        not isinstance(properties, dict)
        or not isinstance(required, list)
        or not all(isinstance(name, str) for name in required)
        or not isinstance(extra_allowed, bool)
    ):
        return None
    fields: dict[str, frozenset[type]] = {}
    for name, subschema in properties.items():
        allowed = _field_types(subschema)
        if allowed is None:
            return None
        fields[name] = allowed
    needed = tuple(required)

    def check(args: dict[str, Any]) -> bool:
        for name in needed:
            if name not in args:
                return False
        for name, value in args.items():
            allowed = fields.get(name)
            if allowed is None:  # not a listed property
                if not extra_allowed:
                    return False
            elif allowed and type(value) not in allowed:
                return False
        return True

    return check


def _field_types(subschema: Any) -> frozenset[type] | None:
    """The exact Python types a field may have (empty: any); None if the check can't say."""
    if subschema is True:
        return _ANY_TYPE
    if not isinstance(subschema, dict) or not set(subschema) <= _ANNOTATIONS | {"type"}:
        return None
    kind = subschema.get("type")
    if kind is None:
        return _ANY_TYPE
    kinds = [kind] if isinstance(kind, str) else kind
    if not isinstance(kinds, list) or not all(k in _JSON_TYPES for k in kinds):
        return None
    return frozenset().union(*(_JSON_TYPES[k] for k in kinds))


class _RestartTracker:
    """Applies a :class:`RestartPolicy` to one server's failures."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._failures: deque[float] = deque()
        self._streak = 0  # failures since the last call that went through

    def record_failure(self) -> None:
        self._failures.append(time.monotonic())
        self._streak += 1

    def record_success(self) -> None:
        self._streak = 0

    def delay_before_start(self) -> float:
        """Seconds to wait before the next start; raises :class:`_Unavailable` at the cap."""
        policy, now = self.policy, time.monotonic()
        while self._failures and self._failures[0] <= now - policy.window_s:
            self._failures.popleft()
        if len(self._failures) >= policy.max_failures:
            retry_in = self._failures[0] + policy.window_s - now
            raise _Unavailable(
                f"failed {len(self._failures)} times in the last {policy.window_s:g}s; "
                f"not restarting it for another {retry_in:.1f}s"
            )
        if self._streak <= 1:
            return 0.0
        delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (self._streak - 2))
        return max(0.0, self._failures[-1] + delay - now) if self._failures else 0.0


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
                    result = await conn.session.call_tool(tool_name, args)
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


# -- the hub -----------------------------------------------------------------------------------


class ToolHub:
    """Every tool Tetyana may call: MCP servers' tools as ``server.tool``, plus local tools.

    ``servers`` are the configured MCP servers (disabled ones are known but never started);
    ``local`` are providers whose tools are listed and called under their own names (the
    built-in ``fs.*`` and ``shell.*``). A local tool may not share a name with another local
    tool, nor a namespace with an MCP server. The hub owns what it is given: :meth:`aclose`
    closes the local providers too.
    """

    def __init__(
        self,
        servers: Iterable[ServerConfig] | McpConfig = (),
        *,
        local: Iterable[ToolProvider] = (),
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        restart: RestartPolicy | None = None,
    ) -> None:
        configs = list(servers.servers.values()) if isinstance(servers, McpConfig) else servers
        if default_timeout_s <= 0:
            raise ConfigError("ToolHub: default_timeout_s must be positive")
        policy = restart or RestartPolicy()
        self.default_timeout_s = default_timeout_s
        self._servers: dict[str, _Server] = {}
        self._disabled: set[str] = set()
        for config in configs:
            if config.name in self._servers or config.name in self._disabled:
                raise ConfigError(f"MCP server {config.name!r} is configured twice")
            if config.enabled:
                self._servers[config.name] = _Server(config, policy)
            else:
                self._disabled.add(config.name)
        self._local = list(local)
        self._local_index: dict[str, ToolProvider] | None = None
        self._local_specs: list[ToolSpec] = []
        self._closed = False

    @classmethod
    def from_config(
        cls, config: McpConfig | Mapping[str, Any] | str | Path, **options: Any
    ) -> ToolHub:
        """A hub from an :class:`McpConfig`, a parsed ``mcpServers`` dict, or a JSON file path.
        ``options`` are the constructor's keywords (``local``, ``default_timeout_s``, …)."""
        if isinstance(config, str | Path):
            config = load_mcp_config(config)
        elif not isinstance(config, McpConfig):
            config = parse_mcp_config(config)
        return cls(config, **options)

    @property
    def server_names(self) -> list[str]:
        """Enabled MCP servers, in config order."""
        return list(self._servers)

    def server_pid(self, name: str) -> int | None:
        """The process id of a stdio server's live child (None if not running, or HTTP)."""
        server = self._servers.get(name)
        return server.pid if server is not None else None

    def server_error(self, name: str) -> str | None:
        """The last problem seen with a server (start failure, crash, timeout), if any."""
        server = self._servers.get(name)
        return server.last_error if server is not None else None

    async def start(self) -> dict[str, str]:
        """Check local tool names and start the ``eager`` servers (concurrently).

        Returns the problems by server name (empty when all started); a server that failed is
        tried again on first use. Raises :class:`ConfigError` on a tool name clash.
        """
        await self._local_tools()
        eager = [s for s in self._servers.values() if s.config.start == "eager"]
        outcomes = await asyncio.gather(*(s.connection() for s in eager), return_exceptions=True)
        problems = {}
        for server, outcome in zip(eager, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                problems[server.name] = str(outcome)
                logger.warning("MCP server %r: %s", server.name, outcome)
        return problems

    async def list_tools(self) -> list[ToolSpec]:
        """Local tools, then each server's, in config order. Starts servers not yet running;
        a server that cannot be reached contributes the tools it had last time (if any)."""
        self._check_open()
        await self._local_tools()
        listed = await asyncio.gather(
            *(s.list_specs(self._limit(s, None)) for s in self._servers.values())
        )
        return [*self._local_specs, *(spec for specs in listed for spec in specs)]

    async def call(
        self, name: str, args: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        """Call a tool by its hub name. Never raises (except for the caller's cancellation)."""
        started = time.perf_counter()
        try:
            result = await self._dispatch(name, args, timeout_s)
        except asyncio.CancelledError:
            raise
        except ConfigError as exc:
            result = ToolResult(ok=False, error=str(exc))
        except Exception as exc:  # a bug here must still be an observation, not a crash
            logger.exception("ToolHub.call(%r) failed", name)
            result = ToolResult(ok=False, error=f"{name}: internal error: {exc!r}")
        result.duration_s = time.perf_counter() - started
        return result

    async def aclose(self) -> None:
        """Close every session and stop every server process (also with calls in flight)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.aclose() for s in self._servers.values()))
        for provider in self._local:
            with contextlib.suppress(Exception):
                await provider.aclose()

    async def __aenter__(self) -> ToolHub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # internals -------------------------------------------------------------------------------

    async def _dispatch(self, name: str, args: Any, timeout_s: float | None) -> ToolResult:
        if self._closed:
            return ToolResult(ok=False, error=f"{name}: the tool hub is closed")
        if timeout_s is not None and timeout_s <= 0:
            return ToolResult(ok=False, error=f"{name}: timeout_s must be positive")
        local = await self._local_tools()
        provider = local.get(name)
        if provider is not None:
            return await provider.call(name, args, timeout_s=timeout_s)
        if not isinstance(args, dict):
            return ToolResult(
                ok=False,
                error=f"invalid arguments for {name}: (arguments): expected an object, "
                f"got {type(args).__name__}",
            )
        namespace, _, tool_name = name.partition(".")
        server = self._servers.get(namespace)
        if server is not None and tool_name:
            return await server.call(tool_name, args, self._limit(server, timeout_s))
        if namespace in self._disabled:
            return ToolResult(
                ok=False, error=f"{name}: MCP server {namespace!r} is disabled in its config"
            )
        return _unknown_tool(name, self._known_specs(), servers=list(self._servers))

    def _limit(self, server: _Server, timeout_s: float | None) -> float:
        return timeout_s or server.config.timeout_s or self.default_timeout_s

    def _check_open(self) -> None:
        if self._closed:
            raise ToolError("the tool hub is closed")

    async def _local_tools(self) -> dict[str, ToolProvider]:
        """Local tool name -> provider, built once; a name clash is a :class:`ConfigError`."""
        if self._local_index is not None:
            return self._local_index
        index: dict[str, ToolProvider] = {}
        specs: list[ToolSpec] = []
        for provider in self._local:
            for spec in await provider.list_tools():
                other = index.get(spec.name)
                if other is not None:
                    raise ConfigError(
                        f"tool name clash: {spec.name!r} is provided by both "
                        f"{type(other).__name__} and {type(provider).__name__}"
                    )
                namespace = spec.name.partition(".")[0]
                if "." in spec.name and (namespace in self._servers or namespace in self._disabled):
                    raise ConfigError(
                        f"tool name clash: local tool {spec.name!r} is in the namespace of MCP "
                        f"server {namespace!r}; give the server another name"
                    )
                index[spec.name] = provider
                specs.append(spec)
        self._local_index, self._local_specs = index, specs
        return index

    def _known_specs(self) -> list[ToolSpec]:
        remote = (spec for server in self._servers.values() for spec in server.cached_specs)
        return [*self._local_specs, *remote]


# -- results -----------------------------------------------------------------------------------


def _convert_result(qualified: str, result: types.CallToolResult) -> ToolResult:
    """Text blocks joined; other blocks summarised; structured content when there is no text."""
    parts = [_render_block(block) for block in result.content]
    has_text = any(isinstance(block, types.TextContent) for block in result.content)
    if not has_text and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text, truncated = _cap("\n".join(parts))
    if result.is_error:
        return ToolResult(
            ok=False,
            output=text,
            error=text or f"{qualified} reported an error without a message",
            truncated=truncated,
        )
    return ToolResult(ok=True, output=text, truncated=truncated)


def _render_block(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, {_base64_size(block.data)} bytes]"
    if isinstance(block, types.ResourceLink):
        label = f" ({block.name})" if block.name else ""
        return f"[resource link: {block.uri}{label}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        mime = f", {resource.mime_type}" if resource.mime_type else ""
        if isinstance(resource, types.TextResourceContents):
            return f"[resource: {resource.uri}{mime}, {len(resource.text)} characters]"
        return f"[resource: {resource.uri}{mime}, {_base64_size(resource.blob)} bytes]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _base64_size(data: str) -> int:
    """Decoded size of base64 ``data`` without decoding it."""
    stripped = data.strip()
    padding = len(stripped) - len(stripped.rstrip("="))
    return max(0, len(stripped) * 3 // 4 - padding)


def _cap(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text, False
    cut = len(text) - MAX_OUTPUT_CHARS
    return text[:MAX_OUTPUT_CHARS] + f"\n[… {cut} characters cut]", True


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


def _describe_exception(exc: BaseException) -> str:
    """A one-line reason, digging the first real error out of anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
