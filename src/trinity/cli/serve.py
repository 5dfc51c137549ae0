"""``trinity serve``: the HTTP API and the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from trinity.cli.common import DbOption, err, failing, settings


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8080,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No tokens needed (loopback addresses only)")
    ] = False,
    resume_orphans: Annotated[
        bool,
        typer.Option(
            "--resume-orphans", help="Resume runs whose process died (their lease is free)"
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Server processes sharing the port and the database (runs execute in the one "
            "that started them)",
        ),
    ] = 1,
    db: DbOption = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Serve the API (/v1, OpenAPI at /docs) and the dashboard (/); runs execute in this
    process. Every route but /healthz and /readyz needs a token (`trinity tokens create`)."""
    import json
    import os

    import uvicorn

    from trinity.server import create_app
    from trinity.server.app import SERVE_OPTIONS

    config = settings(db)
    options: dict[str, Any] = {"auth": not no_auth, "host": host, "resume_orphans": resume_orphans}
    with failing():
        app = create_app(config, **options)  # checked here, before any worker starts
    shown = f"[{host}]" if ":" in host else host
    many = f", {workers} processes" if workers > 1 else ""
    err.print(f"Trinity serving on http://{shown}:{port}{many} (API docs at /docs)", soft_wrap=True)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        uvicorn.run(app, **common)
        return
    # Each worker process builds its own app (and Runtime) from the same settings: the
    # environment, trinity.toml in this folder, and the database named here.
    os.environ[SERVE_OPTIONS] = json.dumps(options)
    if db:
        os.environ["TRINITY_DATABASE_URL"] = db
    import shutil
    import tempfile

    shared = None
    if config.metrics_dir is None:  # /metrics in any worker shows them all
        shared = tempfile.mkdtemp(prefix="trinity-metrics-")
        os.environ["TRINITY_METRICS_DIR"] = shared
    try:
        uvicorn.run(
            "trinity.server.app:app_from_environment",
            factory=True,
            workers=workers,
            **common,
        )
    finally:
        if shared is not None:  # this server's own: its counters end with it
            shutil.rmtree(shared, ignore_errors=True)
