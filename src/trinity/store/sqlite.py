"""SQLite persistence: runs, steps, events, checkpoints, lessons (with FTS5 search), the
permission audit log and approvals.

WAL mode lets readers (CLI, dashboard) read while a run writes. Every write goes through one
:class:`GroupCommitWriter`; reads use a connection per thread. The schema is versioned with
``PRAGMA user_version`` and migrated forward on open.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from trinity.errors import StoreError
from trinity.state import Lesson, RunState
from trinity.store.writer import GroupCommitWriter

Synchronous = Literal["OFF", "NORMAL", "FULL"]

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        plan_file TEXT,
        model TEXT,
        workspace TEXT NOT NULL,
        status TEXT NOT NULL,
        stop_reason TEXT,
        stop_detail TEXT NOT NULL DEFAULT '',
        steps INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        report TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        revision INTEGER NOT NULL,
        position INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        verdict TEXT,
        PRIMARY KEY (run_id, revision, position)
    ) WITHOUT ROWID;
    -- events and checkpoints carry kilobytes of JSON: rowid tables with a separate key index
    -- keep their B-trees small (WITHOUT ROWID suits only small rows)
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        node TEXT,
        data TEXT NOT NULL,
        UNIQUE (run_id, seq)
    );
    CREATE TABLE checkpoints (
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        next_node TEXT,
        created_at REAL NOT NULL,
        state TEXT NOT NULL,
        UNIQUE (run_id, step)
    );
    CREATE TABLE lessons (
        id INTEGER PRIMARY KEY,
        run_id TEXT,
        task TEXT NOT NULL,
        outcome TEXT NOT NULL,
        text TEXT NOT NULL,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE VIRTUAL TABLE lessons_fts USING fts5(
        task, text, tags, content='lessons', content_rowid='id'
    );
    CREATE TRIGGER lessons_ai AFTER INSERT ON lessons BEGIN
        INSERT INTO lessons_fts(rowid, task, text, tags)
        VALUES (new.id, new.task, new.text, new.tags);
    END;
    CREATE TRIGGER lessons_ad AFTER DELETE ON lessons BEGIN
        INSERT INTO lessons_fts(lessons_fts, rowid, task, text, tags)
        VALUES ('delete', old.id, old.task, old.text, old.tags);
    END;
    """,
    # 2: the permission audit log and people's approvals
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        step_id TEXT,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        decision TEXT NOT NULL,  -- allow | ask | deny (actor 'policy'); approve | deny (a person)
        rule INTEGER,            -- the deciding rule's number (from 1); NULL: the default
        reason TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL,
        ts REAL NOT NULL
    );
    CREATE INDEX audit_run ON audit(run_id, id);
    CREATE TABLE approvals (
        run_id TEXT NOT NULL,
        revision INTEGER NOT NULL,  -- plan revision: a replanned step may reuse an id
        step_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        decision TEXT NOT NULL,     -- approve | deny
        actor TEXT NOT NULL,
        ts REAL NOT NULL,
        note TEXT,
        PRIMARY KEY (run_id, revision, step_id, attempt)
    ) WITHOUT ROWID;
    """,
    # 3: cancel requests from another process (``trinity runs cancel``)
    """
    ALTER TABLE runs ADD COLUMN cancel_requested_at REAL;
    ALTER TABLE runs ADD COLUMN cancel_grace_s REAL;
    """,
]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it of on or that the this to with "
    "then than file files".split()
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


class Store:
    """All persistence of one Trinity installation."""

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = Path(path).expanduser()
        self.synchronous = synchronous
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the database folder {self.path.parent}: {exc}"
            ) from None
        self._migrate()
        self.writer = GroupCommitWriter(self._connect)
        self._local = threading.local()

    @classmethod
    def open(cls, url: str | None, *, synchronous: Synchronous = "FULL") -> Store:
        return cls(path_from_url(url) if url else default_db_path(), synchronous=synchronous)

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
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

    def _migrate(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Trinity "
                    f"({len(MIGRATIONS)}): upgrade trinity-runtime"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot migrate the database {self.path}: {exc}") from None
        finally:
            conn.close()

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

    async def create_run(self, state: RunState) -> None:
        await self.writer.write_durable(
            "INSERT INTO runs (id, task, plan_file, model, workspace, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                state.run_id,
                state.task.text,
                state.task.plan_file,
                state.model,
                state.task.workspace,
                state.status.value,
                state.started_at,
            ),
        )

    async def finish_run(self, state: RunState, report: str) -> None:
        """Record a run's outcome and its steps, in one transaction with its last checkpoint."""
        w = self.writer
        w.write(
            "UPDATE runs SET status=?, stop_reason=?, stop_detail=?, steps=?, input_tokens=?, "
            "output_tokens=?, report=?, finished_at=?, model=? WHERE id=?",
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
            ),
        )
        w.write("DELETE FROM steps WHERE run_id=?", (state.run_id,))
        for revision, plan in enumerate(
            [*state.plan_history, *([state.plan] if state.plan else [])]
        ):
            for position, step in enumerate(plan.steps):
                verdict = step.attempts[-1].verdict if step.attempts else None
                w.write(
                    "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        state.run_id,
                        revision,
                        position,
                        step.id,
                        step.tool,
                        json.dumps(step.args),
                        step.status.value,
                        len(step.attempts),
                        verdict.model_dump_json() if verdict else None,
                    ),
                )
        await w.flush()

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None and len(run_id) >= 4:  # allow a unique prefix, as git does
                rows = conn.execute(
                    "SELECT * FROM runs WHERE id LIKE ? LIMIT 2", (run_id + "%",)
                ).fetchall()
                row = rows[0] if len(rows) == 1 else None
        return dict(row) if row else None

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(row) for row in rows]

    def list_steps(self, run_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM steps WHERE run_id=? ORDER BY revision, position", (run_id,)
            ).fetchall()
        return [dict(row) for row in rows]

    def count(self, table: Literal["runs", "steps", "events", "checkpoints", "lessons"]) -> int:
        with self._read() as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(
        self, run_id: str, step: int, next_node: str | None, state_json: str, *, durable: bool
    ) -> asyncio.Future[None] | None:
        params = (run_id, step, next_node, time.time(), state_json)
        sql = "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)"
        if durable:
            return self.writer.write_durable(sql, params)
        self.writer.write(sql, params)
        return None

    def latest_checkpoint(self, run_id: str) -> tuple[int, str | None, str] | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT step, next_node, state FROM checkpoints WHERE run_id=? "
                "ORDER BY step DESC LIMIT 1",
                (run_id,),
            ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # -- events --------------------------------------------------------------------------------

    def add_event(
        self, run_id: str, seq: int, kind: str, node: str | None, data: dict[str, Any]
    ) -> None:
        self.writer.write(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, seq, time.time(), kind, node, json.dumps(data, default=str)),
        )

    def last_event_seq(self, run_id: str) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT max(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()
        return row[0] or 0

    def list_events(self, run_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT seq, ts, kind, node, data FROM events WHERE run_id=? ORDER BY seq",
                (run_id,),
            ).fetchall()
        return [{**dict(row), "data": json.loads(row["data"])} for row in rows]

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
    ) -> None:
        """Record a permission decision (fire and forget: it commits with the next batch, and
        the run's final flush waits for it)."""
        self.writer.write(
            "INSERT INTO audit (run_id, step_id, tool, args, decision, rule, reason, actor, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                step_id,
                tool,
                json.dumps(args, default=str),
                decision,
                rule,
                reason,
                actor,
                time.time(),
            ),
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

    def clear_cancel_request(self, run_id: str) -> None:
        self.writer.write(
            "UPDATE runs SET cancel_requested_at=NULL, cancel_grace_s=NULL WHERE id=?", (run_id,)
        )

    async def set_approval(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        decision: Literal["approve", "deny"],
        actor: str,
        note: str | None = None,
        *,
        revision: int = 0,
    ) -> bool:
        """Record a person's decision on one pending call, durably. Returns ``False`` (and
        changes nothing) when that call already has a decision: the first one stands."""
        try:
            await self.writer.write_durable(
                "INSERT INTO approvals (run_id, revision, step_id, attempt, decision, actor, ts, "
                "note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, revision, step_id, attempt, decision, actor, time.time(), note),
            )
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
