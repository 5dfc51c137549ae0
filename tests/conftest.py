"""Shared fixtures: a store and settings in a temporary folder, and a scripted runtime."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_fixtures import NODE, ensure_npm_servers
from trinity import execution
from trinity.config import Settings
from trinity.events import EventBase, JournalEntry, NodeStarted
from trinity.store import Store
from trinity.store.delta import apply_changes
from trinity.store.journal import RunJournal

ROOT = Path(__file__).resolve().parent.parent

# Tests never see the developer's keys or settings.
for _name in list(os.environ):
    if _name.startswith("TRINITY_") or _name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        del os.environ[_name]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, workspace: Path) -> Settings:
    return Settings(database_url=str(tmp_path / "trinity.db"), workspace=workspace)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings.database_url)
    yield store
    store.close()


@pytest.fixture(scope="session")
def node() -> str:
    """node, with the npm reference MCP servers installed from the lockfile when missing."""
    if NODE is None:
        pytest.skip(
            "NODE IS NOT INSTALLED: the npm reference MCP servers (server-everything, "
            "server-filesystem) cannot run; install Node.js 20+ to run these tests"
        )
    ensure_npm_servers()
    return NODE


class VerifyingJournal(RunJournal):
    """The run journal, checking at every checkpoint that the journal so far rebuilds exactly
    the state the run holds: the rule :mod:`trinity.store.delta` relies on (a node changes only
    the step that is current when it starts), kept by every scenario the tests run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replica = (kwargs.get("journaled") or self.state).model_dump(mode="json")

    def __call__(self, event: EventBase) -> None:
        super().__call__(event)
        if isinstance(event, JournalEntry) and (
            event.changes or not isinstance(event, NodeStarted)
        ):
            apply_changes(self.replica, event.changes)
            actual = self.state.model_dump(mode="json")
            rebuilt = type(self.state).model_validate(self.replica).model_dump(mode="json")
            if rebuilt != actual:
                differ = sorted(k for k in actual if rebuilt.get(k) != actual[k])
                raise AssertionError(
                    f"the journal of run {event.run_id} no longer rebuilds its state at "
                    f"checkpoint {event.seq} (node {event.node}): fields {differ} differ"
                )


@pytest.fixture(autouse=True)
def verify_journals(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every run a test drives in this process checks its journal as it goes (the bus hands
    subscriber errors to the log: they are collected and fail the test at its end)."""
    if request.node.get_closest_marker("no_journal_check"):
        return
    failures: list[str] = []

    class Checked(VerifyingJournal):
        def __call__(self, event: EventBase) -> None:
            try:
                super().__call__(event)
            except AssertionError as exc:
                failures.append(str(exc))

    monkeypatch.setattr(execution, "RunJournal", Checked)
    yield
    assert not failures, failures[0]
