"""``trinity report``: how the runs went, from the store (counts, error rates, percentiles of
run, LLM and tool time, tokens and cost, the slowest and the most failing tools)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from trinity.cli.common import DbOption, JsonOption, fail, out, session, when

if TYPE_CHECKING:
    from trinity.performance import GroupStats, Percentiles, PerformanceReport, ToolStats
    from trinity.store import Store


def report(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Runs created in the last 24h, 7d, 90m… (default: all)"),
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Group by: model | tool | stop_reason")
    ] = None,
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill",
            help="First read the spend of runs that ended before Trinity recorded it (their "
            "LLM and tool figures are zero until then) from their journals",
        ),
    ] = False,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Performance report of the stored runs: counts, error rates, p50 / p95 / p99 of run time,
    LLM time and tool time, tokens and cost, the slowest and the most failing tools."""
    from trinity.security.tokens import parse_duration

    if by is not None and by not in ("model", "tool", "stop_reason"):
        fail(f"--by must be one of model, tool, stop_reason, got {by!r}")
    group: Literal["model", "tool", "stop_reason"] | None = by  # type: ignore[assignment]
    with session(db) as rt:
        start = time.time() - parse_duration(since) if since else None
        if backfill:
            _backfill(rt.store, quiet=json_output)
        made = rt.performance(since=start, by=group)
    if json_output:
        out.print_json(made.model_dump_json())
        return
    _print(made)


def _backfill(store: Store, *, quiet: bool) -> None:
    import asyncio

    from trinity.performance import backfill_spend

    done, problems = asyncio.run(backfill_spend(store))
    if not quiet:
        out.print(f"Backfilled the spend of {done:,} runs from their journals.", highlight=False)
    for problem in problems[:5]:
        out.print(f"[yellow]not backfilled:[/] {problem}", highlight=False)
    if len(problems) > 5:
        out.print(f"[yellow]… and {len(problems) - 5:,} more not backfilled[/]", highlight=False)


def _print(made: PerformanceReport) -> None:
    total = made.total
    span = f"since {when(made.since)} UTC" if made.since else "all stored runs"
    out.print(f"[bold]Runs[/] ({span}): {_counts(total)}", highlight=False)
    if not total.runs:
        return
    table = Table(title=None, show_edge=False)
    for column in ("", "p50", "p95", "p99"):
        table.add_column(column, justify="right" if column else "left")
    for label, values in (
        ("run time", total.run_s),
        ("LLM time / run", total.llm_s),
        ("tool time / run", total.tool_s),
    ):
        table.add_row(label, *_seconds(values))
    out.print(table)
    out.print(
        f"LLM calls {total.llm_calls:,} ({total.llm_errors:,} failed), tokens "
        f"{total.input_tokens:,} in / {total.output_tokens:,} out, cost ${total.cost_usd:,.4f}; "
        f"tool calls {total.tool_calls:,} ({total.tool_errors:,} failed)",
        highlight=False,
    )
    if made.unrecorded:
        out.print(
            f"[yellow]{made.unrecorded:,} of these runs ended before Trinity recorded what runs "
            "spend: their LLM and tool figures count as zero (trinity report --backfill reads "
            "them from their journals)[/]",
            highlight=False,
        )
    if made.groups:
        _groups(made.by or "", made.groups)
    if made.by == "tool":
        _tools("Tools (most time first)", made.tools)
    else:
        _tools("Slowest tools (mean call)", made.slowest_tools)
        _tools("Most failing tools", made.failing_tools)


def _counts(stats: GroupStats) -> str:
    rate = f"{stats.error_rate:.1%} errors" if stats.error_rate is not None else "no errors"
    still = stats.runs - stats.ended
    going = f", {still:,} still going or waiting" if still else ""
    return (
        f"{stats.runs:,} — {stats.completed:,} completed, {stats.failed:,} failed ({rate}){going}"
    )


def _seconds(values: Percentiles) -> list[str]:
    return [f"{v:.2f}s" if v is not None else "-" for v in (values.p50, values.p95, values.p99)]


def _groups(by: str, groups: list[GroupStats]) -> None:
    table = Table(title=f"By {by.replace('_', ' ')}")
    columns = [by, "runs", "errors", "run p50", "run p95", "run p99", "LLM p95", "tool p95"]
    for column in [*columns, "tokens", "cost"]:
        table.add_column(column, justify="left" if column == by else "right", overflow="fold")
    for group in groups:
        run = _seconds(group.run_s)
        rate = f"{group.error_rate:.1%}" if group.error_rate is not None else "-"
        table.add_row(
            group.key,
            f"{group.runs:,}",
            rate,
            *run,
            _seconds(group.llm_s)[1],
            _seconds(group.tool_s)[1],
            f"{group.input_tokens + group.output_tokens:,}",
            f"${group.cost_usd:,.4f}",
        )
    out.print(table)


def _tools(title: str, tools: list[ToolStats]) -> None:
    if not tools:
        return
    table = Table(title=title)
    for column in ("tool", "runs", "calls", "failed", "error rate", "mean", "max", "total"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    for tool in tools:
        table.add_row(
            tool.tool,
            f"{tool.runs:,}",
            f"{tool.calls:,}",
            f"{tool.errors:,}",
            f"{tool.error_rate:.1%}",
            f"{tool.mean_s:.3f}s",
            f"{tool.max_s:.3f}s",
            f"{tool.total_s:.1f}s",
        )
    out.print(table)
