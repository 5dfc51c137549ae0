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

The package's modules: :mod:`~trinity.tools.hub.connection` (one session: transport, stderr
tail, child pid, process-group kill), :mod:`~trinity.tools.hub.server` (one server: pooled
connection, tool list, calls), :mod:`~trinity.tools.hub.restarts` (:class:`RestartPolicy`),
:mod:`~trinity.tools.hub.validation` (argument checks), :mod:`~trinity.tools.hub.results`
(result conversion) and :mod:`~trinity.tools.hub.errors`. This module holds :class:`ToolHub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.errors import ConfigError, ToolError
from trinity.state import ToolResult
from trinity.tools.base import ToolProvider, ToolSpec
from trinity.tools.hub.names import _unknown_tool
from trinity.tools.hub.restarts import RestartPolicy
from trinity.tools.mcp_config import McpConfig, ServerConfig, load_mcp_config, parse_mcp_config

if TYPE_CHECKING:
    from trinity.tools.hub.server import _Server

__all__ = ["CLIENT_INFO", "DEFAULT_TIMEOUT_S", "RestartPolicy", "ToolHub"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0
"""Per-call timeout when neither the call nor the server's config gives one."""


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
                # The MCP SDK is loaded here, by the first hub that has a server to talk to.
                from trinity.tools.hub.server import _Server

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

    def eager_servers(self) -> list[str]:
        """The servers configured with ``start = "eager"`` (the ones :meth:`start` starts)."""
        return [s.name for s in self._servers.values() if s.config.start == "eager"]

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
                # info, not warning: the caller reports the problem (unconfigured logging would
                # print a warning to stderr a second time)
                logger.info("MCP server %r: %s", server.name, outcome)
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

    def spec(self, name: str) -> ToolSpec | None:
        """A tool's spec as last listed, without waiting or starting anything (``None``: not
        listed yet)."""
        for spec in self._local_specs:
            if spec.name == name:
                return spec
        server = self._servers.get(name.split(".", 1)[0])
        if server is None:
            for provider in self._local:
                found = getattr(provider, "spec", None)
                known = found(name) if found is not None else None
                if known is not None:
                    return known
            return None
        return next((spec for spec in server.cached_specs if spec.name == name), None)

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


def __getattr__(name: str) -> Any:
    """Names that need the MCP SDK (or jsonschema), loaded on first use."""
    if name == "CLIENT_INFO":
        from trinity.tools.hub.connection import CLIENT_INFO

        return CLIENT_INFO
    if name == "_quick_object_check":
        from trinity.tools.hub.validation import _quick_object_check

        return _quick_object_check
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
