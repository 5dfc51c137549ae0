"""The built-in tools as an MCP server: one :class:`~mcp.server.Server`, three ways to reach it.

- in process, over in-memory streams: :func:`in_memory_transport` (streams for a
  ``ClientSession``, as Trinity's ToolHub uses them) or :func:`connect_in_process` (an SDK
  ``Client``); no child process, the same JSON-RPC messages;
- as a child process over stdio: :func:`serve_stdio` (``trinity mcp serve``, or
  ``python -m trinity.tools.builtin_server --workspace DIR``);
- over streamable HTTP: :func:`serve_http`, on 127.0.0.1 unless told otherwise.

All three serve the server :func:`build_server` returns, backed by one
:class:`~trinity.tools.builtin.BuiltinTools`: the tools behave the same however they are reached.

Why the SDK's low-level ``Server`` and not ``MCPServer``: ``MCPServer`` derives each tool's
schema from a Python signature and validates arguments itself, while the tools already have
pydantic argument models (the schema source) and a dispatcher that turns every failure, a
validation error included, into a ``ToolResult``. The low-level server lets that dispatcher
answer ``tools/call`` unchanged, with the schemas exactly as the models render them, and the
tool names (``fs.read``: dots are valid under the SDK's SEP-986 name rule) as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp import types as mcp_types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.memory import create_client_server_memory_streams
from pydantic import ValidationError

from trinity.security.loopback import is_loopback, loopback_names
from trinity.security.secrets import redact_result
from trinity.state import ToolResult
from trinity.tools.base import ToolSpec
from trinity.tools.builtin import ASK_TOOL, BUILTIN_HINTS, BUILTIN_SPECS, BuiltinTools
from trinity.tools.permissions import Action, PermissionPolicy
from trinity.tools.policy_check import check_policy_tools
from trinity.tools.sandbox import PROFILES, Sandbox

SERVER_NAME = "trinity-builtin"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PATH = "/mcp"
TOKEN_ENV = "TRINITY_MCP_TOKEN"
"""Environment variable holding the bearer token ``main`` requires over HTTP, if set."""

logger = logging.getLogger(__name__)
_OUTPUT_SCHEMA = ToolResult.model_json_schema()


# -- the server -----------------------------------------------------------------------------


def build_server(
    workspace: str | Path, *, policy: PermissionPolicy | None = None, **options: Any
) -> Server[Any]:
    """The MCP server for a fresh :class:`BuiltinTools` on ``workspace``; ``options`` are
    that class's keyword arguments (``allow_hosts``, ``default_timeout_s``, ``sandbox`` ...)."""
    return server_for(BuiltinTools(workspace, **options), policy=policy)


def server_for(tools: BuiltinTools, *, policy: PermissionPolicy | None = None) -> Server[Any]:
    """The MCP server in front of an existing :class:`BuiltinTools`. With a ``policy``, each
    call is checked first: ``deny`` refuses it, and so does ``ask`` (there is nobody to ask)."""
    served = [spec for spec in BUILTIN_SPECS if spec.name != ASK_TOOL]  # nobody to ask here
    listing = mcp_types.ListToolsResult(tools=[_mcp_tool(spec) for spec in served])
    schemas = {spec.name: spec.input_schema for spec in served}

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return listing

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        args = dict(params.arguments or {})
        refusal = _refusal(policy, tools, params.name, args)
        try:
            if refusal is not None:
                result = ToolResult(ok=False, error=refusal)
            else:
                result = await tools.call(params.name, args)
        except Exception as exc:  # a bug, not a tool failure: still an answer the model sees
            logger.exception("built-in tool %s raised", params.name)
            result = ToolResult(ok=False, error=f"{params.name}: internal error: {exc!r}")
        return to_call_tool_result(redact_result(result))

    return Server(
        SERVER_NAME,
        version=_version(),
        instructions="Files, shell, Python and HTTP tools confined to one workspace directory.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=schemas.get,
    )


def _refusal(
    policy: PermissionPolicy | None, tools: BuiltinTools, name: str, args: dict[str, Any]
) -> str | None:
    if policy is None:
        return None
    spec = tools.spec(name)
    decision = policy.check(
        name, args, workspace=tools.root, schema=spec.input_schema if spec else None
    )
    if decision.action == Action.ALLOW:
        return None
    if decision.action == Action.ASK:
        return (
            f"{name}: the permission policy wants a person to approve this call "
            f"({decision.reason}), and `trinity mcp serve` has nobody to ask: refused"
        )
    return f"{name}: denied by the permission policy: {decision.reason}"


def _mcp_tool(spec: ToolSpec) -> mcp_types.Tool:
    read_only, open_world = BUILTIN_HINTS[spec.name]
    return mcp_types.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=_OUTPUT_SCHEMA,
        annotations=mcp_types.ToolAnnotations(
            read_only_hint=read_only,
            destructive_hint=not read_only,
            # fs.write is idempotent unless it appends: a hint covers every call, so no
            idempotent_hint=spec.idempotent and not spec.idempotent_unless,
            open_world_hint=open_world,
        ),
    )


def to_call_tool_result(result: ToolResult) -> mcp_types.CallToolResult:
    """A ``ToolResult`` as MCP sees it: readable text (the error first on a failure),
    ``isError`` on failures, and the whole ``ToolResult`` as structured content."""
    if result.ok:
        text = result.output
    else:
        text = result.error or "failed"
        if result.output:
            text = f"{text}\n\n{result.output}"
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)],
        structured_content=result.model_dump(mode="json"),
        is_error=not result.ok,
    )


def tool_result_from_mcp(result: mcp_types.CallToolResult) -> ToolResult:
    """Back from MCP to a ``ToolResult``: exact when the server is this one (structured
    content), from the text content for any other MCP server."""
    if result.structured_content is not None:
        with contextlib.suppress(ValidationError):
            return ToolResult.model_validate(result.structured_content)
    text = "\n".join(
        block.text for block in result.content if isinstance(block, mcp_types.TextContent)
    )
    if result.is_error:
        return ToolResult(ok=False, error=text or "the tool reported an error")
    return ToolResult(ok=True, output=text)


def _version() -> str:
    try:
        return metadata.version("trinity-runtime")
    except metadata.PackageNotFoundError:
        return "0"


# -- in process -----------------------------------------------------------------------------

_SHUTDOWN_GRACE_S = 2.0


@contextlib.asynccontextmanager
async def in_memory_transport(server: Server[Any]) -> AsyncIterator[tuple[Any, Any]]:
    """``(read_stream, write_stream)`` for a ``ClientSession`` talking to ``server``, which
    runs in this process for as long as the context is open.

    The shape of ``stdio_client`` and ``streamable_http_client`` (what a ToolHub connection
    enters), over the SDK's in-memory streams: the same JSON-RPC messages and handshake as
    the child-process transports, without a child process.
    """
    async with create_client_server_memory_streams() as (client_streams, server_streams):
        server_read, server_write = server_streams
        done = anyio.Event()

        async def run() -> None:
            try:
                await server.run(server_read, server_write, server.create_initialization_options())
            finally:
                done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            try:
                yield client_streams
            finally:
                # End of input stops the server's loop; cancel only if it does not stop.
                await client_streams[1].aclose()
                await server_write.aclose()
                with anyio.move_on_after(_SHUTDOWN_GRACE_S):
                    await done.wait()
                group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def connect_in_process(server: Server[Any], *, mode: str = "legacy") -> AsyncIterator[Client]:
    """A connected SDK :class:`~mcp.Client` for ``server``, running in this process.

    ``mode="legacy"`` (the default) goes over the SDK's in-memory transport: real JSON-RPC
    messages and the initialize handshake, as over stdio, without a child process. Any other
    SDK mode (``"auto"``) takes the SDK's direct in-process path instead.
    ``client.session`` is the underlying ``ClientSession``.
    """
    async with Client(server, mode=mode) as client:
        yield client


# -- stdio ----------------------------------------------------------------------------------


async def serve_stdio(workspace: str | Path, **options: Any) -> None:
    """Serve the built-in tools over this process's stdin/stdout until stdin closes.

    The SDK points fd 0/1 away from the protocol streams while serving, so a tool's child
    process (``shell.run``) cannot read from or write into the JSON-RPC stream.
    """
    server = build_server(workspace, **options)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


# -- streamable HTTP ------------------------------------------------------------------------


def http_app(
    server: Server[Any],
    *,
    host: str = DEFAULT_HOST,
    path: str = DEFAULT_PATH,
    auth_token: str | None = None,
) -> Any:
    """The ASGI app serving ``server`` over streamable HTTP at ``path``.

    On a loopback ``host``, however it is spelt (``127.0.0.2``, ``127.1``, a hosts-file name,
    ``0:0:0:0:0:0:0:1``), the ``Host`` and ``Origin`` headers must name a loopback address or
    ``host`` itself (DNS-rebinding protection: a web page cannot drive the tools through the
    browser). ``auth_token``, when given, is required as ``Authorization: Bearer <token>`` on
    every request.
    """
    security = _rebinding_protection(host) if is_loopback(host) else None
    app = server.streamable_http_app(
        streamable_http_path=path, host=host, transport_security=security
    )
    return _RequireBearer(app, auth_token) if auth_token else app


class _RequireBearer:
    """ASGI middleware: 401 unless the request carries the bearer token."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b"missing or wrong token\n"})
                return
        await self.app(scope, receive, send)


async def serve_http(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    workspace: str | Path,
    path: str = DEFAULT_PATH,
    auth_token: str | None = None,
    allow_non_loopback: bool = False,
    on_ready: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve the built-in tools over streamable HTTP until cancelled (or SIGINT/SIGTERM).

    ``port=0`` picks a free port; ``on_ready`` gets the endpoint URL once the socket listens.
    A non-loopback ``host`` puts ``shell.run`` on the network: it is refused unless
    ``allow_non_loopback`` is set, and should come with an ``auth_token``.
    """
    import uvicorn  # only the HTTP transport needs it

    loopback = is_loopback(host)
    if not loopback and not allow_non_loopback:
        raise ValueError(
            f"refusing to serve shell and file tools on non-loopback host {host!r}; "
            "pass allow_non_loopback (and an auth token) to do it anyway"
        )
    if not loopback and not auth_token:
        logger.warning("serving the built-in tools on %s without an auth token", host)
    server = build_server(workspace, **options)
    app = http_app(server, host=host, path=path, auth_token=auth_token)
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound_port}{path}"
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    web = uvicorn.Server(config)
    task = asyncio.ensure_future(web.serve(sockets=[sock]))
    if on_ready is not None:
        on_ready(url)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        web.should_exit = True  # a graceful stop: open sessions end, the lifespan exits
        await task
        raise
    finally:
        sock.close()


def _rebinding_protection(host: str) -> TransportSecuritySettings:
    """Accept only requests whose ``Host`` (and ``Origin``, when sent) is a loopback name or
    address, or the bind address as given."""
    names = loopback_names(host)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{name}:*" for name in names) + sorted(names),
        allowed_origins=sorted(f"http://{name}:*" for name in names),
    )


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trinity mcp serve", description="Serve Trinity's built-in tools over MCP."
    )
    parser.add_argument("--workspace", default=".", help="directory the tools are confined to")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default=DEFAULT_HOST, help="HTTP bind address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (0: any)")
    parser.add_argument("--path", default=DEFAULT_PATH, help="HTTP endpoint path")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST_OR_CIDR",
        help="let http.fetch reach this host, address or network (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="default tool timeout (s)")
    parser.add_argument(
        "--allow-non-loopback", action="store_true", help="allow a non-loopback --host"
    )
    parser.add_argument(
        "--permissions", metavar="FILE", help="permission policy (YAML) checked on every call"
    )
    parser.add_argument(
        "--sandbox", choices=PROFILES, default="strict", help="how commands are contained"
    )
    parser.add_argument(
        "--sandbox-network", action="store_true", help="give sandboxed commands the network"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``trinity mcp serve [--transport stdio|http] --workspace DIR ...``. Over HTTP the
    bearer token, if any, comes from ``$TRINITY_MCP_TOKEN`` (not argv, which ``ps`` shows)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    options: dict[str, Any] = {
        "allow_hosts": args.allow_host,
        "default_timeout_s": args.timeout,
        "sandbox": Sandbox(profile=args.sandbox, network=args.sandbox_network),
    }
    if args.permissions:
        policy = PermissionPolicy.load(args.permissions)
        check_policy_tools(policy, BUILTIN_SPECS)
        options["policy"] = policy
    if args.transport == "stdio":
        anyio.run(lambda: serve_stdio(args.workspace, **options))
        return

    def announce(url: str) -> None:
        print(f"trinity builtin tools: serving {url}", file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(
            lambda: serve_http(
                args.host,
                args.port,
                workspace=args.workspace,
                path=args.path,
                auth_token=os.environ.get(TOKEN_ENV) or None,
                allow_non_loopback=args.allow_non_loopback,
                on_ready=announce,
                **options,
            )
        )


if __name__ == "__main__":
    main()
