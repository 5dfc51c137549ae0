"""The store's records beside the run journal: the permission audit log and people's approvals,
cancel requests from other processes, and lessons (with FTS5 search).

:class:`Records` is a base of :class:`~trinity.store.sqlite.Store`; it only needs the store's
writer and its reading connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal

from trinity.errors import StoreError
from trinity.state import Lesson
from trinity.store.stats import ReportRows
from trinity.store.writer import GroupCommitWriter, Statement

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it of on or that the this to with "
    "then than file files".split()
)
_AUDIT_INSERT = (
    "INSERT INTO audit (run_id, step_id, tool, args, decision, rule, reason, actor, ts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _fts_query(text: str, max_terms: int = 24) -> str:
    """An FTS5 query matching any significant word of ``text`` (quoted: no syntax injection)."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOPWORDS or word in terms:
            continue
        terms.append(word)
        if len(terms) == max_terms:
            break
    return " OR ".join(f'"{term}"' for term in terms)


class Records:
    writer: GroupCommitWriter
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    """(Both provided by the Store.)"""

    # -- permissions: audit log and approvals --------------------------------------------------

    def add_audit(
        self,
        run_id: str,
        step_id: str | None,
        tool: str,
        args: dict[str, Any],
        decision: str,
        rule: int | None,
        reason: str,
        actor: str,
    ) -> asyncio.Future[None] | None:
        """Record a permission decision; the future resolves once it is on disk (a caller
        that is about to make the call it allows waits for it). Outside an event loop it is
        written before this returns."""
        return self.writer.write_tracked(
            _AUDIT_INSERT,
            _audit_row(run_id, step_id, tool, args, decision, rule, reason, actor),
        )

    def list_audit(self, run_id: str) -> list[dict[str, Any]]:
        """A run's audit rows, oldest first, with ``args`` parsed."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT run_id, step_id, tool, args, decision, rule, reason, actor, ts "
                "FROM audit WHERE run_id=? ORDER BY id",
                (run_id,),
            ).fetchall()
        return [{**dict(row), "args": json.loads(row["args"])} for row in rows]

    async def set_approval(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        decision: Literal["approve", "deny", "answer"],
        actor: str,
        note: str | None = None,
        *,
        revision: int = 0,
        audit: tuple[str, dict[str, Any], int | None] | None = None,
        reason: str = "",
    ) -> bool:
        """Record a person's decision on one pending call, durably, and with it (in the same
        transaction) its audit row when ``audit`` gives ``(tool, args, rule)``: its reason is
        ``reason`` (what the person was asked), then the note. Returns
        ``False`` (and changes nothing) when that call already has a decision: the first one
        stands."""
        statements = [
            Statement(
                "INSERT INTO approvals (run_id, revision, step_id, attempt, decision, actor, ts, "
                "note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, revision, step_id, attempt, decision, actor, time.time(), note),
            )
        ]
        if audit is not None:
            tool, args, rule = audit
            said = "; ".join(part for part in (reason, note or "") if part)
            row = _audit_row(run_id, step_id, tool, args, decision, rule, said, actor)
            statements.append(Statement(_AUDIT_INSERT, row))
        try:
            await self.writer.write_all(statements)
        except StoreError as exc:
            if "UNIQUE" not in str(exc):
                raise
            return False
        return True

    def get_approval(
        self, run_id: str, step_id: str, attempt: int, *, revision: int = 0
    ) -> dict[str, Any] | None:
        """The decision recorded for one call, or ``None``."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM approvals WHERE run_id=? AND revision=? AND step_id=? AND attempt=?",
                (run_id, revision, step_id, attempt),
            ).fetchone()
        return dict(row) if row else None

    # -- gauges ----------------------------------------------------------------------------------

    def run_gauges(self) -> tuple[dict[str, int], dict[str, float]]:
        """Runs by status, and since when the oldest one of each live status has been so
        (``running``: created; ``awaiting_approval``: the person asked), for the metrics."""
        with self._read() as conn:
            counts = {
                str(status): int(count)
                for status, count in conn.execute(
                    "SELECT status, count(*) FROM runs GROUP BY status"
                )
            }
            oldest: dict[str, float] = {}
            running = conn.execute(
                "SELECT min(created_at) FROM runs WHERE status = 'running'"
            ).fetchone()[0]
            if running is not None:
                oldest["running"] = float(running)
            asked = conn.execute(
                "SELECT min(e.ts) FROM runs r JOIN events e ON e.run_id = r.id "
                "WHERE r.status = 'awaiting_approval' AND e.kind = 'approval_requested' "
                "AND e.seq = (SELECT max(seq) FROM events WHERE run_id = r.id "
                "AND kind = 'approval_requested')"
            ).fetchone()[0]
            if asked is not None:
                oldest["awaiting_approval"] = float(asked)
        return counts, oldest

    def report_rows(self, since: float | None, until: float, group: str | None) -> ReportRows:
        """What ``trinity report`` needs of the runs created in [since, until)
        (:func:`trinity.performance.build_report`): sums per group (``model``, ``stop_reason``
        or ``None`` for one group), the three durations of every ended run, and the tool calls
        summed per tool. Plain tuples, aggregated by SQLite: 100,000 runs in about 0.2 s."""
        key = _REPORT_GROUPS[group]
        window = "created_at >= ? AND created_at < ?"
        low = since if since is not None else float("-inf")
        # All of history: a plain scan (0.1 s for 100,000 runs) beats looking each row up
        # through the time index (0.25 s); a window (--since 24h) is what the index is for.
        runs = "runs" if since is not None else "runs NOT INDEXED"
        with self._read() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None  # tuples: no sqlite3.Row per run
            sums = cursor.execute(
                f"SELECT {key}, count(*), sum(status NOT IN ('running', 'awaiting_approval')), "
                "sum(stop_reason = 'completed'), sum(stop_reason = 'cancelled'), "
                "sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(llm_calls), "
                "sum(llm_errors), sum(tool_calls), sum(tool_errors) "
                f"FROM {runs} WHERE {window} GROUP BY 1",
                (low, until),
            ).fetchall()
            times = cursor.execute(
                f"SELECT {key}, finished_at - created_at, llm_seconds, tool_seconds FROM {runs} "
                f"WHERE {window} AND finished_at IS NOT NULL "
                "AND status NOT IN ('running', 'awaiting_approval')",
                (low, until),
            ).fetchall()
            tools = cursor.execute(
                "SELECT tool, count(*), sum(calls), sum(errors), sum(seconds), max(max_seconds) "
                f"FROM run_tools INDEXED BY run_tools_report WHERE {window} GROUP BY tool",
                (low, until),
            ).fetchall()
            unrecorded = cursor.execute(
                f"SELECT count(*) FROM runs INDEXED BY runs_spend_missing WHERE {window} "
                "AND spend_recorded = 0 AND finished_at IS NOT NULL",
                (low, until),
            ).fetchone()[0]
        return ReportRows(sums, times, tools, unrecorded)

    def runs_without_spend(self, limit: int = 500) -> list[str]:
        """Ended runs whose spend is not on their row (they ended before schema 6), oldest
        first: what :func:`trinity.performance.backfill_spend` reads from their journals."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id FROM runs INDEXED BY runs_spend_missing WHERE spend_recorded = 0 "
                "AND finished_at IS NOT NULL ORDER BY created_at LIMIT ?",
                (limit,),
            ).fetchall()
        return [row[0] for row in rows]

    # -- cancel requests -----------------------------------------------------------------------

    def request_cancel(self, run_id: str, grace_s: float) -> None:
        """Ask the process running ``run_id`` to stop it (see :meth:`Runtime._watch_cancel`)."""
        self.writer.write(
            "UPDATE runs SET cancel_requested_at=?, cancel_grace_s=? WHERE id=?",
            (time.time(), grace_s, run_id),
        )

    def cancel_request(self, run_id: str) -> tuple[float, float] | None:
        """``(requested_at, grace_s)`` when somebody asked to cancel the run, else ``None``."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT cancel_requested_at, cancel_grace_s FROM runs WHERE id=?", (run_id,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return float(row[0]), float(row[1] or 0.0)

    # -- lessons -------------------------------------------------------------------------------

    async def add_lessons(self, lessons: list[Lesson]) -> None:
        for lesson in lessons:
            self.writer.write(
                "INSERT INTO lessons (run_id, task, outcome, text, tags, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    lesson.run_id,
                    lesson.task,
                    lesson.outcome,
                    lesson.text,
                    " ".join(lesson.tags),
                    lesson.created_at,
                ),
            )
        await self.writer.flush()

    def search_lessons(self, text: str, limit: int = 5) -> list[Lesson]:
        query = _fts_query(text)
        if not query:
            return []
        with self._read() as conn:
            rows = conn.execute(
                "SELECT l.* FROM lessons_fts f JOIN lessons l ON l.id = f.rowid "
                "WHERE lessons_fts MATCH ? ORDER BY bm25(lessons_fts) LIMIT ?",
                (query, limit),
            ).fetchall()
        return [
            Lesson(
                id=row["id"],
                run_id=row["run_id"],
                task=row["task"],
                outcome=row["outcome"],
                text=row["text"],
                tags=row["tags"].split(),
                created_at=row["created_at"],
            )
            for row in rows
        ]


def _audit_row(
    run_id: str,
    step_id: str | None,
    tool: str,
    args: dict[str, Any],
    decision: str,
    rule: int | None,
    reason: str,
    actor: str,
) -> tuple[Any, ...]:
    return (
        run_id,
        step_id,
        tool,
        json.dumps(args, default=str),
        decision,
        rule,
        reason,
        actor,
        time.time(),
    )


_REPORT_GROUPS = {
    None: "''",
    "model": "coalesce(model, 'plan file (no model)')",
    "stop_reason": "coalesce(stop_reason, status)",
    "tool": "''",  # by tool: the tools' own rows
}
