"""``trinity mcp serve``: the built-in tools as an MCP server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trinity.cli.common import fail
from trinity.errors import InputError

app = typer.Typer(help="Trinity's built-in tools as an MCP server.", no_args_is_help=True)


@app.command("serve")
def mcp_serve(
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="Folder the tools are confined to")
    ] = Path("."),
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (for a parent process) or http")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="HTTP bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port (0: any free port)")] = 8765,
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="Let http.fetch reach this host or network"),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Tool timeout (s)")] = 60.0,
    allow_non_loopback: Annotated[
        bool, typer.Option("--allow-non-loopback", help="Allow a non-loopback --host")
    ] = False,
    permissions: Annotated[
        Path | None,
        typer.Option("--permissions", help="Permission policy (YAML) checked on every call"),
    ] = None,
    sandbox: Annotated[
        str, typer.Option("--sandbox", help="strict, workspace-write or off (see docs/security.md)")
    ] = "strict",
    sandbox_network: Annotated[
        bool, typer.Option("--sandbox-network", help="Give sandboxed commands the network")
    ] = False,
) -> None:
    """Serve fs.*, shell.run, http.fetch and python.run to any MCP client (stdio or HTTP).

    Over HTTP a bearer token is required when TRINITY_MCP_TOKEN is set."""
    from trinity.tools import builtin_server

    if transport not in ("stdio", "http"):
        fail(f"--transport must be stdio or http, got {transport!r}")
    argv = ["--workspace", str(workspace), "--transport", transport, "--host", host]
    argv += ["--port", str(port), "--timeout", str(timeout)]
    for entry in allow_host or []:
        argv += ["--allow-host", entry]
    if allow_non_loopback:
        argv.append("--allow-non-loopback")
    if sandbox not in ("strict", "workspace-write", "off"):
        fail(f"--sandbox must be strict, workspace-write or off, got {sandbox!r}")
    argv += ["--sandbox", sandbox]
    if sandbox_network:
        argv.append("--sandbox-network")
    if permissions is not None:
        argv += ["--permissions", str(permissions)]
    try:
        builtin_server.main(argv)
    except InputError as exc:  # a bad policy file
        fail(str(exc))
    except (ValueError, OSError) as exc:  # a non-loopback host, a bad --allow-host, a busy port
        fail(str(exc).replace("allow_non_loopback", "--allow-non-loopback"))
