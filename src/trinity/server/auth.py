"""Who calls, and whether they may: a bearer token (or the dashboard's cookie) with the scope a
route needs, within the rate limit of its route class."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from trinity.security.tokens import AuthError, Token, verify_token

COOKIE = "trinity_session"
"""The dashboard's cookie: the token itself, http-only, same-site strict."""


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limit {limit} reached: retry in {retry_after_s} s")


@dataclass(frozen=True, slots=True)
class Caller:
    token: Token | None
    """``None``: the server runs without authentication (loopback only), or nobody has logged
    in yet."""
    address: str = ""
    """For a caller without a token: where the request came from (rate limits of /login)."""

    @property
    def key(self) -> str:
        if self.token is not None:
            return self.token.id
        return f"address:{self.address}" if self.address else "anonymous"

    @property
    def actor(self) -> str:
        return f"token:{self.token.name}" if self.token is not None else "api"


class ApiLimits:
    """Requests per caller and route class (``read``, ``write``), with ``limits``."""

    def __init__(self, limits: dict[str, str], storage: str) -> None:
        from limits import parse
        from limits.aio.strategies import MovingWindowRateLimiter

        from trinity.errors import ConfigError
        from trinity.llm.ratelimit import open_storage

        self.items: dict[str, Any] = {}
        for route_class, text in limits.items():
            try:
                self.items[route_class] = parse(text)
            except ValueError:
                raise ConfigError(
                    f"api_rate_limits {route_class!r}: {text!r} is not a limit like '600/minute'"
                ) from None
        self.strategy = MovingWindowRateLimiter(open_storage(storage))

    async def hit(self, caller: Caller, route_class: str) -> None:
        item = self.items.get(route_class)
        if item is None:
            return
        if await self.strategy.hit(item, "api", route_class, caller.key):
            return
        stats = await self.strategy.get_window_stats(item, "api", route_class, caller.key)
        raise RateLimited(str(item), max(1, math.ceil(stats.reset_time - time.time())))


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


def require(scope: str, route_class: str = "read") -> Any:
    """A dependency: the caller, if their token has ``scope`` and the rate limit allows."""

    async def dependency(request: Request) -> Caller:
        server = request.app.state.trinity
        if not server.auth:
            caller = Caller(None)
        else:
            presented = presented_token(request)
            if not presented:
                raise AuthError(
                    "no token: send 'Authorization: Bearer trn_…' (see `trinity tokens create`)"
                )
            store = server.runtime.store
            token = await run_in_threadpool(verify_token, store, presented)
            if not token.grants(scope):
                raise AuthError(
                    f"token {token.id} ({token.name}) lacks the scope {scope!r} "
                    f"(it has {', '.join(sorted(token.scopes))})",
                    status=403,
                )
            store.touch_token(token.id, time.time())
            caller = Caller(token)
        await server.limits.hit(caller, route_class)
        return caller

    return dependency
