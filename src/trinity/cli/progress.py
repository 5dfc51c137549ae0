"""How the CLI shows a run: live progress lines (an event subscriber), the steps table, the
end of a run."""

from __future__ import annotations

import json
import time
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trinity.cli.common import EXIT_AWAITING, EXIT_OK, EXIT_STOPPED, err, out
from trinity.events import (
    ApprovalRequested,
    DecisionMade,
    EventBase,
    InterruptedCall,
    LessonsRecalled,
    LessonsStored,
    LLMCall,
    LLMFailed,
    LLMRetry,
    LLMStreaming,
    PermissionApplied,
    PlanMade,
    PolicyChosen,
    ProgressFound,
    ToolCalled,
    ToolReturned,
    ToolServerProblem,
    VerdictGiven,
)
from trinity.state import RunState, StopReason


class Progress:
    """Prints the agents' work as it happens (a subscriber of the run's events)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.perf_counter()

    def __call__(self, event: EventBase) -> None:
        line = describe(event)
        if line:
            t = f"[dim]{time.perf_counter() - self.started:7.2f}s[/]"
            self.console.print(f"{t} {line}", highlight=False)


def describe(event: EventBase) -> str | None:
    """The progress line for an event, or ``None`` for events not worth a line."""
    if isinstance(event, PolicyChosen):
        policy = event.policy
        return (
            f"[magenta]meta[/]     policy: verify={policy.verification.value} "
            f"retries={policy.max_step_retries} replans={policy.max_replans}"
        )
    if isinstance(event, LessonsRecalled):
        return f"[cyan]knowledge[/] recalled {event.count} lesson(s)"
    if isinstance(event, PlanMade):
        steps = ", ".join(f"{s.id}:{s.tool}" for s in event.steps[:50])
        more = f" … ({len(event.steps)} steps)" if len(event.steps) > 50 else ""
        label = "plan" if event.revision == 0 else f"replan #{event.revision}"
        return f"[blue]atlas[/]    {label} ({event.source}): {escape(steps)}{more}"
    if isinstance(event, ToolCalled):
        return f"[yellow]tetyana[/]  {event.step}: {event.tool} (attempt {event.attempt})"
    if isinstance(event, ToolReturned) and not event.ok:
        return f"[yellow]tetyana[/]  {event.step}: [red]{escape(str(event.error))}[/]"
    if isinstance(event, InterruptedCall):
        return (
            f"[yellow]tetyana[/]  {event.step}: [bold yellow]interrupted[/] by the crash "
            f"(attempt {event.attempt}): {event.action}"
        )
    if isinstance(event, VerdictGiven):
        mark = "[green]passed[/]" if event.passed else "[red]failed[/]"
        return f"[green]grisha[/]   {event.step}: {mark} — {escape(event.summary[:160])}"
    if isinstance(event, DecisionMade):
        after = f"after {event.step}" if event.step else f"because: {event.because}"
        return f"[magenta]meta[/]     {event.action} {after}"
    if isinstance(event, ProgressFound):
        finding = event.finding
        return (
            f"[magenta]meta[/]     [yellow]{finding.kind.value}[/] x{finding.repetitions}: "
            f"{escape(finding.evidence[:160])}"
        )
    if isinstance(event, ApprovalRequested):
        what = {"permission": "needs approval", "rerun": "asks to re-run", "input": "asks"}[
            event.question
        ]
        return (
            f"[yellow]tetyana[/]  {event.step}: {event.tool} [bold yellow]{what}"
            f"[/] — {escape(event.reason)}"
        )
    if isinstance(event, PermissionApplied) and event.by:  # a person's decision
        verbs = {
            ("permission", "approve"): "approved",
            ("permission", "deny"): "denied",
            ("rerun", "approve"): "to be made again, said",
            ("rerun", "deny"): "not to be made again (judged by its checks), said",
            ("input", "answer"): "answered",
            ("input", "deny"): "question declined",
        }
        verb = verbs.get((event.question, event.action), event.action)
        return f"[yellow]tetyana[/]  {event.step}: {verb} by {escape(event.by)}"
    if isinstance(event, ToolServerProblem):
        return f"[yellow]tools[/]    server {event.server}: {escape(event.problem[:200])}"
    if isinstance(event, LessonsStored):
        return f"[cyan]knowledge[/] stored {event.count} lesson(s)"
    if isinstance(event, LLMCall):
        return (
            f"[dim]llm       {event.purpose}: {event.input_tokens}+"
            f"{event.output_tokens} tokens, {event.latency_s:.2f}s[/]"
        )
    if isinstance(event, LLMRetry):
        return (
            f"[yellow]llm[/]       {event.purpose}: attempt {event.attempt} failed "
            f"({escape(event.reason[:200])}); retrying in {event.wait_s:.1f}s"
        )
    if isinstance(event, LLMStreaming):
        return (
            f"[dim]llm       {event.purpose}: receiving… {event.chars:,} characters in "
            f"{event.elapsed_s:.1f}s[/]"
        )
    if isinstance(event, LLMFailed):
        return f"[red]llm[/]       {event.purpose}: failed: {escape(event.error[:300])}"
    return None


def steps_table(state: RunState) -> Table:
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


def print_outcome(state: RunState, json_output: bool) -> NoReturn:
    """The end of a run: its steps and report (or the state as JSON); the exit code says how
    it ended."""
    from trinity.report import render_report

    report = render_report(state)
    if json_output:
        out.print_json(state.model_dump_json())
    else:
        err.print(steps_table(state))
        colour = {StopReason.COMPLETED: "green", StopReason.AWAITING_APPROVAL: "yellow"}.get(
            state.stop_reason or StopReason.ERROR, "red"
        )
        err.print(f"[{colour}]{escape(report)}[/]", highlight=False)
        if state.stop_reason == StopReason.AWAITING_APPROVAL:
            print_waiting(state)
    if state.stop_reason == StopReason.AWAITING_APPROVAL:
        raise typer.Exit(EXIT_AWAITING)
    raise typer.Exit(EXIT_OK if state.stop_reason == StopReason.COMPLETED else EXIT_STOPPED)


def print_waiting(state: RunState) -> None:
    """What waits for a person, and the commands that decide it."""
    pending = state.pending_approval
    if pending is None:
        return
    run = state.run_id
    if pending.question == "input":
        choices = pending.args.get("choices") or []
        one_of = f"\n  one of: {escape(', '.join(map(str, choices)))}" if choices else ""
        err.print(
            f"[bold yellow]awaiting an answer[/]: step {escape(pending.step_id)} asks: "
            f"{escape(pending.reason)}{one_of}"
            f"\n  answer: trinity runs answer {run} TEXT"
            f"\n  decline: trinity runs deny {run} [--note TEXT]",
            highlight=False,
            soft_wrap=True,
        )
        return
    args = json.dumps(pending.args, ensure_ascii=False, default=str)
    if pending.question == "rerun":
        why = "the run stopped during this call (on_interrupted = ask)"
        verbs = "approve (make it again)", "deny (judge it by its checks)"
    else:
        rule = f"rule {pending.rule}" if pending.rule is not None else "the policy's default"
        why = f"asked by {rule}"
        verbs = "approve", "deny"
    err.print(
        f"[bold yellow]awaiting approval[/]: step {escape(pending.step_id)} wants "
        f"{escape(pending.tool)} {escape(args[:500])}\n  {why}: {escape(pending.reason)}"
        f"\n  {verbs[0]}: trinity runs approve {run} [--note TEXT]"
        f"\n  {verbs[1]}: trinity runs deny {run} [--note TEXT]",
        highlight=False,
        soft_wrap=True,
    )
