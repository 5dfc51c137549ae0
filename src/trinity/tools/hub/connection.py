"""One live MCP session with one server: :class:`_Connection` and what it is built from.

This is the transport layer of the hub: starting a stdio child or opening an HTTP session,
the handshake, the owner task that keeps the SDK's context managers in one task, the watched
read stream that notices a dead connection, the child's stderr tail (kept for error messages,
and used to find the child's pid in /proc), and killing the child's whole process group on
close. Nothing here knows about tools, restarts or results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from trinity.observability.spans import valid_traceparent
from trinity.tools.hub.errors import _describe_exception, _Unavailable
from trinity.tools.mcp_config import HttpServerConfig, ServerConfig, StdioServerConfig
from trinity.tools.reaper import REAPER, reap_group
from trinity.tools.sandbox import Sandbox

# The SDK logs what a misbehaving server does (unparsable stdout lines, a failed session DELETE)
# at WARNING and above. With no logging configured, Python's last-resort handler would print
# those, tracebacks included, into the CLI's stderr. A NullHandler stops that; the records
# still propagate to whatever handlers the application configures. ("client" is the name of
# the SDK's ClientSession logger.)
for _sdk_logger in ("mcp", "client"):
    logging.getLogger(_sdk_logger).addHandler(logging.NullHandler())

try:
    _VERSION = metadata.version("trinity-runtime")
except metadata.PackageNotFoundError:  # running from a bare source tree
    _VERSION = "0"
CLIENT_INFO = types.Implementation(name="trinity", version=_VERSION)

_STDERR_TAIL_BYTES = 4096
_CLOSE_GRACE_S = 8.0  # the SDK's stdio shutdown escalates over ~6.5 s at worst


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
                    if self.pid is not None:
                        REAPER.track(self.pid)  # killed with this process, however it dies
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
            argv = [config.command, *config.args]
            if config.sandbox != "off":
                box = Sandbox(config.sandbox, network=config.sandbox_network)
                argv = box.wrap(argv, workspace=Path(config.cwd or os.getcwd()))
            params = StdioServerParameters(
                command=argv[0], args=argv[1:], env=config.env or None, cwd=config.cwd
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
        if self.pid is not None:
            reap_group(self.pid)
        self.pid = None  # the group is gone: never signal a number that may be reused
        if self._stderr is not None:
            self._stderr.close()


async def _trace_header(request: httpx2.Request) -> None:
    """A ``tools/call`` that carries the caller's trace in ``params._meta.traceparent`` carries
    it as the W3C ``traceparent`` HTTP header too, for proxies and servers that trace HTTP.
    (The SDK sends requests from a task of its own, where the caller's context is not current:
    the request's own body says which span it belongs to.)"""
    try:
        body = request.content
    except httpx2.RequestNotRead:  # a streamed body: not a JSON-RPC request of the SDK's
        return
    if b'"traceparent"' not in body:
        return
    with contextlib.suppress(ValueError, LookupError, AttributeError, TypeError):
        meta = json.loads(body)["params"]["_meta"]
        if valid_traceparent(meta["traceparent"]):
            request.headers["traceparent"] = meta["traceparent"]


@contextlib.asynccontextmanager
async def _http_transport(config: HttpServerConfig) -> AsyncIterator[Any]:
    # The SDK's own defaults: 30 s to connect/write, 300 s read for long-lived SSE streams.
    client = httpx2.AsyncClient(
        headers=config.headers,
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"request": [_trace_header]},
    )
    async with client, streamable_http_client(config.url, http_client=client) as streams:
        yield streams
