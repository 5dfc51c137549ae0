"""Group commit: the writes of many runs share one SQLite transaction and one fsync.

SQLite allows one writer at a time, and a durable commit costs an fsync (about 80 µs on this
class of machine, far more on a busy disk). Writes queue up in memory, and the
writer puts everything queued into one transaction and commits it: on the next event-loop
iteration when somebody waits for a write (``write_durable``, ``flush``: an urgent write), else
within :data:`COMMIT_DELAY_S`. While a commit is in flight on the thread, new writes queue for
the next one. With 1,000 concurrent runs
checkpointing every step, a checkpoint costs a few microseconds of loop time.

Where the work runs, and why: each SQLite call releases and re-takes the GIL, and a thread that
wants the GIL back while the event loop is busy waits up to a switch interval (5 ms). So the
statements run on the loop (microseconds each), and so does a COMMIT that somebody awaits while
commits are fast (a moving average under :data:`INLINE_COMMIT_S`, the switch interval); when
nobody awaits it, or the disk gets slow, the commit runs on a thread and the loop goes on. If
another process holds the database's write lock, nothing blocks the loop either: that batch is
written wholly on the thread.

Callers get an ``asyncio.Future`` that resolves once their write is durable (``write_durable``),
or fire and forget (``write``); ``flush()`` waits for everything queued so far. A
:class:`Statement` may say how many rows it must change (a fenced update changes one, or the
writer lost its lease), and :meth:`GroupCommitWriter.write_all` writes several statements all or
none: when one fails, the others of its group are rolled back with it, and no other caller's
write is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from trinity.errors import LeaseLostError, StoreError
from trinity.security.secrets import redact

log = logging.getLogger(__name__)


COMMIT_DELAY_S = 0.05
"""The longest a write nobody waits for stays queued: it rides along with the next urgent
commit, or is committed this long after it was queued. A run's events and journal entries are
such writes (the run waits before each tool call instead), so a step costs one commit, not
several."""

INLINE_COMMIT_S = sys.getswitchinterval()
"""Commits faster than this (moving average) run on the event loop; slower ones on a thread.
A commit shorter than the GIL switch interval costs the loop less than handing it over."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement for :meth:`GroupCommitWriter.write_all`."""

    sql: str
    params: Sequence[Any] = ()
    expect_rows: int | None = None
    """Rows the statement must change; otherwise its group fails with :attr:`mismatch`."""
    mismatch: str = ""
    """The error message when it changes another number of rows."""


@dataclass(slots=True)
class _Write:
    sql: str
    params: Sequence[Any]
    future: asyncio.Future[None] | None
    group: tuple[Statement, ...] | None = None
    """Several statements written all or none (``sql`` is then empty)."""
    urgent: bool = True
    """Somebody waits for it: commit on the next loop iteration."""
    on_error: Callable[[BaseException], None] | None = None
    """Told if the write fails (cheaper than a future, for writes nobody awaits)."""


class GroupCommitWriter:
    """Owns the one writing connection of a store."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        try:
            self._conn = connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {exc}") from None
        self._variable_limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._pending: list[_Write] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._soon = False
        self._timer: asyncio.TimerHandle | None = None
        self._urgent = False
        self._committing = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trinity-commit")
        self._closed = False
        self._commit_seconds = 0.0
        self.batches = 0
        """Transactions committed (for tests and benchmarks)."""
        self.writes = 0

    # -- submitting ---------------------------------------------------------------------------

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a write; it commits with the next batch (within :data:`COMMIT_DELAY_S`).
        Without a running event loop it is written at once."""
        self._submit(_Write(sql, params, None, urgent=False))

    def write_soon(
        self,
        sql: str,
        params: Sequence[Any] = (),
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Queue a write nobody waits for: it commits with the next urgent write, or within
        :data:`COMMIT_DELAY_S`; ``on_error`` is called (on the event loop) if it fails."""
        self._submit(_Write(sql, params, None, urgent=False, on_error=on_error))

    def write_durable(self, sql: str, params: Sequence[Any] = ()) -> asyncio.Future[None]:
        """Queue a write; the returned future resolves once it is committed."""
        future = asyncio.get_running_loop().create_future()
        self._submit(_Write(sql, params, future))
        return future

    def write_tracked(self, sql: str, params: Sequence[Any] = ()) -> asyncio.Future[None] | None:
        """:meth:`write_durable` on an event loop; outside one, written before it returns
        (``None``)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.write(sql, params)
            return None
        return self.write_durable(sql, params)

    def write_all(
        self, statements: Sequence[Statement], *, urgent: bool = True
    ) -> asyncio.Future[None]:
        """Queue statements that commit together or not at all; the future resolves once they
        are committed (or fails with the first one's error, and none of them is)."""
        future = asyncio.get_running_loop().create_future()
        self._submit(_Write("", (), future, tuple(statements), urgent=urgent))
        return future

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed."""
        await self.write_durable("", ())

    def _submit(self, item: _Write) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        # Nothing reaches the disk unredacted: every text value of every write, here.
        if item.group is not None:
            item.group = tuple(
                dataclasses.replace(statement, params=_redacted(statement.params))
                for statement in item.group
            )
        else:
            item.params = _redacted(item.params)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._wait_idle()
            self._pending.append(item)
            self._write_batch_here()
            return
        if loop is not self._loop:
            # A commit begun on another (perhaps closed) loop may still be on the thread.
            self._wait_idle()
            if self._timer is not None:
                self._timer.cancel()
            self._loop, self._timer = loop, None
            self._soon = self._committing = False
        self._pending.append(item)
        self._urgent = self._urgent or item.urgent
        self._schedule()

    # -- batching ------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Plan the next commit: now-ish for an urgent write, later for the rest."""
        loop = self._loop
        if self._committing or not self._pending or loop is None or self._soon:
            return
        if self._urgent:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._soon = True
            loop.call_soon(self._flush)
        elif self._timer is None:
            self._timer = loop.call_later(COMMIT_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._committing or not self._pending or self._loop is None:
            return
        batch, self._pending = self._pending, []
        self._urgent = False
        self._committing = True
        self._idle.clear()
        try:
            job = self._begin(batch)
        except Exception as exc:  # any failure fails the batch's writes, never the writer
            self._rollback_quietly()
            failure: BaseException = store_error(exc, "database write failed")
            job = functools.partial(_all_failed, len(batch), failure)
        inline = isinstance(job, functools.partial) and job.func == self._commit
        if inline and self._fast_disk() and any(item.urgent for item in batch):
            self._settle(batch, self._then_idle(job))
            return
        done = self._loop.run_in_executor(self._thread, functools.partial(self._then_idle, job))
        done.add_done_callback(functools.partial(self._committed, batch))

    def _fast_disk(self) -> bool:
        """Commit on the loop while commits are fast and somebody waits for this one.

        Handing a commit to a thread costs the thread a GIL hand-off, which waits up to a
        switch interval (5 ms) when the loop is busy — far longer than a fast fsync. So a
        commit that somebody awaits runs right here while recent commits took under
        ``INLINE_COMMIT_S``; once the disk is slow, or when nobody waits (fire-and-forget
        checkpoints and events), the thread takes it and the loop goes on.
        """
        return self._commit_seconds < INLINE_COMMIT_S

    def _begin(self, batch: list[_Write]) -> Callable[[], dict[int, BaseException]]:
        """Run the batch's statements here; return what the thread must do to finish it."""
        conn = self._conn
        try:
            # Fail fast instead of blocking the loop if another process is writing.
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return functools.partial(self._execute_and_commit, batch)
        finally:
            conn.execute("PRAGMA busy_timeout=30000")
        try:
            _execute_merged(conn, batch, self._variable_limit)
        except Exception:  # (a value SQLite cannot take raises OverflowError, UnicodeError…)
            self._rollback_quietly()
            return functools.partial(self._one_by_one, batch)
        return functools.partial(self._commit, batch)

    def _rollback_quietly(self) -> None:
        """Roll back whatever is open. SQLite may already have rolled the transaction back
        itself (disk full, I/O error), and a ROLLBACK then fails: that must not break the
        writer."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _then_idle(self, job: Callable[[], dict[int, BaseException]]) -> dict[int, BaseException]:
        try:
            return job()
        finally:
            self._idle.set()

    def _committed(
        self, batch: list[_Write], done: asyncio.Future[dict[int, BaseException]]
    ) -> None:
        errors: dict[int, BaseException]
        if done.cancelled():
            errors = _all_failed(len(batch), StoreError("database commit was cancelled"))
        elif done.exception() is not None:
            errors = _all_failed(len(batch), StoreError(f"commit failed: {done.exception()}"))
        else:
            errors = done.result()
        self._settle(batch, errors)

    def _settle(self, batch: list[_Write], errors: dict[int, BaseException]) -> None:
        self._committing = False
        for index, item in enumerate(batch):
            future = item.future
            error = errors.get(index)
            if error is not None and item.on_error is not None:
                item.on_error(error)
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        self._schedule()

    # -- on the commit thread ------------------------------------------------------------------

    def _commit(self, batch: list[_Write]) -> dict[int, BaseException]:
        started = time.perf_counter()
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback_quietly()
            log.error("database commit failed: %s", exc)
            return dict.fromkeys(range(len(batch)), store_error(exc, "database commit failed"))
        # a moving average, so one slow commit does not move every commit off the loop
        took = time.perf_counter() - started
        self._commit_seconds = 0.8 * self._commit_seconds + 0.2 * took
        self.batches += 1
        self.writes += len(batch)
        return {}

    def _execute_and_commit(self, batch: list[_Write]) -> dict[int, BaseException]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            _execute_merged(self._conn, batch, self._variable_limit)
        except Exception:
            self._rollback_quietly()
            return self._one_by_one(batch)
        return self._commit(batch)

    def _one_by_one(self, batch: list[_Write]) -> dict[int, BaseException]:
        """After a failed batch, find the culprit: each write in its own transaction."""
        errors: dict[int, BaseException] = {}
        for index, item in enumerate(batch):
            if not item.sql and not item.group:
                continue
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                _execute_one(self._conn, item)
                self._conn.execute("COMMIT")
            except Exception as exc:
                self._rollback_quietly()
                log.debug("database write failed: %s (%s)", exc, item.sql[:60])
                errors[index] = store_error(exc, "database write failed")
        self.batches += 1
        self.writes += len(batch)
        return errors

    # -- without a loop ------------------------------------------------------------------------

    def _wait_idle(self) -> None:
        if not self._idle.wait(60):
            raise StoreError("timed out waiting for a database commit")

    def _write_batch_here(self) -> None:
        batch, self._pending = self._pending, []
        errors = self._execute_and_commit(batch)
        if errors:
            raise next(iter(errors.values()))

    def close(self) -> None:
        """Write what is still queued, then close the connection."""
        if self._closed:
            return
        self._wait_idle()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:  # nobody flushed them: write them now (no loop may be left to tell)
            batch, self._pending = self._pending, []
            self._execute_and_commit(batch)
        self._closed = True
        self._thread.shutdown(wait=True)
        self._conn.close()


_VALUES = re.compile(r"^\s*INSERT\b.*\bVALUES\s*(\((?:\s*\?\s*,)*\s*\?\s*\))\s*$", re.I | re.S)
_CHUNKS = (512, 128, 32, 8, 2)


def _redacted(params: Sequence[Any]) -> Sequence[Any]:
    return tuple(redact(value) if isinstance(value, str) else value for value in params)


@functools.lru_cache(maxsize=64)
def _row_group(sql: str) -> str | None:
    """The ``(?, ?, …)`` group of a one-row INSERT, or ``None`` if it cannot be merged."""
    match = _VALUES.match(sql)
    return match.group(1) if match else None


@functools.lru_cache(maxsize=256)
def _multi_row(sql: str, rows: int) -> str:
    return sql + (", " + (_row_group(sql) or "")) * (rows - 1)


def _all_failed(count: int, error: BaseException) -> dict[int, BaseException]:
    return dict.fromkeys(range(count), error)


def store_error(exc: BaseException, doing: str) -> StoreError:
    """The error to hand a caller for a failed write: :class:`LeaseLostError` when the store's
    fencing trigger refused it (another process took over the run), else a :class:`StoreError`
    that says what the database said (disk full, read-only, I/O error…), or what value it could
    not take (a number too large for SQLite, text that is not valid Unicode)."""
    if isinstance(exc, StoreError):
        return exc
    if not isinstance(exc, sqlite3.Error):
        return StoreError(
            f"{doing}: a value the database cannot store ({type(exc).__name__}: {exc})"
        )
    if LEASE_LOST in str(exc):
        return LeaseLostError(
            "another process took over this run (its lease passed to a newer owner); this "
            "process may not write to it any more"
        )
    return StoreError(f"{doing}: {exc}")


LEASE_LOST = "trinity: lease lost"
"""The message of the store's fencing triggers (see :mod:`trinity.store.schema`)."""


def _execute_one(conn: sqlite3.Connection, item: _Write) -> None:
    if item.group is None:
        conn.execute(item.sql, item.params)
        return
    for statement in item.group:
        cursor = conn.execute(statement.sql, statement.params)
        if statement.expect_rows is not None and cursor.rowcount != statement.expect_rows:
            raise (LeaseLostError if "lease" in statement.mismatch else StoreError)(
                statement.mismatch or f"expected {statement.expect_rows} row(s) to change"
            )


def _execute_merged(conn: sqlite3.Connection, writes: list[_Write], variable_limit: int) -> None:
    """Execute writes in order, merging runs of the same one-row INSERT into multi-row ones
    (fewer statements, fewer GIL hand-offs). Chunk sizes are fixed so the connection's statement
    cache stays small."""
    index, total = 0, len(writes)
    while index < total:
        item = writes[index]
        if item.group is not None:
            _execute_one(conn, item)
            index += 1
            continue
        if not item.sql:
            index += 1
            continue
        end = index + 1
        if _row_group(item.sql) is not None:
            while end < total and writes[end].sql == item.sql:
                end += 1
        width = max(1, len(item.params))
        while end - index >= _CHUNKS[-1]:
            size = next((c for c in _CHUNKS if c <= end - index and c * width <= variable_limit), 1)
            if size == 1:
                break
            params = [p for w in writes[index : index + size] for p in w.params]
            conn.execute(_multi_row(item.sql, size), params)
            index += size
        for rest in writes[index:end]:
            conn.execute(rest.sql, rest.params)
        index = end
