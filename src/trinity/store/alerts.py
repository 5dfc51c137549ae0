"""Alert states in the store: what each rule last was (``ok`` / ``firing``), since when, and
when it was last told. Several processes evaluate the same rules (servers, a cron
``trinity alerts check``): every change of state is a compare-and-swap, so exactly one of them
makes it, and only that one sends the notification. :class:`AlertRecords` is a base of
:class:`~trinity.store.sqlite.Store`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from trinity.errors import StoreError
from trinity.store.writer import GroupCommitWriter, Statement

_RACED = "another process changed this alert first"


class AlertRecords:
    writer: GroupCommitWriter
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    """(Both provided by the Store.)"""

    def ended_runs(self, since: float) -> list[tuple[str | None, str, float]]:
        """``(stop_reason, status, seconds)`` of the runs that ended at or after ``since``."""
        with self._read() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None
            rows = cursor.execute(
                "SELECT stop_reason, status, finished_at - created_at FROM runs "
                "WHERE finished_at >= ? AND status NOT IN ('running', 'awaiting_approval')",
                (since,),
            ).fetchall()
        return [(reason, status, float(seconds)) for reason, status, seconds in rows]

    def ended_series(self, since: float) -> list[tuple[float, str | None, float, int, float]]:
        """``(finished_at, stop_reason, seconds, tokens, cost_usd)`` of the runs that ended at or
        after ``since``, oldest first (the dashboard's charts)."""
        with self._read() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None
            return cursor.execute(
                "SELECT finished_at, stop_reason, finished_at - created_at, "
                "input_tokens + output_tokens, cost_usd FROM runs WHERE finished_at >= ? "
                "AND status NOT IN ('running', 'awaiting_approval') ORDER BY finished_at",
                (since,),
            ).fetchall()

    def alert_states(self) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM alerts ORDER BY name").fetchall()
        return {row["name"]: dict(row) for row in rows}

    async def alert_transition(
        self,
        name: str,
        to: str,
        value: float | None,
        summary: str,
        now: float,
        *,
        notify: bool,
    ) -> bool:
        """Move the alert from the other state to ``to`` (made ``ok`` if new). ``True`` when
        this call made the change (``notified_at`` is then ``now`` if ``notify``); ``False``
        when it already was ``to``, or another process changed it first."""
        start = "firing" if to == "ok" else "ok"
        statements = [
            Statement(
                "INSERT OR IGNORE INTO alerts (name, state, since) VALUES (?, 'ok', ?)",
                (name, now),
            ),
            Statement(
                "UPDATE alerts SET state=?, since=?, value=?, summary=?, "
                "notified_at = CASE WHEN ? THEN ? ELSE notified_at END "
                "WHERE name=? AND state=?",
                (to, now, value, summary, notify, now, name, start),
                expect_rows=1,
                mismatch=_RACED,
            ),
        ]
        return await self._swap(statements)

    async def alert_retold(self, name: str, now: float, cooldown_s: float) -> bool:
        """Note a firing alert as told again at ``now``, if it was last told ``cooldown_s``
        ago or more (or never): ``True`` when this call did, and must tell."""
        statement = Statement(
            "UPDATE alerts SET notified_at=? WHERE name=? AND state='firing' "
            "AND (notified_at IS NULL OR notified_at <= ?)",
            (now, name, now - cooldown_s),
            expect_rows=1,
            mismatch=_RACED,
        )
        return await self._swap([statement])

    async def alert_measured(self, name: str, value: float | None, summary: str) -> None:
        """The latest value of an alert whose state did not change."""
        await self.writer.write_all(
            [Statement("UPDATE alerts SET value=?, summary=? WHERE name=?", (value, summary, name))]
        )

    async def _swap(self, statements: list[Statement]) -> bool:
        try:
            await self.writer.write_all(statements)
        except StoreError as exc:
            if _RACED in str(exc):
                return False
            raise
        return True
