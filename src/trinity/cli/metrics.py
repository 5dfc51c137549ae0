"""``trinity metrics``: Prometheus metrics for setups without ``trinity serve``."""

from __future__ import annotations

from typing import Annotated

import typer

from trinity.cli.common import DbOption, err, fail, failing, settings

app = typer.Typer(help="Prometheus metrics without trinity serve.", no_args_is_help=True)


@app.command("serve")
def metrics_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 9464,
    db: DbOption = None,
) -> None:
    """Serve /metrics for Prometheus: the runs of every Trinity process that keeps its metrics
    in the metrics_dir setting (CLI runs included), and the database's gauges (runs by status,
    pending approvals)."""
    import os
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from trinity.observability.metrics import CONTENT_TYPE, MULTIPROC_ENV, exposition, use_directory

    config = settings(db)
    if config.metrics_dir is not None:
        use_directory(config.metrics_dir)
    with failing():
        from trinity.store import Store

        store = Store.open(config.database_url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is here")
                return
            try:
                body = exposition(None, lambda: store)
            except Exception as exc:  # the database, say: a 500 Prometheus records, not a reset
                self.send_error(500, f"metrics unavailable: {type(exc).__name__}: {exc}")
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not news

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    shown = f"[{host}]" if ":" in host else host
    where = os.environ.get(MULTIPROC_ENV)
    said = (
        f"the runs of every process keeping metrics in {where}"
        if where
        else "the database's gauges only (set metrics_dir so that runs keep their metrics)"
    )
    err.print(f"Metrics on http://{shown}:{server.server_port}/metrics: {said}", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
