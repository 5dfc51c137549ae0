"""SQLite persistence: runs and their journals (events, snapshots), leases, and the records in
:mod:`trinity.store.records` (audit log, approvals, cancel requests, lessons).

A run is an append-only journal: its events, in order, with ``checkpoint`` events that say what
each graph step changed (:mod:`trinity.store.journal` writes and reads them), plus a compact
snapshot of the whole state now and then. Nothing in the journal is ever overwritten: an event
number that is already taken is an error, not a replacement, and every journal write carries the
writer's lease epoch, which triggers check (:mod:`trinity.store.lease`).

WAL mode lets readers (CLI, dashboard) read while a run writes. Every write goes through one
:class:`GroupCommitWriter`; reads use a connection per thread. The schema is versioned with
``PRAGMA user_version`` and migrated forward on open (:mod:`trinity.store.schema`).

A new database is made under a temporary name, readable by its owner only, and moved into place
once its schema is written, so a crash never leaves an empty file where a database should be;
and an empty file found there is refused rather than taken for a new database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from trinity.errors import StoreError
from trinity.events import ENVELOPE, JOURNAL_KINDS, EventBase
from trinity.state import RunState
from trinity.store.alerts import AlertRecords
from trinity.store.lease import LEASE_TTL_S, Owner
from trinity.store.records import Records, _fts_query
from trinity.store.schema import JOURNAL_VERSION, MIGRATIONS
from trinity.store.stats import stats_statements
from trinity.store.tokens import TokenRecords
from trinity.store.writer import GroupCommitWriter, Statement

DUPLICATE_KEY = "a run with this idempotency key exists"

__all__ = ["MIGRATIONS", "Store", "_fts_query", "default_db_path", "path_from_url"]

log = logging.getLogger(__name__)

Synchronous = Literal["OFF", "NORMAL", "FULL"]

_EVENT_INSERT = (
    "INSERT INTO events (run_id, seq, epoch, ts, kind, node, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_LEASE_LOST = "lease lost: another process took this run over"
_LEFT_OUT: dict[bool, set[str]] = {False: {*ENVELOPE, "changes"}, True: set(ENVELOPE)}
"""What an event's data leaves out: the envelope (its own columns), and the changes of an
entry that changed nothing (most node starts)."""


def default_db_path() -> Path:
    return Path.home() / ".trinity" / "trinity.db"


def path_from_url(url: str) -> Path:
    """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (as SQLAlchemy writes
    them) or a bare path; ``~`` is expanded."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).expanduser()
    if url.startswith(("postgresql:", "postgres:")):
        raise StoreError(
            "PostgreSQL is not supported by this version yet; use a SQLite path or sqlite:/// URL"
        )
    if "://" in url:
        raise StoreError(f"unsupported database URL {url!r}: expected sqlite:///path")
    return Path(url).expanduser()


def schema_version(path: Path) -> int:
    """The schema version of a database file, read without changing it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def check_not_empty(path: Path) -> None:
    """Refuse an empty file where a database should be: SQLite would silently take it for a
    new, empty database, and every run in it would seem gone."""
    if path.exists() and path.stat().st_size == 0:
        wal = path.with_name(path.name + "-wal")
        if not (wal.exists() and wal.stat().st_size > 0):
            raise StoreError(
                f"{path} is empty (0 bytes), not a Trinity database: it was truncated, or is "
                "not the file you meant. Restore it from a backup, or remove it to start a new "
                "database"
            )


class Store(Records, TokenRecords, AlertRecords):
    """All persistence of one Trinity installation."""

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = Path(path).expanduser()
        self.synchronous = synchronous
        try:
            # A folder made here is this user's alone (0700); one that exists is left as it is.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the database folder {self.path.parent}: {exc}"
            ) from None
        check_not_empty(self.path)
        if not self.path.exists():
            self._create()
        self._migrate()
        self.writer = GroupCommitWriter(self._connect)
        self._local = threading.local()

    @classmethod
    def open(cls, url: str | None, *, synchronous: Synchronous = "FULL") -> Store:
        return cls(path_from_url(url) if url else default_db_path(), synchronous=synchronous)

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, path: Path | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path or self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def _create(self) -> None:
        """Make a new database: schema written under a temporary name (mode 0600), then moved
        into place. A process that lost the race uses the winner's database."""
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        os.close(fd)  # mkstemp makes it 0600; SQLite keeps the mode
        try:
            conn = self._connect(Path(temp))
            try:
                _apply_migrations(conn, 0)
            finally:
                conn.close()
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temp, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot create the database {self.path}: {exc}") from None
        finally:
            for leftover in (temp, f"{temp}-wal", f"{temp}-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)

    def _migrate(self) -> None:
        try:
            conn = self._connect()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the database {self.path}: {_why(self.path, exc)}"
            ) from None
        try:
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Trinity "
                    f"({len(MIGRATIONS)}): upgrade trinity-runtime"
                )
            _apply_migrations(conn, version)
            if 0 < version < JOURNAL_VERSION:
                # The checkpoints table it dropped may have held most of the file.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("VACUUM")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot migrate the database {self.path}: {exc}") from None
        finally:
            conn.close()

    def check_integrity(self, *, full: bool = False) -> list[str]:
        """SQLite's ``quick_check`` (``integrity_check`` with ``full``): the problems it finds,
        or an empty list."""
        pragma = "integrity_check" if full else "quick_check"
        try:
            with self._read() as conn:
                rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        except StoreError as exc:
            return [str(exc)]
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else found

    def close(self) -> None:
        self.writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._reader()
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from None

    # -- runs ----------------------------------------------------------------------------------

    def create_run(
        self,
        state: RunState,
        owner: Owner,
        snapshot: str,
        *,
        idempotency_key: str | None = None,
    ) -> asyncio.Future[None]:
        """Insert a run, held by ``owner`` (lease epoch 1), with its first snapshot, in one
        durable transaction: once the future resolves the run can always be resumed. With an
        ``idempotency_key`` that a run already has, nothing is written and the future fails
        with a :class:`StoreError` saying :data:`DUPLICATE_KEY`."""
        expires = time.time() + LEASE_TTL_S
        return self.writer.write_all(
            [
                Statement(
                    "INSERT INTO runs (id, task, plan_file, model, workspace, status, created_at, "
                    "lease_owner, lease_expires_at, lease_epoch, idempotency_key) "
                    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ? "
                    "WHERE ? IS NULL OR NOT EXISTS "
                    "(SELECT 1 FROM runs WHERE idempotency_key = ?)",
                    (
                        state.run_id,
                        state.task.text,
                        state.task.plan_file,
                        state.model,
                        state.task.workspace,
                        state.status.value,
                        state.started_at,
                        owner.to_json(),
                        expires,
                        idempotency_key,
                        idempotency_key,
                        idempotency_key,
                    ),
                    expect_rows=1,
                    mismatch=DUPLICATE_KEY,
                ),
                *self.snapshot_statements(state.run_id, 1, 0, snapshot),
            ]
        )

    def run_with_key(self, idempotency_key: str) -> str | None:
        """The id of the run started with this idempotency key, if any."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT id FROM runs WHERE idempotency_key=?", (idempotency_key,)
            ).fetchone()
        return str(row[0]) if row else None

    def finish_statements(self, state: RunState, report: str, epoch: int) -> list[Statement]:
        """A run's outcome and the release of its lease (fenced: nothing is written unless this
        process still holds the lease)."""
        return [
            Statement(
                "UPDATE runs SET status=?, stop_reason=?, stop_detail=?, steps=?, input_tokens=?, "
                "output_tokens=?, report=?, finished_at=?, model=?, lease_owner=NULL, "
                "lease_expires_at=NULL WHERE id=? AND lease_epoch=?",
                (
                    state.status.value,
                    state.stop_reason.value if state.stop_reason else None,
                    state.stop_detail,
                    state.step,
                    state.usage.input_tokens,
                    state.usage.output_tokens,
                    report,
                    state.finished_at or time.time(),
                    state.model,
                    state.run_id,
                    epoch,
                ),
                expect_rows=1,
                mismatch=_LEASE_LOST,
            ),
            *stats_statements(state),  # after the fenced update: written only if it was
        ]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None and len(run_id) >= 4:  # allow a unique prefix, as git does
                rows = conn.execute(
                    "SELECT * FROM runs WHERE id LIKE ? LIMIT 2", (run_id + "%",)
                ).fetchall()
                row = rows[0] if len(rows) == 1 else None
        return dict(row) if row else None

    def list_runs(
        self,
        limit: int = 20,
        *,
        status: list[str] | None = None,
        stop_reason: list[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Runs newest first (ties by id), those matching every filter given; ``before``
        ``(created_at, id)`` continues a listing after that run (keyset pagination)."""
        where: list[str] = []
        params: list[Any] = []
        for column, values in (("status", status), ("stop_reason", stop_reason)):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                params += values
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("created_at < ?")
            params.append(until)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("task LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [before[0], before[0], before[1]]
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._read() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [dict(row) for row in rows]

    def count(self, table: Literal["runs", "events", "snapshots", "lessons", "audit"]) -> int:
        with self._read() as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    # -- leases --------------------------------------------------------------------------------

    def take_lease(self, run_id: str, owner: Owner, epoch: int) -> asyncio.Future[None]:
        """Become the run's executor if its lease epoch is still ``epoch`` (compare and swap:
        of two processes that read the same epoch, one wins); the new epoch is ``epoch + 1``.
        Fails with :class:`~trinity.errors.LeaseLostError` for the loser."""
        return self.writer.write_all(
            [
                Statement(
                    "UPDATE runs SET lease_owner=?, lease_expires_at=?, lease_epoch=lease_epoch+1 "
                    "WHERE id=? AND lease_epoch=?",
                    (owner.to_json(), time.time() + LEASE_TTL_S, run_id, epoch),
                    expect_rows=1,
                    mismatch="lease lost: another process took this run first",
                )
            ]
        )

    def renew_lease(self, run_id: str, epoch: int) -> asyncio.Future[None]:
        return self.writer.write_all([self._lease_update(run_id, epoch, time.time() + LEASE_TTL_S)])

    def release_lease(self, run_id: str, epoch: int) -> asyncio.Future[None]:
        return self.writer.write_all([self._lease_update(run_id, epoch, None)])

    def _lease_update(self, run_id: str, epoch: int, expires: float | None) -> Statement:
        owner = "lease_owner" if expires is not None else "NULL"
        return Statement(
            f"UPDATE runs SET lease_owner={owner}, lease_expires_at=? WHERE id=? AND lease_epoch=?",
            (expires, run_id, epoch),
            expect_rows=1,
            mismatch=_LEASE_LOST,
        )

    def mark_running(self, run_id: str, epoch: int) -> asyncio.Future[None]:
        """A resumed or approved run is going again: ``running``, no stop, no cancel request."""
        return self.writer.write_all(
            [
                Statement(
                    "UPDATE runs SET status='running', stop_reason=NULL, stop_detail='', "
                    "finished_at=NULL, cancel_requested_at=NULL, cancel_grace_s=NULL "
                    "WHERE id=? AND lease_epoch=?",
                    (run_id, epoch),
                    expect_rows=1,
                    mismatch=_LEASE_LOST,
                )
            ]
        )

    # -- the journal: events and snapshots -----------------------------------------------------

    EVENT_INSERT = _EVENT_INSERT
    """The statement an event row is written with (:meth:`event_row` gives its values)."""

    @staticmethod
    def event_row(event: EventBase, epoch: int) -> tuple[Any, ...]:
        return (
            event.run_id,
            event.seq,
            epoch,
            event.ts,
            event.kind,
            event.node,
            event.model_dump_json(exclude=_LEFT_OUT[bool(getattr(event, "changes", ()))]),
        )

    @classmethod
    def event_statement(cls, event: EventBase, epoch: int) -> Statement:
        return Statement(_EVENT_INSERT, cls.event_row(event, epoch))

    def append_event(self, event: EventBase, epoch: int) -> asyncio.Future[None] | None:
        """Queue an event for the next group commit; the future tells whether it landed
        (``None`` when no event loop runs: it was written before this returned)."""
        statement = self.event_statement(event, epoch)
        return self.writer.write_tracked(statement.sql, statement.params)

    def last_event_seq(self, run_id: str) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT max(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()
        return int(row[0] or 0)

    def list_events(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A run's events after ``after_seq``, in order, at most ``limit`` of them."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT seq, ts, kind, node, data FROM events WHERE run_id=? AND seq>? "
                "ORDER BY seq LIMIT ?",
                (run_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
        return [{**dict(row), "data": json.loads(row["data"])} for row in rows]

    def events_of_all_runs_after(
        self, run_id: str, seq: int, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Events of every run written after event ``seq`` of ``run_id``, in the order they
        were written (an SSE stream of all runs resuming); none when that event is unknown."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT run_id, seq, ts, kind, node, data FROM events WHERE rowid > "
                "(SELECT rowid FROM events WHERE run_id=? AND seq=?) ORDER BY rowid LIMIT ?",
                (run_id, seq, limit),
            ).fetchall()
        return [{**dict(row), "data": json.loads(row["data"])} for row in rows]

    def changes_after(self, run_id: str, seq: int) -> Iterator[list[Any]]:
        """The state changes a run's journal entries after event ``seq`` carry, in order."""
        kinds = ", ".join(f"'{kind}'" for kind in sorted(JOURNAL_KINDS))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT data FROM events WHERE run_id=? AND seq>? AND kind IN ({kinds}) "
                "ORDER BY seq",
                (run_id, seq),
            )
            for (data,) in rows:
                changes = json.loads(data).get("changes")
                if changes:
                    yield changes

    def snapshot_statements(
        self, run_id: str, epoch: int, seq: int, state_json: str
    ) -> list[Statement]:
        """A new snapshot (the state after event ``seq``), and the end of the older ones."""
        return [
            Statement(
                "INSERT INTO snapshots (run_id, seq, epoch, created_at, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, seq, epoch, time.time(), state_json),
            ),
            Statement("DELETE FROM snapshots WHERE run_id=? AND seq<?", (run_id, seq)),
        ]

    def latest_snapshot(self, run_id: str) -> tuple[int, str] | None:
        """``(seq, state JSON)`` of a run's newest snapshot."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT seq, state FROM snapshots WHERE run_id=? ORDER BY seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
        return (int(row[0]), str(row[1])) if row else None


def _apply_migrations(conn: sqlite3.Connection, version: int) -> None:
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")


def _why(path: Path, exc: sqlite3.Error) -> str:
    """What SQLite said, and what it means when it is not plain."""
    text = str(exc)
    try:
        read_only = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(path.parent, os.W_OK):
        return (
            f"{text}: it is on read-only storage (or its folder is not writable), and SQLite "
            "must write its -wal and -shm files beside it"
        )
    if "malformed" in text:
        return f"{text}: the file is damaged (`trinity doctor` says more)"
    return text
