"""``trinity secrets``: API keys in the OS keyring. Values are read from a hidden prompt or
standard input, and never printed."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from trinity.cli.common import fail, out

app = typer.Typer(
    help="API keys in the OS keyring (used with keyring = true).", no_args_is_help=True
)


@app.command("set")
def secrets_set(
    name: Annotated[str, typer.Argument(help="OPENAI_API_KEY, ANTHROPIC_API_KEY, …")],
) -> None:
    """Store a secret: typed at a hidden prompt, or piped on standard input."""
    from trinity.errors import ConfigError
    from trinity.security.keyring_store import set_secret

    if sys.stdin.isatty():
        value = typer.prompt(f"{name}", hide_input=True)
    else:
        value = sys.stdin.read().strip()
    try:
        set_secret(name, value)
    except ConfigError as exc:
        fail(str(exc))
    out.print(f"stored {name} in the keyring")


@app.command("list")
def secrets_list() -> None:
    """The names stored (never the values), and which ones Trinity reads."""
    from trinity.errors import ConfigError
    from trinity.security.keyring_store import KEY_NAMES, names

    try:
        stored = names()
    except ConfigError as exc:
        fail(str(exc))
    if not stored:
        out.print("no secrets stored")
    for name in stored:
        used = "read with keyring = true" if name in KEY_NAMES else "not read by Trinity"
        out.print(f"{name}\tset\t({used})")


@app.command("delete")
def secrets_delete(name: str) -> None:
    """Remove a secret."""
    from trinity.errors import ConfigError
    from trinity.security.keyring_store import delete_secret

    try:
        found = delete_secret(name)
    except ConfigError as exc:
        fail(str(exc))
    if not found:
        fail(f"{name} is not in the keyring")
    out.print(f"deleted {name}")
