"""The ``trinity`` command: one module per command group, each a thin face of the
:class:`~trinity.runtime.Runtime` (the HTTP API is the other).

Exit codes: 0 the run completed; 1 the run stopped without completing (the reason is printed),
or its end could not be recorded; 2 bad input or configuration (nothing was run or stored), or
the run is being executed by another process; 3 the run is awaiting approval of a tool call
(``trinity runs approve ID`` / ``trinity runs deny ID`` decide and continue it); 130 Ctrl-C,
143 SIGTERM, 129 SIGHUP (the run is recorded as cancelled; ``runs resume`` continues it);
70 an internal error.

Importing this package loads no runtime, store, provider or MCP code: each command imports what
it needs when it runs, so ``trinity --help`` starts fast.
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape

from trinity.cli import (
    alerts,
    doctor,
    mcp,
    metrics,
    report,
    run,
    runs,
    secrets,
    serve,
    tokens,
    tools,
)
from trinity.cli.common import EXIT_INTERNAL, err
from trinity.security.secrets import redact

app = typer.Typer(
    name="trinity",
    help="Trinity Runtime: plan, execute, verify and learn from tool-using AI tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run)
app.command("doctor")(doctor.doctor)
app.add_typer(runs.app, name="runs")
app.add_typer(tools.app, name="tools")
app.add_typer(mcp.app, name="mcp")
app.add_typer(secrets.app, name="secrets")
app.add_typer(tokens.app, name="tokens")
app.add_typer(metrics.app, name="metrics")
app.command("report")(report.report)
app.add_typer(alerts.app, name="alerts")
app.command("serve")(serve.serve)


class _OneLine(logging.Formatter):
    """Warnings as one line each: a traceback is for ``TRINITY_DEBUG=1``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {redact(record.getMessage())}"


def main() -> None:
    debug = bool(os.environ.get("TRINITY_DEBUG"))
    handler = logging.StreamHandler()
    if not debug:
        handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    try:
        app()
    except Exception as exc:  # a bug: say so plainly, keep the traceback for TRINITY_DEBUG=1
        if debug:
            raise
        shown = escape(redact(str(exc)))
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {shown}")
        err.print("Run again with TRINITY_DEBUG=1 for the traceback, and please report it.")
        sys.exit(EXIT_INTERNAL)
