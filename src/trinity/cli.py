"""The ``trinity`` command.

Exit codes: 0 the run completed; 1 the run stopped without completing (the reason is printed);
2 bad input or configuration (nothing was run or stored); 3 the run is awaiting approval of a
tool call (``trinity runs approve ID`` / ``trinity runs deny ID`` decide and continue it);
130 interrupted.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trinity.config import Settings
from trinity.engine.aio import run_main
from trinity.engine.watchdog import WATCHDOG
from trinity.errors import ApprovalPendingError, ConfigError, InputError, TrinityError
from trinity.llm.registry import check_model, make_provider
from trinity.llm.scripted import RecordingProvider
from trinity.runtime import Runtime
from trinity.state import RunState, StopReason, VerificationLevel
from trinity.store import Store
from trinity.store.sqlite import MIGRATIONS, default_db_path, path_from_url

app = typer.Typer(
    name="trinity",
    help="Trinity Runtime: plan, execute, verify and learn from tool-using AI tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Look at past and running runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
mcp_app = typer.Typer(help="Trinity's built-in tools as an MCP server.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")
tools_app = typer.Typer(
    help="List and call tools (built-in and MCP servers).", no_args_is_help=True
)
app.add_typer(tools_app, name="tools")

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_STOPPED, EXIT_INPUT, EXIT_AWAITING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_INTERNAL = 70

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database: a path or sqlite:///path (default ~/.trinity/trinity.db)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")]


def _settings(db: str | None) -> Settings:
    try:
        return Settings(database_url=db) if db else Settings()
    except Exception as exc:  # pydantic's ValidationError names the bad setting
        _fail(f"bad configuration (TRINITY_* environment variables or trinity.toml): {exc}")


def _fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    # soft_wrap: one line whatever the terminal width, so logs and greps see the whole message
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _runtime(settings: Settings, **kwargs: Any) -> Runtime:
    return Runtime(settings, **kwargs)


# -- trinity run ---------------------------------------------------------------------------------


class _Progress:
    """Prints the agents' work as it happens."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.perf_counter()

    def __call__(self, kind: str, node: str | None, data: dict[str, Any]) -> None:
        t = f"[dim]{time.perf_counter() - self.started:7.2f}s[/]"
        line = self._line(kind, data)
        if line:
            self.console.print(f"{t} {line}", highlight=False)

    @staticmethod
    def _line(kind: str, data: dict[str, Any]) -> str | None:
        if kind == "policy":
            return (
                f"[magenta]meta[/]     policy: verify={data['verification']} "
                f"retries={data['max_step_retries']} replans={data['max_replans']}"
            )
        if kind == "lessons_recalled":
            return f"[cyan]knowledge[/] recalled {data['count']} lesson(s)"
        if kind == "plan":
            steps = ", ".join(f"{s['id']}:{s['tool']}" for s in data["steps"])
            label = "plan" if data["revision"] == 0 else f"replan #{data['revision']}"
            return f"[blue]atlas[/]    {label} ({data['source']}): {escape(steps)}"
        if kind == "tool_call":
            return f"[yellow]tetyana[/]  {data['step']}: {data['tool']} (attempt {data['attempt']})"
        if kind == "tool_result" and not data["ok"]:
            return f"[yellow]tetyana[/]  {data['step']}: [red]{escape(str(data['error']))}[/]"
        if kind == "verdict":
            mark = "[green]passed[/]" if data["passed"] else "[red]failed[/]"
            return f"[green]grisha[/]   {data['step']}: {mark} — {escape(data['summary'][:160])}"
        if kind == "decision":
            after = f"after {data['step']}" if "step" in data else f"because: {data.get('because')}"
            return f"[magenta]meta[/]     {data['action']} {after}"
        if kind == "progress":
            return (
                f"[magenta]meta[/]     [yellow]{data['kind']}[/] x{data['repetitions']}: "
                f"{escape(str(data['evidence'])[:160])}"
            )
        if kind == "approval_requested":
            return (
                f"[yellow]tetyana[/]  {data['step']}: {data['tool']} [bold yellow]needs approval"
                f"[/] — {escape(str(data['reason']))}"
            )
        if kind == "permission" and data.get("by"):  # a person's decision is being applied
            verb = "approved" if data["action"] == "approve" else "denied"
            return f"[yellow]tetyana[/]  {data['step']}: {verb} by {escape(str(data['by']))}"
        if kind == "tool_server_problem":
            return f"[yellow]tools[/]    server {data['server']}: {escape(data['problem'][:200])}"
        if kind == "lessons_stored":
            return f"[cyan]knowledge[/] stored {data['count']} lesson(s)"
        if kind == "llm_call":
            return (
                f"[dim]llm       {data['purpose']}: {data['input_tokens']}+"
                f"{data['output_tokens']} tokens, {data['latency_s']:.2f}s[/]"
            )
        return None


def _steps_table(state: RunState) -> Table:
    table = Table(title=f"Run {state.run_id}", show_lines=False)
    for column in ("step", "tool", "status", "tries", "verdict"):
        table.add_column(column, overflow="fold")
    plans = [*state.plan_history, *([state.plan] if state.plan else [])]
    for plan in plans:
        for step in plan.steps:
            verdict = step.attempts[-1].verdict if step.attempts else None
            style = {"succeeded": "green", "failed": "red"}.get(step.status.value, "")
            table.add_row(
                f"{step.id}" + (f" (r{plan.revision})" if plan.revision else ""),
                step.tool,
                f"[{style}]{step.status.value}[/]" if style else step.status.value,
                str(len(step.attempts)),
                escape(verdict.summary[:120]) if verdict else "",
            )
    return table


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="A task in words, or a plan file (.yaml/.json)")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="scripted:FILE | openai:MODEL | anthropic:MODEL | openai-compatible:URL#MODEL",
        ),
    ] = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", "-w", help="Folder the tools work in")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Graph step budget")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, help="Run deadline in seconds")
    ] = None,
    token_budget: Annotated[
        int | None, typer.Option("--token-budget", min=1, help="LLM tokens the run may use")
    ] = None,
    max_replans: Annotated[
        int | None, typer.Option("--max-replans", min=0, help="New plans Atlas may make")
    ] = None,
    cost_budget: Annotated[
        float | None,
        typer.Option("--cost-budget", min=0.000001, help="US dollars the LLM calls may cost"),
    ] = None,
    node_timeout: Annotated[
        float | None,
        typer.Option("--node-timeout", min=0.001, help="Seconds one agent's turn may take"),
    ] = None,
    llm_timeout: Annotated[
        float | None, typer.Option("--llm-timeout", min=0.001, help="Seconds per LLM call")
    ] = None,
    tool_timeout: Annotated[
        float | None,
        typer.Option("--tool-timeout", min=0.001, help="Seconds per tool call (default)"),
    ] = None,
    verify: Annotated[
        VerificationLevel | None, typer.Option("--verify", help="Force a verification level")
    ] = None,
    mcp: Annotated[
        Path | None,
        typer.Option("--mcp", help='MCP servers file ({"mcpServers": {...}} JSON)'),
    ] = None,
    permissions: Annotated[
        Path | None,
        typer.Option(
            "--permissions", help="Tool permission policy (YAML): allow / ask / deny per tool"
        ),
    ] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Save the LLM traffic as a replayable script")
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run a task through the five agents."""
    settings = _settings(db)
    llm = None
    try:
        if record is not None:
            chosen = model or settings.model
            if chosen is None:
                _fail("--record needs a model (--model or TRINITY_MODEL)")
            check_model(chosen, settings)
            llm = RecordingProvider(make_provider(chosen, settings), record)
        runtime = _runtime(settings, llm=llm)
        request = runtime.prepare(
            target,
            model=model,
            workspace=workspace,
            max_steps=max_steps,
            timeout_s=timeout,
            verification=verify,
            token_budget=token_budget,
            max_replans=max_replans,
            permissions_file=permissions,
            mcp_servers_file=mcp,
            cost_budget_usd=cost_budget,
            node_timeout_s=node_timeout,
            llm_timeout_s=llm_timeout,
            tool_timeout_s=tool_timeout,
        )
    except TrinityError as exc:
        _fail(str(exc))
    progress = None if json_output else _Progress(err)
    if progress:
        err.print(f"[bold]trinity[/] {escape(request.task[:200])}", highlight=False)
    state: RunState | None = None
    try:
        state = run_main(_run(runtime, request, progress, llm))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the run was checkpointed; `trinity runs list` shows it")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (InputError, ConfigError) as exc:  # found while setting the run up: nothing ran
        _fail(str(exc))
    except TrinityError as exc:
        _fail(str(exc), EXIT_STOPPED)
    finally:
        runtime.close()
    _print_outcome(state, json_output)


def _exit_when_stuck(label: str, held_s: float) -> None:
    """The watchdog's last resort for this process: a run blocked in a call that cannot be
    interrupted still ends, by ending the process (its checkpoints stay)."""
    run_id = label.removeprefix("run ")
    sys.stderr.write(
        f"error: {label} is blocked in a call that cannot be interrupted ({held_s:.1f}s past "
        f"its deadline); exiting. `trinity runs resume {run_id}` continues it from its last "
        "checkpoint.\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_INTERNAL)


async def _run(runtime: Runtime, request: Any, progress: Any, llm: Any) -> RunState:
    try:
        return await runtime.start(request, on_event=progress)
    finally:
        if llm is not None:
            await llm.aclose()


def _print_outcome(state: RunState, json_output: bool) -> NoReturn:
    row_report = _report(state)
    if json_output:
        out.print_json(state.model_dump_json())
    else:
        err.print(_steps_table(state))
        colour = {StopReason.COMPLETED: "green", StopReason.AWAITING_APPROVAL: "yellow"}.get(
            state.stop_reason, "red"
        )
        err.print(f"[{colour}]{escape(row_report)}[/]", highlight=False)
        if state.stop_reason == StopReason.AWAITING_APPROVAL:
            _print_waiting(state)
    if state.stop_reason == StopReason.AWAITING_APPROVAL:
        raise typer.Exit(EXIT_AWAITING)
    raise typer.Exit(EXIT_OK if state.stop_reason == StopReason.COMPLETED else EXIT_STOPPED)


def _print_waiting(state: RunState) -> None:
    """What waits for a person, and the commands that decide it."""
    pending = state.pending_approval
    if pending is None:
        return
    args = json.dumps(pending.args, ensure_ascii=False, default=str)
    rule = f"rule {pending.rule}" if pending.rule is not None else "the policy's default"
    err.print(
        f"[bold yellow]awaiting approval[/]: step {escape(pending.step_id)} wants "
        f"{escape(pending.tool)} {escape(args[:500])}\n  asked by {rule}: "
        f"{escape(pending.reason)}\n  approve: trinity runs approve {state.run_id} [--note TEXT]"
        f"\n  deny:    trinity runs deny {state.run_id} [--note TEXT]",
        highlight=False,
        soft_wrap=True,
    )


def _report(state: RunState) -> str:
    from trinity.report import render_report

    return render_report(state)


# -- trinity runs ... ----------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _find_run(runtime: Runtime, run_id: str) -> dict[str, Any]:
    row = runtime.store.get_run(run_id)
    if row is None:
        _fail(f"no run with id {run_id!r} (see `trinity runs list`)")
    return row


def _read_run(
    db: str | None, run_id: str, read: Callable[[Store, str], T]
) -> tuple[dict[str, Any], T]:
    """A run's row (found by id or unique prefix) and ``read(store, full_id)``."""
    runtime = _runtime(_settings(db))
    try:
        row = _find_run(runtime, run_id)
        return row, read(runtime.store, row["id"])
    except TrinityError as exc:
        _fail(str(exc))
    finally:
        runtime.close()


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """The most recent runs, newest first."""
    runtime = _runtime(_settings(db))
    try:
        rows = runtime.store.list_runs(limit)
    except TrinityError as exc:
        _fail(str(exc))
    finally:
        runtime.close()
    if json_output:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    for column in ("id", "started (UTC)", "status", "reason", "steps", "task"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            _when(row["created_at"]),
            row["status"],
            row["stop_reason"] or "",
            str(row["steps"]),
            escape(row["task"][:60]),
        )
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """One run: its outcome, steps, verdicts and report."""
    row, latest = _read_run(db, run_id, Store.latest_checkpoint)
    state = RunState.model_validate_json(latest[2]) if latest else None
    if json_output:
        out.print_json(
            json.dumps({"run": row, "state": state.model_dump(mode="json") if state else None})
        )
        return
    out.print(f"[bold]{row['id']}[/] {row['status']} ({row['stop_reason'] or 'running'})")
    out.print(f"task: {escape(row['task'])}", highlight=False)
    out.print(f"model: {row['model'] or '-'}   workspace: {row['workspace']}", highlight=False)
    if state is not None:
        out.print(_steps_table(state))
    if row["report"]:
        out.print(escape(row["report"]), highlight=False)


@runs_app.command("trace")
def runs_trace(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """The event log of a run."""
    _, events = _read_run(db, run_id, Store.list_events)
    if json_output:
        for event in events:
            sys.stdout.write(json.dumps(event) + "\n")
        return
    start = events[0]["ts"] if events else 0.0
    for event in events:
        data = json.dumps(event["data"], ensure_ascii=False)
        out.print(
            f"{event['seq']:5d} {event['ts'] - start:8.3f}s {event['kind']:<16} "
            f"{(event['node'] or ''):<10} {escape(data[:300])}",
            highlight=False,
        )


@runs_app.command("resume")
def runs_resume(
    run_id: str,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Use this model instead of the run's")
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Continue a run from its last checkpoint (after a crash or an interrupt)."""
    _continue_run(
        db, run_id, json_output, lambda rt, rid, ev: rt.resume(rid, model=model, on_event=ev)
    )


def _continue_run(
    db: str | None,
    run_id: str,
    json_output: bool,
    go: Callable[[Runtime, str, Any], Coroutine[Any, Any, RunState]],
) -> NoReturn:
    """Drive an existing run (resume, approve, deny) with live progress, then print its end."""
    runtime = _runtime(_settings(db))
    progress = None if json_output else _Progress(err)
    try:
        row = _find_run(runtime, run_id)
        state = run_main(go(runtime, row["id"], progress))
    except ApprovalPendingError as exc:
        _fail(str(exc), EXIT_AWAITING)
    except TrinityError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        runtime.close()
    _print_outcome(state, json_output)


@runs_app.command("cancel")
def runs_cancel(
    run_id: str,
    grace: Annotated[
        float,
        typer.Option(
            "--grace", min=0, help="Seconds to let the current step finish before forcing"
        ),
    ] = 5.0,
    db: DbOption = None,
) -> None:
    """Stop a run that another process is running: after its current step, or by force once
    the grace period is over (its tool processes are killed). It can be resumed later."""
    runtime = _runtime(_settings(db))
    try:
        row = _find_run(runtime, run_id)
        if row["status"] != "running":
            _fail(f"run {row['id']} is not running (status {row['status']})")
        runtime.store.request_cancel(row["id"], grace)
    except TrinityError as exc:
        _fail(str(exc))
    finally:
        runtime.close()
    err.print(
        f"cancel requested for run {row['id']}: it stops after its current step, or within "
        f"{grace:g}s; `trinity runs resume {row['id']}` continues it later",
        soft_wrap=True,
    )


NoteOption = Annotated[
    str | None, typer.Option("--note", help="Why: stored with the decision in the audit log")
]


def _decide(
    run_id: str, approve: bool, note: str | None, db: str | None, json_output: bool
) -> None:
    def go(runtime: Runtime, rid: str, progress: Any) -> Coroutine[Any, Any, RunState]:
        decide = runtime.approve if approve else runtime.deny
        return decide(rid, note, on_event=progress)

    _continue_run(db, run_id, json_output, go)


@runs_app.command("approve")
def runs_approve(
    run_id: str, note: NoteOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Approve the tool call a run waits for, and continue the run (the call is made once)."""
    _decide(run_id, True, note, db, json_output)


@runs_app.command("deny")
def runs_deny(
    run_id: str, note: NoteOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Refuse the tool call a run waits for, and continue the run (that step fails)."""
    _decide(run_id, False, note, db, json_output)


@runs_app.command("audit")
def runs_audit(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """Every permission decision of a run: the policy's (allow / ask / deny) and people's."""
    row, rows = _read_run(db, run_id, Store.list_audit)
    if json_output:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"Audit of run {row['id']}")
    for column in ("time (UTC)", "step", "tool", "decision", "by", "rule", "reason", "args"):
        table.add_column(column, overflow="fold")
    for entry in rows:
        table.add_row(
            _when(entry["ts"]),
            entry["step_id"] or "",
            entry["tool"],
            entry["decision"],
            entry["actor"],
            "" if entry["rule"] is None else str(entry["rule"]),
            escape(entry["reason"]),
            escape(json.dumps(entry["args"], ensure_ascii=False)[:200]),
        )
    out.print(table)


# -- trinity tools ... ---------------------------------------------------------------------------

McpOption = Annotated[
    Path | None,
    typer.Option("--mcp", help='MCP servers file ({"mcpServers": {...}} JSON)'),
]
WorkspaceOption = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder the built-in tools work in")
]


def _hub(settings: Settings, mcp: Path | None, workspace: Path | None) -> Any:
    from trinity.tools import BuiltinTools, McpConfig, ToolHub, load_mcp_config, parse_mcp_config

    path = mcp or settings.mcp_servers_file
    if path is not None:
        config = load_mcp_config(path)
    elif settings.mcp_servers:
        config = parse_mcp_config({"servers": settings.mcp_servers}, source="mcp_servers setting")
    else:
        config = McpConfig()
    root = workspace or settings.workspace
    try:
        builtin = BuiltinTools(root, default_timeout_s=settings.tool_timeout_s)
    except OSError as exc:
        _fail(f"cannot use workspace {root}: {exc}")
    return ToolHub(config, local=[builtin], default_timeout_s=settings.tool_timeout_s)


@tools_app.command("list")
def tools_list(
    mcp: McpOption = None, workspace: WorkspaceOption = None, json_output: JsonOption = False
) -> None:
    """Every tool the runs can use: built-in ones and each MCP server's, with their arguments."""
    settings = _settings(None)

    async def listing() -> tuple[list[Any], dict[str, str]]:
        hub = _hub(settings, mcp, workspace)
        try:
            problems = await hub.start()
            return await hub.list_tools(), problems
        finally:
            await hub.aclose()

    try:
        specs, problems = run_main(listing())
    except TrinityError as exc:
        _fail(str(exc))
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


@tools_app.command("call")
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
    from trinity.tools.permissions import PermissionPolicy

    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        _fail(f"--args is not valid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(parsed, dict):
        _fail(f"--args must be a JSON object, got {type(parsed).__name__}")
    settings = _settings(None)
    try:
        policy = None
        if permissions or settings.permissions_file:
            policy = PermissionPolicy.load(permissions or settings.permissions_file)
        elif settings.permissions:
            policy = PermissionPolicy.from_data(settings.permissions, source="permissions setting")
    except TrinityError as exc:
        _fail(str(exc))
    if policy is not None:
        root = Path(workspace or settings.workspace).expanduser().resolve()
        decision = policy.check(name, parsed, workspace=root)
        if decision.action.value == "deny":
            _fail(f"denied by the permission policy: {decision.reason}")
        if decision.action.value == "ask" and not yes:
            _fail(f"the permission policy asks before this call ({decision.reason}): add --yes")

    async def calling() -> Any:
        hub = _hub(settings, mcp, workspace)
        try:
            return await hub.call(name, parsed, timeout_s=timeout)
        finally:
            await hub.aclose()

    try:
        result = run_main(calling())
    except TrinityError as exc:
        _fail(str(exc))
    if json_output:
        out.print_json(result.model_dump_json())
    elif result.ok:
        sys.stdout.write(result.output + ("" if result.output.endswith("\n") else "\n"))
    else:
        err.print(f"[red]{escape(name)} failed:[/] {escape(result.error or '')}", soft_wrap=True)
        if result.output:
            sys.stdout.write(result.output + "\n")
    raise typer.Exit(EXIT_OK if result.ok else EXIT_STOPPED)


# -- trinity mcp serve -----------------------------------------------------------------------


@mcp_app.command("serve")
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
) -> None:
    """Serve fs.*, shell.run, http.fetch and python.run to any MCP client (stdio or HTTP).

    Over HTTP a bearer token is required when TRINITY_MCP_TOKEN is set."""
    from trinity.tools import builtin_server

    if transport not in ("stdio", "http"):
        _fail(f"--transport must be stdio or http, got {transport!r}")
    argv = ["--workspace", str(workspace), "--transport", transport, "--host", host]
    argv += ["--port", str(port), "--timeout", str(timeout)]
    for entry in allow_host or []:
        argv += ["--allow-host", entry]
    if allow_non_loopback:
        argv.append("--allow-non-loopback")
    try:
        builtin_server.main(argv)
    except (ValueError, OSError) as exc:  # a non-loopback host, a bad --allow-host, a busy port
        _fail(str(exc).replace("allow_non_loopback", "--allow-non-loopback"))


# -- trinity doctor ------------------------------------------------------------------------------


@app.command()
def doctor(db: DbOption = None) -> None:
    """Check the configuration: database, workspace, providers and keys (never printed)."""
    settings = _settings(db)
    table = Table(title="trinity doctor", show_header=False)
    table.add_column("item")
    table.add_column("value", overflow="fold")
    problems = 0

    def row(name: str, value: str, ok: bool = True) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        table.add_row(name, value if ok else f"[red]{escape(value)}[/]")

    row("python", f"{platform.python_version()} ({sys.executable})")
    row("trinity-runtime", _version("trinity-runtime"))
    for package in ("openai", "anthropic", "pydantic"):
        row(package, _version(package))
    row("sqlite", f"{sqlite3.sqlite_version}, FTS5 {'yes' if _has_fts5() else 'NO'}", _has_fts5())
    try:
        path = path_from_url(settings.database_url) if settings.database_url else default_db_path()
        if path.exists():
            version = _schema_version(path)
            current = len(MIGRATIONS)
            note = "current" if version == current else f"will be migrated to {current}"
            row("database", f"{path} (schema {version}, {note})", ok=version <= current)
        else:
            row("database", f"{path} (will be created)")
    except (TrinityError, sqlite3.Error) as exc:
        row("database", str(exc), ok=False)
    row("workspace", str(Path(settings.workspace).expanduser().resolve()))
    for env, attr in (
        ("OPENAI_API_KEY", "openai_api_key"),
        ("ANTHROPIC_API_KEY", "anthropic_api_key"),
        ("OPENAI_COMPATIBLE_API_KEY", "compatible_api_key"),
    ):
        row(env, "set" if getattr(settings, attr) is not None else "not set")
    if settings.openai_base_url:
        row("OPENAI_BASE_URL", settings.openai_base_url)
    if settings.model:
        try:
            check_model(settings.model, settings)
            row("TRINITY_MODEL", settings.model)
        except TrinityError as exc:
            row("TRINITY_MODEL", str(exc), ok=False)
    else:
        row("TRINITY_MODEL", "not set (plan files run without a model)")
    toml = Path("trinity.toml")
    row("trinity.toml", "found" if toml.exists() else "none in this folder")
    out.print(table)
    if problems:
        err.print(f"[red]{problems} problem(s) found[/]")
        raise typer.Exit(EXIT_INPUT)
    out.print("[green]ok[/]")


def _schema_version(path: Path) -> int:
    """The schema version of a database file, read without changing it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _has_fts5() -> bool:
    try:
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        conn.close()
        return True
    except sqlite3.Error:
        return False


def main() -> None:
    WATCHDOG.on_stuck = _exit_when_stuck
    try:
        app()
    except Exception as exc:  # a bug: say so plainly, keep the traceback for TRINITY_DEBUG=1
        if os.environ.get("TRINITY_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}")
        err.print("Run again with TRINITY_DEBUG=1 for the traceback, and please report it.")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
