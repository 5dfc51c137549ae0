"""Fixtures for the service's tests: an app on a temp database, tokens, an in-process client,
and the same app served by a real uvicorn on a free loopback port (for the event streams)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from trinity.config import Settings
from trinity.security.tokens import create_token
from trinity.server import create_app


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=str(tmp_path / "db" / "t.db"),
        workspace=tmp_path / "ws",
        api_allow_scripted=True,
        sandbox="off",
    )


@pytest.fixture
async def app(server_settings: Settings) -> AsyncIterator[Any]:
    made = create_app(server_settings)
    async with made.router.lifespan_context(made):
        yield made


@pytest.fixture
def token(app: Any) -> Callable[..., str]:
    """Makes a token with the given scopes; returns its secret."""

    def make(*scopes: str, expires_in_s: float | None = None) -> str:
        store = app.state.trinity.runtime.store
        return create_token(store, "test", list(scopes) or ["admin"], expires_in_s)[1]

    return make


@pytest.fixture
async def client(app: Any, token: Callable[..., str]) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client holding an admin token."""
    headers = {"Authorization": f"Bearer {token('admin')}"}
    await app.state.trinity.runtime.store.writer.flush()  # the token is committed before use
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://trinity.test", headers=headers
    ) as c:
        yield c


@pytest.fixture
async def live(app: Any) -> AsyncIterator[str]:
    """The app behind a real uvicorn on 127.0.0.1 (a free port); yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
