"""``trinity serve``: the HTTP API and the dashboard."""

from __future__ import annotations

from typing import Annotated

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
    db: DbOption = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Serve the API (/v1, OpenAPI at /docs) and the dashboard (/); runs execute in this
    process. Every route but /healthz and /readyz needs a token (`trinity tokens create`)."""
    import uvicorn

    from trinity.server import create_app

    config = settings(db)
    with failing():
        app = create_app(config, auth=not no_auth, host=host, resume_orphans=resume_orphans)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"Trinity serving on http://{shown}:{port} (API docs at /docs)", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
