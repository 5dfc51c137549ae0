"""``trinity tools ...``: list the tools a run can use, and call one directly."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from trinity.cli.common import (
    EXIT_OK,
    EXIT_STOPPED,
    JsonOption,
    err,
    fail,
    failing,
    out,
    session,
    settings,
)

if TYPE_CHECKING:
    from trinity.config import Settings

app = typer.Typer(help="List and call tools (built-in and MCP servers).", no_args_is_help=True)


McpOption = Annotated[
    Path | None,
    typer.Option("--mcp", help='MCP servers file ({"mcpServers": {...}} JSON)'),
]
WorkspaceOption = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder the built-in tools work in")
]


def _hub(config: Settings, mcp: Path | None, workspace: Path | None) -> Any:
    path = mcp or config.mcp_servers_file
    with session(config=config) as rt:
        return rt.tool_hub(workspace, str(Path(path).expanduser().resolve()) if path else None)


@app.command("list")
def tools_list(
    mcp: McpOption = None, workspace: WorkspaceOption = None, json_output: JsonOption = False
) -> None:
    """Every tool the runs can use: built-in ones and each MCP server's, with their arguments."""
    config = settings(None)

    async def listing() -> tuple[list[Any], dict[str, str]]:
        hub = _hub(config, mcp, workspace)
        try:
            problems = await hub.start()
            return await hub.list_tools(), problems
        finally:
            await hub.aclose()

    from trinity.engine.aio import run_main

    with failing():
        specs, problems = run_main(listing())
    for server, problem in (problems or {}).items():
        err.print(f"[yellow]warning:[/] server {server!r}: {escape(str(problem))}", soft_wrap=True)
    if json_output:
        out.print_json(
            json.dumps(
                [
                    {"name": s.name, "description": s.description, "input_schema": s.input_schema}
                    for s in specs
                ]
            )
        )
        return
    table = Table(title=f"{len(specs)} tools")
    for column in ("tool", "arguments (* required)", "description"):
        table.add_column(column, overflow="fold")
    for spec in specs:
        required = set(spec.input_schema.get("required", []))
        names = [
            f"{name}{'*' if name in required else ''}"
            for name in spec.input_schema.get("properties", {})
        ]
        table.add_row(spec.name, ", ".join(names), escape(spec.description[:120]))
    out.print(table)


@app.command("call")
def tools_call(
    name: Annotated[str, typer.Argument(help="Tool name, e.g. fs.read or time.get_current_time")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object")] = "{}",
    timeout: Annotated[float | None, typer.Option("--timeout", min=0.001)] = None,
    permissions: Annotated[
        Path | None, typer.Option("--permissions", help="Permission policy to apply (YAML)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve a call the policy would ask")] = False,
    mcp: McpOption = None,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Call one tool directly (to debug a server). The permission policy still applies."""
    from trinity.engine.aio import run_main
    from trinity.tools.permissions import PermissionPolicy

    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(parsed, dict):
        fail(f"--args must be a JSON object, got {type(parsed).__name__}")
    config = settings(None)
    with failing():
        policy = None
        policy_file = permissions or config.permissions_file
        if policy_file is not None:
            policy = PermissionPolicy.load(policy_file)
        elif config.permissions:
            policy = PermissionPolicy.from_data(config.permissions, source="permissions setting")
    if policy is not None:
        root = Path(workspace or config.workspace).expanduser().resolve()
        decision = policy.check(name, parsed, workspace=root)
        if decision.action.value == "deny":
            fail(f"denied by the permission policy: {decision.reason}")
        if decision.action.value == "ask" and not yes:
            fail(f"the permission policy asks before this call ({decision.reason}): add --yes")

    async def calling() -> Any:
        hub = _hub(config, mcp, workspace)
        try:
            return await hub.call(name, parsed, timeout_s=timeout)
        finally:
            await hub.aclose()

    with failing():
        result = run_main(calling())
    if json_output:
        out.print_json(result.model_dump_json())
    elif result.ok:
        sys.stdout.write(result.output + ("" if result.output.endswith("\n") else "\n"))
    else:
        err.print(f"[red]{escape(name)} failed:[/] {escape(result.error or '')}", soft_wrap=True)
        if result.output:
            sys.stdout.write(result.output + "\n")
    raise typer.Exit(EXIT_OK if result.ok else EXIT_STOPPED)
