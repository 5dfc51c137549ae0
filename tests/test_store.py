"""The SQLite store and its group-commit writer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from trinity.errors import StoreError
from trinity.state import Lesson
from trinity.store import Store
from trinity.store.sqlite import MIGRATIONS, _fts_query


async def test_durable_writes_are_committed_when_their_future_resolves(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        futures = [store.save_checkpoint("r", i, "n", "{}", durable=True) for i in range(1000)]
        await asyncio.gather(*futures)
        # another connection sees every row: they are committed, not just queued
        with sqlite3.connect(tmp_path / "t.db") as other:
            assert other.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 1000
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
        also_good = store.save_checkpoint("r", 1, None, "{}", durable=True)
        await good
        await also_good
        with pytest.raises(StoreError, match="no_such_table"):
            await bad
        assert store.count("lessons") == 1 and store.count("checkpoints") == 1
    finally:
        store.close()


def test_writes_without_an_event_loop_and_on_close(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    store.add_event("r", 1, "kind", None, {"a": 1})  # no loop running: written at once
    assert store.list_events("r")[0]["data"] == {"a": 1}

    async def queue_and_leave() -> None:
        store.add_event("r", 2, "kind", None, {"b": 2})  # fire and forget, never flushed
        store.save_checkpoint("r", 7, None, "{}", durable=True)  # awaited by nobody

    asyncio.run(queue_and_leave())
    store.close()  # close writes what is still queued
    reopened = Store(tmp_path / "t.db")
    try:
        assert [e["seq"] for e in reopened.list_events("r")] == [1, 2]
        assert reopened.latest_checkpoint("r") is not None
    finally:
        reopened.close()


def test_a_store_serves_one_loop_after_another(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        for run in range(3):

            async def write(run: int = run) -> None:
                await store.save_checkpoint(f"r{run}", 1, None, "{}", durable=True)

            asyncio.run(write())
        assert store.count("checkpoints") == 3
    finally:
        store.close()


async def test_writes_wait_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        pending = store.save_checkpoint("r", 1, None, "{}", durable=True)
        ticks = 0
        while not pending.done() and ticks < 20:  # the loop is not blocked meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not pending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(pending, 5)
        assert store.count("checkpoints") == 1
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
