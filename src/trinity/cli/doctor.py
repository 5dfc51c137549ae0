"""``trinity doctor``: check the installation, the database (its integrity too) and the keys."""

from __future__ import annotations

import platform
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from trinity.cli.common import EXIT_INPUT, DbOption, err, out, settings


def doctor(
    db: DbOption = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Check every page of the database (integrity_check; slower)"),
    ] = False,
) -> None:
    """Check the configuration: database (schema and integrity), runs left interrupted,
    workspace, providers and keys (never printed)."""
    from trinity.errors import TrinityError
    from trinity.llm.registry import check_model
    from trinity.tools.sandbox import Sandbox

    config = settings(db)
    table = Table(title="trinity doctor", show_header=False)
    table.add_column("item")
    table.add_column("value", overflow="fold")
    problems = 0

    def row(name: str, value: str, ok: bool = True) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        table.add_row(name, escape(value) if ok else f"[red]{escape(value)}[/]")

    row("python", f"{platform.python_version()} ({sys.executable})")
    row("trinity-runtime", _version("trinity-runtime"))
    for package in ("openai", "anthropic", "pydantic"):
        row(package, _version(package))
    row("sqlite", f"{sqlite3.sqlite_version}, FTS5 {'yes' if _has_fts5() else 'NO'}", _has_fts5())
    for name, value, ok in _database(config.database_url, full):
        row(name, value, ok)
    row("workspace", str(Path(config.workspace).expanduser().resolve()))
    sandbox = Sandbox.from_settings(config)
    working = sandbox.profile == "off" or sandbox.active
    shown = sandbox.describe() if working else f"WARNING: {sandbox.describe()}"
    row("sandbox", shown, ok=working or not sandbox.required)
    for env, attr in (
        ("OPENAI_API_KEY", "openai_api_key"),
        ("ANTHROPIC_API_KEY", "anthropic_api_key"),
        ("OPENAI_COMPATIBLE_API_KEY", "compatible_api_key"),
    ):
        row(env, "set" if getattr(config, attr) is not None else "not set")
    if config.openai_base_url:
        row("OPENAI_BASE_URL", config.openai_base_url)
    if config.model:
        try:
            check_model(config.model, config)
            row("TRINITY_MODEL", config.model)
        except TrinityError as exc:
            row("TRINITY_MODEL", str(exc), ok=False)
    else:
        row("TRINITY_MODEL", "not set (plan files run without a model)")
    toml = Path("trinity.toml")
    row("trinity.toml", "found" if toml.exists() else "none in this folder")
    out.print(table)
    if problems:
        err.print(f"[red]{problems} problem(s) found[/]")
        raise typer.Exit(EXIT_INPUT)
    out.print("[green]ok[/]")


def _database(url: str | None, full: bool) -> list[tuple[str, str, bool]]:
    """Rows about the database, read without changing it (no migration, no new file)."""
    from trinity.errors import TrinityError
    from trinity.store.lease import may_take_over
    from trinity.store.schema import MIGRATIONS
    from trinity.store.sqlite import check_not_empty, default_db_path, path_from_url

    try:
        path = path_from_url(url) if url else default_db_path()
        if not path.exists():
            return [("database", f"{path} (will be created)", True)]
        check_not_empty(path)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except (TrinityError, sqlite3.Error, OSError) as exc:
        return [("database", str(exc), False)]
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        current = len(MIGRATIONS)
        note = "current" if version == current else f"will be migrated to {current}"
        rows = [("database", f"{path} (schema {version}, {note})", version <= current)]
        pragma = "integrity_check" if full else "quick_check"
        found = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
        if found == ["ok"]:
            rows.append(("integrity", f"ok ({pragma})", True))
        else:
            shown = "; ".join(found[:5]) + (
                f"; … ({len(found)} problems)" if len(found) > 5 else ""
            )
            rows.append(("integrity", f"DAMAGED ({pragma}): {shown}", False))
        if 4 <= version <= current:
            running = conn.execute(
                "SELECT id, lease_owner, lease_expires_at FROM runs WHERE status='running'"
            ).fetchall()
            dead = [r[0] for r in running if may_take_over(r[1], r[2])[0]]
            if dead:
                rows.append(
                    (
                        "interrupted runs",
                        f"{len(dead)} (their process died): {', '.join(dead[:5])}; "
                        "`trinity runs resume ID` continues one, `trinity runs cancel ID` ends it",
                        True,
                    )
                )
        return rows
    except sqlite3.Error as exc:
        return [("database", f"{path}: {exc} (damaged, or not a Trinity database)", False)]
    finally:
        conn.close()


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _has_fts5() -> bool:
    try:
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        conn.close()
        return True
    except sqlite3.Error:
        return False
