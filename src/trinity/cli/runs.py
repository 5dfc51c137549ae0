"""``trinity runs ...``: list, show, trace, resume, cancel, approve, deny, audit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from trinity.cli.common import DbOption, JsonOption, err, out, runtime, session, settings, when
from trinity.cli.run import drive

if TYPE_CHECKING:
    from trinity.events import EventSink
    from trinity.runtime import Runtime

T = TypeVar("T")

app = typer.Typer(
    help="Look at past and running runs; resume, cancel, approve.", no_args_is_help=True
)


def _ask(db: str | None, question: Callable[[Runtime], T]) -> T:
    """``question(runtime)`` (one of its queries); an unknown run, or a database that cannot
    be read, is exit 2."""
    with session(db) as rt:
        return question(rt)


@app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 20,
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only runs with this status (repeatable)")
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", help="Only runs whose task says this")
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """The most recent runs, newest first."""
    from trinity.views import RunFilter

    where = RunFilter(status=status or None, text=text)
    runs = _ask(db, lambda rt: rt.list_runs(where, limit=limit)).runs
    if json_output:
        out.print_json(json.dumps([run.model_dump(mode="json") for run in runs]))
        return
    table = Table()
    for column in ("id", "started (UTC)", "status", "reason", "steps", "task"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            run.id,
            when(run.created_at),
            run.shown_status,
            run.stop_reason or "",
            str(run.steps),
            escape(run.task[:60]),
        )
    out.print(table)


@app.command("show")
def runs_show(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """One run: its outcome, steps, verdicts and report (read back from its journal)."""
    from trinity.cli.progress import steps_table

    run = _ask(db, lambda rt: rt.get_run(run_id))
    assert run.state is not None
    if json_output:
        summary = run.model_dump(mode="json", exclude={"state"})
        out.print_json(json.dumps({"run": summary, "state": run.state.model_dump(mode="json")}))
        return
    out.print(f"[bold]{run.id}[/] {run.shown_status} ({run.stop_reason or 'running'})")
    out.print(f"task: {escape(run.task)}", highlight=False)
    out.print(f"model: {run.model or '-'}   workspace: {run.workspace}", highlight=False)
    if run.shown_status == "interrupted":
        out.print(
            f"its process is gone: `trinity runs resume {run.id}` continues it",
            highlight=False,
        )
    out.print(steps_table(run.state))
    if run.report:
        out.print(escape(run.report), highlight=False)


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
    events = _ask(db, lambda rt: rt.events(run_id))
    if json_output:
        for event in events:
            sys.stdout.write(event.model_dump_json(exclude={"run_id"}) + "\n")
        return
    start = events[0].ts if events else 0.0
    for event in events:
        data = event.data
        if not changes:
            data = {key: value for key, value in data.items() if key != "changes"}
        text = json.dumps(data, ensure_ascii=False)
        out.print(
            f"{event.seq:5d} {event.ts - start:8.3f}s {event.kind:<16} "
            f"{(event.node or ''):<10} {escape(text[:300])}",
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
    found = _ask(db, lambda rt: rt.find_run(run_id))

    def go(rt: Runtime, subscribers: list[EventSink]) -> Any:
        return rt.resume(found.id, model=model, subscribers=subscribers)

    drive(runtime(settings(db)), go, json_output, found.id)


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

    with session(db) as rt:
        said = run_main(rt.cancel_run(rt.find_run(run_id).id, grace))
    err.print(said, soft_wrap=True)


NoteOption = Annotated[
    str | None, typer.Option("--note", help="Why: stored with the decision in the audit log")
]


def _decide(
    run_id: str,
    decision: Literal["approve", "deny", "answer"],
    note: str | None,
    db: str | None,
    json_output: bool,
) -> None:
    found = _ask(db, lambda rt: rt.find_run(run_id))

    def go(rt: Runtime, subscribers: list[EventSink]) -> Any:
        return rt.decide(found.id, decision, note, subscribers=subscribers)

    drive(runtime(settings(db)), go, json_output, found.id)


@app.command("approve")
def runs_approve(
    run_id: str, note: NoteOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Approve the tool call a run waits for, and continue the run (the call is made once)."""
    _decide(run_id, "approve", note, db, json_output)


@app.command("deny")
def runs_deny(
    run_id: str, note: NoteOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Refuse the tool call a run waits for (or decline its question), and continue the run
    (that step fails)."""
    _decide(run_id, "deny", note, db, json_output)


@app.command("answer")
def runs_answer(
    run_id: str,
    text: Annotated[str, typer.Argument(help="The answer (one of the choices, if it has some)")],
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Answer the question a run's person.ask step waits on, and continue the run (the answer
    is that step's output)."""
    _decide(run_id, "answer", text, db, json_output)


@app.command("audit")
def runs_audit(run_id: str, db: DbOption = None, json_output: JsonOption = False) -> None:
    """Every permission decision of a run: the policy's (allow / ask / deny) and people's."""
    found, rows = _ask(db, lambda rt: (rt.find_run(run_id), rt.audit(run_id)))
    if json_output:
        out.print_json(json.dumps([entry.model_dump(mode="json") for entry in rows]))
        return
    table = Table(title=f"Audit of run {found.id}")
    for column in ("time (UTC)", "step", "tool", "decision", "by", "rule", "reason", "args"):
        table.add_column(column, overflow="fold")
    for entry in rows:
        table.add_row(
            when(entry.ts),
            entry.step_id or "",
            entry.tool,
            entry.decision,
            entry.actor,
            "" if entry.rule is None else str(entry.rule),
            escape(entry.reason),
            escape(json.dumps(entry.args, ensure_ascii=False)[:200]),
        )
    out.print(table)
