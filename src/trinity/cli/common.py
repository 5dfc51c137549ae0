"""What every command shares: consoles, exit codes, common options, settings, errors.

Kept light on purpose: the command modules import the runtime, the store and the providers
inside their functions, so ``trinity --help`` loads none of them."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from trinity.config import Settings
    from trinity.runtime import Runtime

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_STOPPED, EXIT_INPUT, EXIT_AWAITING = 0, 1, 2, 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
EXIT_SIGNALLED = {
    signal.SIGINT: EXIT_INTERRUPTED,
    signal.SIGTERM: 128 + signal.SIGTERM,  # 143
    signal.SIGHUP: 128 + signal.SIGHUP,  # 129
}
"""A run stopped by a signal is recorded as cancelled (resumable); the command exits with the
shell's code for that signal."""

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database: a path or sqlite:///path (default ~/.trinity/trinity.db)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")]


def settings(db: str | None = None) -> Settings:
    from trinity.config import Settings

    try:
        return Settings(database_url=db) if db else Settings()
    except Exception as exc:  # pydantic's ValidationError names the bad setting
        fail(f"bad configuration (TRINITY_* environment variables or trinity.toml): {exc}")


def runtime(config: Settings, **kwargs: Any) -> Runtime:
    from trinity.runtime import Runtime

    return Runtime(config, **kwargs)


def fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    # soft_wrap: one line whatever the terminal width, so logs and greps see the whole message
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@contextlib.contextmanager
def failing(code: int = EXIT_INPUT) -> Iterator[None]:
    """Any :class:`~trinity.errors.TrinityError` inside becomes ``error: <message>`` and exit
    ``code``: the one place the CLI turns an error into an exit code (``drive`` adds the codes
    of a run's own ends)."""
    from trinity.errors import TrinityError

    try:
        yield
    except TrinityError as exc:
        fail(str(exc), code)


@contextlib.contextmanager
def session(db: str | None = None, config: Settings | None = None) -> Iterator[Runtime]:
    """A runtime on the database (``--db``) for one command, closed after it; its errors are
    :func:`failing`'s."""
    rt = runtime(config or settings(db))
    try:
        with failing():
            yield rt
    finally:
        rt.close()


def when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
