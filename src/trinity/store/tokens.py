"""API tokens in the store: only a hash of each secret is kept (:mod:`trinity.security.tokens`
makes and checks them). :class:`TokenRecords` is a base of :class:`~trinity.store.sqlite.Store`."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from trinity.store.writer import GroupCommitWriter


class TokenRecords:
    writer: GroupCommitWriter
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    """(Both provided by the Store.)"""

    def add_token(
        self,
        token_id: str,
        name: str,
        secret_hash: str,
        scopes: list[str],
        created_at: float,
        expires_at: float | None,
    ) -> asyncio.Future[None] | None:
        """Store a new token (durably on an event loop; at once outside one)."""
        return self.writer.write_tracked(
            "INSERT INTO api_tokens (id, name, hash, scopes, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (token_id, name, secret_hash, ",".join(scopes), created_at, expires_at),
        )

    def get_token(self, token_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM api_tokens WHERE id=?", (token_id,)).fetchone()
        return _token(row) if row else None

    def list_tokens(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM api_tokens ORDER BY created_at").fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: str, at: float) -> asyncio.Future[None] | None:
        return self.writer.write_tracked(
            "UPDATE api_tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (at, token_id)
        )

    def touch_token(self, token_id: str, at: float) -> None:
        """Note when a token was last used (a write nobody waits for)."""
        self.writer.write_soon("UPDATE api_tokens SET last_used_at=? WHERE id=?", (at, token_id))


def _token(row: sqlite3.Row) -> dict[str, Any]:
    token = dict(row)
    token["scopes"] = [scope for scope in token["scopes"].split(",") if scope]
    return token
