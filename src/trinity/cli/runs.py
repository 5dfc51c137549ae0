"""``trinity runs ...``: list, show, trace, resume, cancel, approve, deny, audit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from trinity.cli.common import DbOption, JsonOption, err, fail, out, runtime, settings, when
from trinity.cli.run import drive

if TYPE_CHECKING:
    from trinity.events import EventSink
    from trinity.runtime import Runtime
    from trinity.store import Store

T = TypeVar("T")

app = typer.Typer(
    help="Look at past and running runs; resume, cancel, approve.", no_args_is_help=True
)


def _find(rt: Runtime, run_id: str) -> dict[str, Any]:
    """The run's row; an unknown id, or a database that cannot be read, is exit 2."""
    from trinity.errors import TrinityError

    try:
        row = rt.store.get_run(run_id)
    except TrinityError as exc:
        rt.close()
        fail(str(exc))
    if row is None:
        rt.close()
        fail(f"no run with id {run_id!r} (see `trinity runs list`)")
    return row


def _read(db: str | None, run_id: str, read: Callable[[Store, str], T]) -> tuple[dict[str, Any], T]:
    """A run's row (found by id or unique prefix) and ``read(store, full_id)``."""
    from trinity.errors import TrinityError

    rt = runtime(settings(db))
    try:
        row = _find(rt, run_id)
        return row, read(rt.store, row["id"])
    except TrinityError as exc:
        fail(str(exc))
    finally:
        rt.close()


def shown_status(row: dict[str, Any]) -> str:
    """A run's status as people need it: a ``running`` run whose process is gone is
    ``interrupted`` (``runs resume`` continues it)."""
    from trinity.store.lease import may_take_over

    if row["status"] == "running" and may_take_over(row["lease_owner"], row["lease_expires_at"])[0]:
        return "interrupted"
    return str(row["status"])


@app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """The most recent runs, newest first."""
    from trinity.errors import TrinityError

    rt = runtime(settings(db))
    try:
        rows = rt.store.list_runs(limit)
    except TrinityError as exc:
        fail(str(exc))
    finally:
        rt.close()
    for row in rows:
        row["shown_status"] = shown_status(row)
    if json_output:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    for column in ("id", "started (UTC)", "status", "reason", "steps", "task"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            when(row["created_at"]),
            row["shown_status"],
            row["stop_reason"] or "",
            str(row["steps"]),
            escape(row["task"][:60]),
        )
    out.print(table)


@app.command("show")
def runs_show(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """One run: its outcome, steps, verdicts and report (read back from its journal)."""
    from trinity.cli.progress import steps_table
    from trinity.state import RunState
    from trinity.store.journal import load_run

    row, (state, _) = _read(db, run_id, lambda store, rid: load_run(store, rid, RunState))
    status = shown_status(row)
    if json_output:
        out.print_json(
            json.dumps(
                {"run": {**row, "shown_status": status}, "state": state.model_dump(mode="json")}
            )
        )
        return
    out.print(f"[bold]{row['id']}[/] {status} ({row['stop_reason'] or 'running'})")
    out.print(f"task: {escape(row['task'])}", highlight=False)
    out.print(f"model: {row['model'] or '-'}   workspace: {row['workspace']}", highlight=False)
    if status == "interrupted":
        out.print(
            f"its process is gone: `trinity runs resume {row['id']}` continues it",
            highlight=False,
        )
    out.print(steps_table(state))
    if row["report"]:
        out.print(escape(row["report"]), highlight=False)


@app.command("trace")
def runs_trace(
    run_id: str,
    db: DbOption = None,
    json_output: JsonOption = False,
    changes: Annotated[
        bool,
        typer.Option("--changes", help="Show the state changes journal entries carry too"),
    ] = False,
) -> None:
    """The event log of a run (``--json``: the whole journal, as JSONL)."""
    from trinity.store import Store

    _, events = _read(db, run_id, Store.list_events)
    if json_output:
        for event in events:
            sys.stdout.write(json.dumps(event) + "\n")
        return
    start = events[0]["ts"] if events else 0.0
    for event in events:
        data = event["data"]
        if not changes:
            data = {key: value for key, value in data.items() if key != "changes"}
        text = json.dumps(data, ensure_ascii=False)
        out.print(
            f"{event['seq']:5d} {event['ts'] - start:8.3f}s {event['kind']:<16} "
            f"{(event['node'] or ''):<10} {escape(text[:300])}",
            highlight=False,
            soft_wrap=True,  # one line per event, whatever the terminal's width
        )


@app.command("resume")
def runs_resume(
    run_id: str,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Use this model instead of the run's")
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Continue a run: after a crash, Ctrl-C, SIGTERM, a cancel or an error."""
    rt = runtime(settings(db))
    row = _find(rt, run_id)

    def go(rt: Runtime, subscribers: list[EventSink]) -> Any:
        return rt.resume(row["id"], model=model, subscribers=subscribers)

    drive(rt, go, json_output, row["id"])


@app.command("cancel")
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
    """Stop a running run: the process executing it stops after its current step, or by force
    once the grace period is over (its tool processes are killed). A run whose process died is
    recorded as cancelled. Either way it can be resumed later."""
    from trinity.engine.aio import run_main
    from trinity.errors import TrinityError

    rt = runtime(settings(db))
    try:
        row = _find(rt, run_id)
        said = run_main(rt.cancel_run(row["id"], grace))
    except TrinityError as exc:
        fail(str(exc))
    finally:
        rt.close()
    err.print(said, soft_wrap=True)


NoteOption = Annotated[
    str | None, typer.Option("--note", help="Why: stored with the decision in the audit log")
]


def _decide(
    run_id: str, approve: bool, note: str | None, db: str | None, json_output: bool
) -> None:
    rt = runtime(settings(db))
    row = _find(rt, run_id)

    def go(rt: Runtime, subscribers: list[EventSink]) -> Any:
        decide = rt.approve if approve else rt.deny
        return decide(row["id"], note, subscribers=subscribers)

    drive(rt, go, json_output, row["id"])


@app.command("approve")
def runs_approve(
    run_id: str, note: NoteOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Approve the tool call a run waits for, and continue the run (the call is made once)."""
    _decide(run_id, True, note, db, json_output)


@app.command("deny")
def runs_deny(
    run_id: str, note: NoteOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Refuse the tool call a run waits for, and continue the run (that step fails)."""
    _decide(run_id, False, note, db, json_output)


@app.command("audit")
def runs_audit(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """Every permission decision of a run: the policy's (allow / ask / deny) and people's."""
    from trinity.store import Store

    row, rows = _read(db, run_id, Store.list_audit)
    if json_output:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"Audit of run {row['id']}")
    for column in ("time (UTC)", "step", "tool", "decision", "by", "rule", "reason", "args"):
        table.add_column(column, overflow="fold")
    for entry in rows:
        table.add_row(
            when(entry["ts"]),
            entry["step_id"] or "",
            entry["tool"],
            entry["decision"],
            entry["actor"],
            "" if entry["rule"] is None else str(entry["rule"]),
            escape(entry["reason"]),
            escape(json.dumps(entry["args"], ensure_ascii=False)[:200]),
        )
    out.print(table)
