"""What the runtime answers about runs: the read half of its API, typed
(:mod:`trinity.views`). The CLI and the HTTP API call these and never the store.

:class:`RunQueries` is a base of :class:`~trinity.runtime.Runtime`: it needs only the store.
Every method reads the database synchronously; a server calls them off its event loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from trinity.errors import NotFoundError
from trinity.performance import GroupBy, PerformanceReport, build_report
from trinity.views import (
    AuditEntry,
    EventRecord,
    RunDetail,
    RunFilter,
    RunPage,
    RunSummary,
    decode_cursor,
    encode_cursor,
)

if TYPE_CHECKING:
    from trinity.store import Store

MAX_PAGE = 500
"""The most runs one page holds."""


class RunQueries:
    @property
    def store(self) -> Store:
        """The database (the Runtime opens it on first use)."""
        raise NotImplementedError

    def find_run(self, run_id: str) -> RunSummary:
        """The run with this id, or the only one whose id starts with it (4 characters or
        more, as git does); :class:`NotFoundError` otherwise."""
        return _summary(self._row(run_id))

    def get_run(self, run_id: str) -> RunDetail:
        """The run with its report and its state, rebuilt from its journal."""
        from trinity.state import RunState
        from trinity.store.journal import load_run

        row = self._row(run_id)
        state, _ = load_run(self.store, row["id"], RunState)
        return RunDetail(**_summary(row).model_dump(), report=row["report"] or "", state=state)

    def list_runs(
        self, where: RunFilter | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> RunPage:
        """Runs newest first, matching ``where``; pass ``next_cursor`` back for the next page."""
        where = where or RunFilter()
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.store.list_runs(
            limit + 1,
            status=where.status,
            stop_reason=where.stop_reason,
            since=where.since,
            until=where.until,
            text=where.text,
            before=decode_cursor(cursor) if cursor else None,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more and rows else None
        return RunPage(
            runs=[_summary(row) for row in rows],
            next_cursor=encode_cursor(last["created_at"], last["id"]) if last else None,
        )

    def events(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """The run's events after ``after_seq`` (0: from the first), in order."""
        full = self._row(run_id)["id"]
        return [
            EventRecord(run_id=full, **event)
            for event in self.store.list_events(full, after_seq, limit)
        ]

    def events_of_all_runs(self, after: tuple[str, int], limit: int = 1000) -> list[EventRecord]:
        """Events of every run written after event ``after`` = ``(run_id, seq)``, in order."""
        return [
            EventRecord(**event)
            for event in self.store.events_of_all_runs_after(after[0], after[1], limit)
        ]

    def audit(self, run_id: str) -> list[AuditEntry]:
        """Every permission decision of the run, oldest first."""
        full = self._row(run_id)["id"]
        return [AuditEntry(**entry) for entry in self.store.list_audit(full)]

    def performance(
        self, since: float | None = None, until: float | None = None, by: GroupBy | None = None
    ) -> PerformanceReport:
        """The performance report of the runs created in [since, until) (default: all, up to
        now), overall and grouped ``by`` model, tool or stop reason."""
        end = until if until is not None else time.time()
        rows = self.store.report_rows(since, end, by)
        return build_report(rows, since=since, until=end, by=by)

    def _row(self, run_id: str) -> dict[str, Any]:
        row = self.store.get_run(run_id)
        if row is None:
            raise NotFoundError(f"no run with id {run_id!r} (see `trinity runs list`)")
        return row


def _summary(row: dict[str, Any]) -> RunSummary:
    from trinity.store.lease import may_take_over

    status = row["status"]
    gone = status == "running" and may_take_over(row["lease_owner"], row["lease_expires_at"])[0]
    return RunSummary(
        id=row["id"],
        task=row["task"],
        plan_file=row["plan_file"],
        model=row["model"],
        workspace=row["workspace"],
        status=status,
        shown_status="interrupted" if gone else status,
        stop_reason=row["stop_reason"],
        stop_detail=row["stop_detail"] or "",
        steps=row["steps"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        cancel_requested=row.get("cancel_requested_at") is not None,
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )
