"""What a run spent, written with its row when it ends (schema 6): LLM calls, time and cost,
tool calls, errors and time, and its tool calls summed per tool (``run_tools``). ``trinity
report`` reads these columns, so a report over 100,000 runs never opens their events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from trinity.state import RunState
from trinity.store.writer import Statement


class ReportRows(NamedTuple):
    """The store's answer for ``trinity report`` (:meth:`Records.report_rows`)."""

    sums: list[tuple[Any, ...]]
    """Per group: key, runs, ended, completed, cancelled, input tokens, output tokens, cost,
    LLM calls, LLM errors, tool calls, tool errors."""
    times: list[tuple[Any, ...]]
    """Per ended run: key, run seconds, LLM seconds, tool seconds."""
    tools: list[tuple[Any, ...]]
    """Per tool: name, runs, calls, errors, seconds, longest call."""
    unrecorded: int = 0
    """Ended runs without their spend on their row (they ended before schema 6)."""


@dataclass
class ToolTotal:
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0


def tool_totals(state: RunState) -> dict[str, ToolTotal]:
    """The run's tool calls per tool, over every plan it had (refused calls were not made and
    are not counted; a call cut off by a crash counts as an error)."""
    totals: dict[str, ToolTotal] = {}
    for plan in [*state.plan_history, *([state.plan] if state.plan else [])]:
        for step in plan.steps:
            for attempt in step.attempts:
                if attempt.denied or attempt.result is None:
                    continue
                total = totals.setdefault(step.tool, ToolTotal())
                seconds = max(0.0, attempt.result.duration_s)
                total.calls += 1
                total.errors += not attempt.result.ok
                total.seconds += seconds
                total.max_seconds = max(total.max_seconds, seconds)
    return totals


def stats_statements(state: RunState) -> list[Statement]:
    """The run's spend on its row, and its ``run_tools`` rows (replacing earlier ones: a resumed
    run ends again with its whole history)."""
    totals = tool_totals(state)
    usage = state.usage
    statements = [
        Statement(
            "UPDATE runs SET llm_calls=?, llm_errors=?, llm_seconds=?, cost_usd=?, tool_calls=?, "
            "tool_errors=?, tool_seconds=?, spend_recorded=1 WHERE id=?",
            (
                usage.llm_calls,
                usage.llm_errors,
                round(usage.llm_seconds, 6),
                usage.cost_usd,
                sum(t.calls for t in totals.values()),
                sum(t.errors for t in totals.values()),
                round(sum(t.seconds for t in totals.values()), 6),
                state.run_id,
            ),
        ),
        Statement("DELETE FROM run_tools WHERE run_id=?", (state.run_id,)),
    ]
    statements += [
        Statement(
            "INSERT INTO run_tools (run_id, tool, calls, errors, seconds, max_seconds, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                state.run_id,
                tool,
                t.calls,
                t.errors,
                round(t.seconds, 6),
                round(t.max_seconds, 6),
                state.started_at,
            ),
        )
        for tool, t in totals.items()
    ]
    return statements
