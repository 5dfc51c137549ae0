"""``trinity tokens``: API tokens for ``trinity serve``. A token is printed once, when it is
made; the database keeps only its hash."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from trinity.cli.common import DbOption, JsonOption, err, fail, out, session, when

app = typer.Typer(help="API tokens for trinity serve.", no_args_is_help=True)


@app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses it (ci, alice…)")],
    scope: Annotated[
        str,
        typer.Option("--scope", help="Comma-separated: runs:read, runs:write, approvals, admin"),
    ] = "runs:read",
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime: 30d, 12h, 90m, 2w (default: none)")
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a token and print it (once: only its hash is kept)."""
    from trinity.security.tokens import create_token, parse_duration, parse_scopes

    with session(db) as rt:
        scopes = parse_scopes(scope)
        lifetime = parse_duration(expires) if expires else None
        token, secret = create_token(rt.store, name, scopes, lifetime)
    if json_output:
        out.print_json(json.dumps({"id": token.id, "name": token.name, "token": secret}))
        return
    err.print(
        f"token {token.id} ({token.name}, {', '.join(scopes)}"
        + (f", expires {when(token.expires_at)} UTC" if token.expires_at else "")
        + "): shown only now, keep it safe:",
        soft_wrap=True,
    )
    out.print(secret, soft_wrap=True, highlight=False)


@app.command("list")
def tokens_list(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Every token: id, name, scopes, when made, last used, expiry, revocation (no secrets)."""
    from trinity.security.tokens import list_tokens

    with session(db) as rt:
        tokens = list_tokens(rt.store)
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "scopes": sorted(t.scopes),
            "created_at": t.created_at,
            "last_used_at": t.last_used_at,
            "expires_at": t.expires_at,
            "revoked_at": t.revoked_at,
        }
        for t in tokens
    ]
    if json_output:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    for column in ("id", "name", "scopes", "created (UTC)", "last used", "expires", "revoked"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["name"]),
            ",".join(row["scopes"]),  # type: ignore[arg-type]
            when(row["created_at"]),  # type: ignore[arg-type]
            when(row["last_used_at"]),  # type: ignore[arg-type]
            when(row["expires_at"]),  # type: ignore[arg-type]
            when(row["revoked_at"]),  # type: ignore[arg-type]
        )
    out.print(table)


@app.command("revoke")
def tokens_revoke(token_id: str, db: DbOption = None) -> None:
    """Revoke a token at once (by its id, as `tokens list` shows it)."""
    import time

    with session(db) as rt:
        if rt.store.get_token(token_id) is None:
            fail(f"no token with id {token_id!r} (see `trinity tokens list`)")
        rt.store.revoke_token(token_id, time.time())
    err.print(f"token {token_id} revoked")
