"""The FastAPI application: :func:`create_app` and the services its lifespan runs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trinity.config import Settings
from trinity.errors import ConfigError
from trinity.observability.alerts import AlertEvaluator, AlertService
from trinity.runtime import Runtime
from trinity.security.loopback import allowed_request, is_loopback, loopback_names
from trinity.server import problems
from trinity.server.auth import ApiLimits
from trinity.server.executor import RunExecutor
from trinity.server.live import LiveEvents
from trinity.server.orphans import OrphanResumer
from trinity.server.readiness import McpReadiness

log = logging.getLogger(__name__)
API_VERSION = "1"


@dataclass
class ServerState:
    """What the routes share (``app.state.trinity``)."""

    runtime: Runtime
    executor: RunExecutor
    live: LiveEvents
    limits: ApiLimits
    auth: bool
    allow_scripted: bool
    mcp_servers_file: str | None
    mcp_readiness: McpReadiness


SERVE_OPTIONS = "TRINITY_SERVE_OPTIONS"
"""The environment variable ``trinity serve --workers N`` hands its options to each worker in
(JSON: ``auth``, ``host``, ``resume_orphans``)."""


def app_from_environment() -> FastAPI:
    """One worker process's app under ``trinity serve --workers N``: the settings as usual
    (environment, ``trinity.toml``), the command's options from :data:`SERVE_OPTIONS`."""
    options = json.loads(os.environ.get(SERVE_OPTIONS, "{}"))
    return create_app(Settings(), **options)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    auth: bool = True,
    host: str = "127.0.0.1",
    resume_orphans: bool = False,
) -> FastAPI:
    """The service: ``/v1`` API, live events, health, and the dashboard at ``/``.

    ``auth=False`` (every route open) is refused unless ``host`` is a loopback address.
    ``runtime`` replaces the one the settings make (tests, embedding). ``resume_orphans``:
    resume runs whose process died (:mod:`trinity.server.orphans`), every
    ``settings.orphan_scan_s``.
    """
    settings = settings or (runtime.settings if runtime is not None else Settings())
    if not auth and not is_loopback(host):
        raise ConfigError(
            f"--no-auth only on a loopback address (127.0.0.1, ::1, localhost), not {host!r}: "
            "anyone who reaches the port could run commands"
        )
    rt = runtime or Runtime(settings)
    servers_file = settings.mcp_servers_file
    servers_path = str(Path(servers_file).expanduser().resolve()) if servers_file else None
    state = ServerState(
        runtime=rt,
        executor=RunExecutor(rt),
        live=LiveEvents(),
        limits=ApiLimits(settings.api_rate_limits, settings.rate_limit_storage),
        auth=auth,
        allow_scripted=settings.api_allow_scripted,
        mcp_servers_file=servers_path,
        mcp_readiness=McpReadiness(rt, servers_path),
    )
    rt.subscribe(state.live.publish)
    rt.metrics()  # shown at /metrics
    orphans = OrphanResumer(state.executor, settings.orphan_scan_s) if resume_orphans else None
    alerts = AlertService(
        AlertEvaluator(settings, lambda: rt.store, mcp_probe=state.mcp_readiness.check),
        settings.alert_interval_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _ = rt.store  # open (and migrate) the database before the first request
        if orphans is not None:
            orphans.start()
        alerts.start()
        try:
            yield
        finally:
            await alerts.stop()
            if orphans is not None:
                await orphans.stop()
            await state.executor.stop()
            state.live.close()
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="Trinity Runtime",
        version=API_VERSION,
        description="Run autonomous, tool-using AI tasks: start, watch, approve and cancel runs.",
        lifespan=lifespan,
    )
    app.state.trinity = state
    problems.install(app)
    from trinity.server.api import events, runs, system

    app.include_router(system.router)
    app.include_router(runs.router)
    app.include_router(events.router)
    from trinity.server.dashboard import routes as dashboard

    app.include_router(dashboard.router)
    dashboard.mount_static(app)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    if not auth:
        # No tokens: a web page that rebinds its own name to 127.0.0.1 could drive this
        # server from the user's browser. Only requests for a loopback name are answered.
        app.add_middleware(LoopbackOnly, names=loopback_names(host))
    return app


class LoopbackOnly:
    """Refuses (421) a request whose ``Host`` or ``Origin`` is not a loopback name."""

    def __init__(self, app: ASGIApp, names: set[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if not allowed_request(headers.get("host"), headers.get("origin"), self.names):
                detail = (
                    f"this server runs without tokens (--no-auth), so it answers only requests "
                    f"for a loopback name; Host {headers.get('host')!r} / Origin "
                    f"{headers.get('origin')!r} refused (DNS-rebinding protection)"
                )
                await _problem(send, 421, "Misdirected request", detail)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``max_bytes`` (413), whether or not it says its length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    detail = f"the request body is over {limit} bytes (api_max_body_bytes)"
    await _problem(send, 413, "Request too large", detail)


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    """A problem-details answer from a middleware (before FastAPI's handlers)."""
    import json

    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    headers: list[Any] = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
