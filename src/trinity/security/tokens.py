"""API tokens: made once, shown once, kept as a hash, checked in constant time.

A token reads ``trn_<id>_<secret>``: the id finds its record, the secret (32 random bytes) is
checked against the SHA-256 kept for it with :func:`hmac.compare_digest`. A secret with 256
bits of randomness needs no slow password hash (nothing to guess), and a stolen database holds
no usable token. Scopes say what a token may do:

==============  ====================================================================
``runs:read``   list and read runs, their events and the tools
``runs:write``  start, cancel and resume runs (and read them)
``approvals``   approve or deny a pending tool call
``admin``       everything, tokens included
==============  ====================================================================
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trinity.errors import InputError, TrinityError

if TYPE_CHECKING:
    from trinity.store import Store

SCOPES = ("runs:read", "runs:write", "approvals", "admin")
IMPLIES = {"runs:write": {"runs:read"}, "admin": set(SCOPES)}
"""A scope also grants these."""
_SHAPE = re.compile(r"trn_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class AuthError(TrinityError):
    """A request without a valid token (401), or with one that lacks the scope (403)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Token:
    """A token's record, without its secret."""

    id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def grants(self, scope: str) -> bool:
        return any(scope == held or scope in IMPLIES.get(held, ()) for held in self.scopes)


def parse_scopes(text: str) -> list[str]:
    scopes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise InputError(
            f"unknown scope(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
            f"choose from {', '.join(SCOPES)}"
        )
    return scopes


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise InputError(f"bad duration {text!r}: write a number and a unit, like 30d, 12h, 90m")
    return int(match[1]) * _UNIT_S[match[2]]


def create_token(
    store: Store, name: str, scopes: list[str], expires_in_s: float | None = None
) -> tuple[Token, str]:
    """Make and store a token; returns its record and the secret text, shown only now."""
    if not name.strip() or len(name) > 100:
        raise InputError("a token needs a name of 1 to 100 characters")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    expires = now + expires_in_s if expires_in_s else None
    store.add_token(token_id, name.strip(), _hash(secret), scopes, now, expires)
    token = Token(token_id, name.strip(), frozenset(scopes), now, expires)
    return token, f"trn_{token_id}_{secret}"


def verify_token(store: Store, presented: str) -> Token:
    """The token ``presented`` is, if it is valid now; :class:`AuthError` otherwise (the same
    message whether the id is unknown or the secret wrong)."""
    match = _SHAPE.fullmatch(presented.strip())
    if not match:
        raise AuthError("not a Trinity API token (trn_…): see `trinity tokens create`")
    record = store.get_token(match[1])
    valid = record is not None and hmac.compare_digest(record["hash"], _hash(match[2]))
    if not valid or record is None:
        raise AuthError("invalid token")
    token = _to_token(record)
    if token.revoked_at is not None:
        raise AuthError(f"token {token.id} ({token.name}) was revoked")
    if token.expires_at is not None and token.expires_at <= time.time():
        raise AuthError(f"token {token.id} ({token.name}) has expired")
    return token


def list_tokens(store: Store) -> list[Token]:
    return [_to_token(record) for record in store.list_tokens()]


def _to_token(record: dict[str, Any]) -> Token:
    return Token(
        id=record["id"],
        name=record["name"],
        scopes=frozenset(record["scopes"]),
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        revoked_at=record["revoked_at"],
        last_used_at=record["last_used_at"],
    )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
