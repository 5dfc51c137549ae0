"""Shared fixtures: a store and settings in a temporary folder, and a scripted runtime."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_fixtures import NODE, ensure_npm_servers
from trinity.config import Settings
from trinity.store import Store

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
