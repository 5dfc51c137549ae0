"""The SQLite store and its group-commit writer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from trinity.errors import StoreError
from trinity.events import EventBase, NodeStarted
from trinity.state import Lesson
from trinity.store import Store
from trinity.store.sqlite import MIGRATIONS, _fts_query
from trinity.store.writer import Statement


def event(run: str, seq: int, **data: object) -> EventBase:
    """An event as a run's bus would hand it to the store."""
    made = NodeStarted(step=int(data.get("step", 0)))
    made.__dict__.update(run_id=run, seq=seq, ts=1.0)
    return made


def snapshot(store: Store, run: str, seq: int) -> list[Statement]:
    return store.snapshot_statements(run, 0, seq, "{}")


async def test_durable_writes_are_committed_when_their_future_resolves(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        futures = [store.append_event(event("r", i), 0) for i in range(1, 1001)]
        await asyncio.gather(*futures)  # type: ignore[arg-type]
        # another connection sees every row: they are committed, not just queued
        with sqlite3.connect(tmp_path / "t.db") as other:
            assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 1000
        assert store.writer.batches <= 3  # one transaction for the lot, not 1,000
    finally:
        store.close()


async def test_one_bad_write_fails_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        good = store.writer.write_durable(
            "INSERT INTO lessons (task, outcome, text, tags, created_at) VALUES (?, ?, ?, ?, ?)",
            ("t", "success", "x", "", 1.0),
        )
        bad = store.writer.write_durable("INSERT INTO no_such_table VALUES (?)", (1,))
        also_good = store.append_event(event("r", 1), 0)
        await good
        await also_good  # type: ignore[misc]
        with pytest.raises(StoreError, match="no_such_table"):
            await bad
        assert store.count("lessons") == 1 and store.count("events") == 1
    finally:
        store.close()


async def test_a_group_is_written_all_or_none_and_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        neighbour = store.append_event(event("other", 1), 0)
        group = store.writer.write_all(
            [
                *snapshot(store, "r", 1),
                Statement(
                    "UPDATE runs SET status='x' WHERE id=?",
                    ("no such run",),
                    expect_rows=1,
                    mismatch="that run is gone",
                ),
            ]
        )
        with pytest.raises(StoreError, match="that run is gone"):
            await group
        await neighbour  # type: ignore[misc]
        assert store.count("snapshots") == 0  # rolled back with the statement that failed
        assert store.count("events") == 1  # another caller's write in the same batch landed
    finally:
        store.close()


async def test_an_event_number_is_never_written_twice(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        await store.append_event(event("r", 1, step=1), 0)  # type: ignore[misc]
        with pytest.raises(StoreError, match="UNIQUE"):
            await store.append_event(event("r", 1, step=2), 0)  # type: ignore[misc]
        assert [e["data"]["step"] for e in store.list_events("r")] == [1]
    finally:
        store.close()


def test_writes_without_an_event_loop_and_on_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    store.append_event(event("r", 1, step=1), 0)  # no loop running: written at once
    assert store.list_events("r")[0]["data"] == {"step": 1}

    async def queue_and_leave() -> None:
        store.append_event(event("r", 2), 0)  # queued, never awaited
        store.writer.write_all(snapshot(store, "r", 2))  # awaited by nobody

    asyncio.run(queue_and_leave())
    store.close()  # close writes what is still queued
    reopened = Store(tmp_path / "t.db")
    try:
        assert [e["seq"] for e in reopened.list_events("r")] == [1, 2]
        assert reopened.latest_snapshot("r") == (2, "{}")
    finally:
        reopened.close()


def test_a_store_serves_one_loop_after_another(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        for run in range(3):

            async def write(run: int = run) -> None:
                await store.writer.write_all(snapshot(store, f"r{run}", 1))

            asyncio.run(write())
        assert store.count("snapshots") == 3
    finally:
        store.close()


async def test_writes_wait_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        pending = store.writer.write_all(snapshot(store, "r", 1))
        ticks = 0
        while not pending.done() and ticks < 20:  # the loop is not blocked meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not pending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(pending, 5)
        assert store.count("snapshots") == 1
    finally:
        other.close()
        store.close()


def test_lessons_are_found_by_words_and_never_break_on_syntax(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")

    async def add() -> None:
        await store.add_lessons(
            [
                Lesson(task="convert csv to json", outcome="success", text="use python csv module"),
                Lesson(task="resize images", outcome="failure", text="imagemagick was missing"),
            ]
        )

    try:
        asyncio.run(add())
        found = store.search_lessons("Convert the CSV export into JSON")
        assert [lesson.task for lesson in found] == ["convert csv to json"]
        for hostile in ('"unbalanced', "NEAR(a b) OR AND *", "-- ; DROP TABLE lessons", "é ü ß"):
            store.search_lessons(hostile)  # quoted terms: no FTS5 syntax error
        assert store.search_lessons("") == []
    finally:
        store.close()
    assert _fts_query('say "hi" to the csv') == '"say" OR "csv"'


def test_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    Store(path).close()
    Store(path).close()  # opening again migrates nothing and fails nothing
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this Trinity"):
        Store(path)


def test_unsupported_database_urls_are_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="PostgreSQL is not supported"):
        Store.open("postgresql://localhost/trinity")
    with pytest.raises(StoreError, match="unsupported database URL"):
        Store.open("mysql://x")
    store = Store.open(f"sqlite:///{tmp_path}/u.db")
    store.close()
    assert (tmp_path / "u.db").exists()
