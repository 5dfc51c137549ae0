"""The performance report (``trinity report``): counts, error rates, p50 / p95 / p99 of run time,
LLM time and tool time, tokens and cost, overall and by model or stop reason, and the slowest
and most failing tools.

It reads the columns a run's row gets when it ends (:mod:`trinity.store.stats`), never the
events, so 100,000 runs take a fraction of a second. Runs still going (or waiting for a
person) are counted, not measured.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from trinity.errors import StoreError
from trinity.observability import nearest_rank
from trinity.store.stats import ReportRows

if TYPE_CHECKING:
    from trinity.store import Store

GroupBy = Literal["model", "tool", "stop_reason"]


class Percentiles(BaseModel):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        """Nearest-rank percentiles (``None`` without values)."""
        if not values:
            return cls()
        ordered = sorted(values)
        return cls(
            p50=nearest_rank(ordered, 0.50),
            p95=nearest_rank(ordered, 0.95),
            p99=nearest_rank(ordered, 0.99),
        )


class GroupStats(BaseModel):
    """Runs of one group (or all of them)."""

    key: str
    runs: int = 0
    ended: int = 0
    """Runs that stopped (not running, not waiting for a person)."""
    completed: int = 0
    failed: int = 0
    """Ended runs that did not complete and were not cancelled."""
    error_rate: float | None = None
    """``failed`` over the ended runs that were not cancelled."""
    run_s: Percentiles = Percentiles()
    llm_s: Percentiles = Percentiles()
    tool_s: Percentiles = Percentiles()
    llm_calls: int = 0
    llm_errors: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class ToolStats(BaseModel):
    tool: str
    runs: int
    calls: int
    errors: int
    error_rate: float
    mean_s: float
    max_s: float
    total_s: float


class PerformanceReport(BaseModel):
    since: float | None
    until: float
    by: GroupBy | None = None
    total: GroupStats
    groups: list[GroupStats] = []
    """By model or stop reason (``by``); by tool, see ``tools``."""
    tools: list[ToolStats] = []
    """Every tool, the most time first."""
    slowest_tools: list[ToolStats] = []
    """The five with the longest mean call."""
    failing_tools: list[ToolStats] = []
    """The five with the most failed calls (those with any)."""
    unrecorded: int = 0
    """Ended runs of the window whose spend is not on their row (they ended before Trinity
    recorded it): their LLM and tool figures count as zero until :func:`backfill_spend`."""


def build_report(
    rows: ReportRows,
    *,
    since: float | None,
    until: float,
    by: GroupBy | None = None,
) -> PerformanceReport:
    """The report from the store's rows (:meth:`Store.report_rows`, grouped ``by``)."""
    times: dict[str, tuple[list[float], list[float], list[float]]] = defaultdict(
        lambda: ([], [], [])
    )
    for key, run_s, llm_s, tool_s in rows.times:
        run, llm, tool = times[key]
        run.append(max(0.0, run_s))
        llm.append(llm_s)
        tool.append(tool_s)
    groups = [_stats(row, times[row[0]]) for row in rows.sums]
    if by in ("model", "stop_reason"):
        total = _stats(
            ("all runs", *(sum(row[i] or 0 for row in rows.sums) for i in range(1, 12))),
            (
                [v for t in times.values() for v in t[0]],
                [v for t in times.values() for v in t[1]],
                [v for t in times.values() for v in t[2]],
            ),
        )
    else:
        total = groups[0] if groups else GroupStats(key="all runs")
        total.key = "all runs"
        groups = []
    tool_stats = [
        ToolStats(
            tool=tool,
            runs=int(runs),
            calls=int(calls),
            errors=int(errors),
            error_rate=errors / calls if calls else 0.0,
            mean_s=seconds / calls if calls else 0.0,
            max_s=float(longest),
            total_s=float(seconds),
        )
        for tool, runs, calls, errors, seconds, longest in rows.tools
    ]
    tool_stats.sort(key=lambda t: t.total_s, reverse=True)
    return PerformanceReport(
        since=since,
        until=until,
        by=by,
        total=total,
        groups=sorted(groups, key=lambda g: -g.runs),
        tools=tool_stats,
        slowest_tools=sorted(tool_stats, key=lambda t: t.mean_s, reverse=True)[:5],
        failing_tools=sorted(
            (t for t in tool_stats if t.errors),
            key=lambda t: (t.errors, t.error_rate),
            reverse=True,
        )[:5],
        unrecorded=rows.unrecorded,
    )


async def backfill_spend(store: Store, batch: int = 200) -> tuple[int, list[str]]:
    """Put on their rows the spend of the ended runs that lack it, read back from their
    journals (a batch of runs per transaction): how many were done, and what could not be
    read (those runs stay as they were, and are tried again next time)."""
    from trinity.state import RunState
    from trinity.store.journal import load_run
    from trinity.store.stats import stats_statements

    done, problems, skipped = 0, list[str](), set[str]()
    while True:
        ids = [i for i in store.runs_without_spend(batch + len(skipped)) if i not in skipped]
        if not ids:
            return done, problems
        statements = []
        for run_id in ids:
            try:
                state, _ = load_run(store, run_id, RunState)
            except StoreError as exc:
                problems.append(str(exc))
                skipped.add(run_id)
                continue
            statements += stats_statements(state)
            done += 1
        if statements:
            await store.writer.write_all(statements)


def _stats(row: tuple[Any, ...], times: tuple[list[float], list[float], list[float]]) -> GroupStats:
    (key, runs, ended, completed, cancelled, tokens_in, tokens_out, cost, llm_calls, llm_errors,
     tool_calls, tool_errors) = (value or 0 for value in row)  # fmt: skip
    failed = ended - completed - cancelled
    judged = ended - cancelled
    return GroupStats(
        key=str(key),
        runs=runs,
        ended=ended,
        completed=completed,
        failed=failed,
        error_rate=failed / judged if judged else None,
        run_s=Percentiles.of(times[0]),
        llm_s=Percentiles.of(times[1]),
        tool_s=Percentiles.of(times[2]),
        llm_calls=llm_calls,
        llm_errors=llm_errors,
        tool_calls=tool_calls,
        tool_errors=tool_errors,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=round(float(cost), 6),
    )
