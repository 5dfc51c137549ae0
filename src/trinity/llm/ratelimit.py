"""Rate limits for model calls: requests and tokens per minute, per provider and model.

Configured in ``trinity.toml``; keys are globs over the model string, and the first key that
matches a model applies to it::

    [rate_limits."openai:*"]
    requests_per_minute = 500
    tokens_per_minute = 200000

    [rate_limits."anthropic:claude-*"]
    requests_per_minute = 50

A call that would go over waits for its turn (a moving window, from the ``limits`` library) and
a ``rate_limited`` event says so; the run's deadline still holds while it waits. A call reserves
its estimated input tokens (4 characters a token) plus its ``max_tokens``. The counts live in
this process (``memory://``), or, with ``rate_limit_storage = "redis://host:6379"``, in Redis
(the ``redis`` extra), so that every worker shares them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from trinity.errors import ConfigError, LLMError
from trinity.events import EventBase, RateLimited
from trinity.llm.base import LLMProvider, LLMRequest, LLMResponse

if TYPE_CHECKING:
    from limits.aio.strategies import MovingWindowRateLimiter

CHARS_PER_TOKEN = 4
_POLL_CAP_S = 1.0
"""Longest single sleep while waiting: the window may free up before its reset time."""


class RateLimit(BaseModel):
    """One model's limits (either may be left out)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: str
    limit: RateLimit
    items: tuple[tuple[str, Any], ...]
    """``(kind, limits item)``: ``requests`` and/or ``tokens``."""


def check_rate_limits(limits: Mapping[str, Any]) -> dict[str, RateLimit]:
    """The ``rate_limits`` setting validated (``ConfigError`` names the bad entry)."""
    checked: dict[str, RateLimit] = {}
    for pattern, raw in limits.items():
        try:
            checked[pattern] = RateLimit.model_validate(raw)
        except ValueError as exc:
            detail = str(exc).splitlines()
            shown = "; ".join(line.strip() for line in detail[1:3]) or str(exc)
            raise ConfigError(f"rate_limits.{pattern!r}: {shown}") from None
    return checked


def open_storage(storage: str) -> Any:
    """The ``limits`` async storage for a ``rate_limit_storage`` URI (``memory://``,
    ``redis://host:port``): shared by the LLM limits and the API's."""
    from limits.storage import storage_from_string

    uri = storage if storage.startswith("async+") else f"async+{storage}"
    # Redis through redis-py's asyncio client (the `redis` extra), not limits' default.
    options = {"implementation": "redispy"} if uri.startswith("async+redis") else {}
    try:
        return storage_from_string(uri, **options)
    except Exception as exc:  # limits raises ConfigurationError / ImportError
        raise ConfigError(f"rate_limit_storage {storage!r}: {exc}") from None


class RateLimiter:
    """The rate limits of one process (shared by all its runs), from the settings."""

    def __init__(
        self, limits: Mapping[str, Any], storage: str = "memory://", *, window_s: int = 60
    ) -> None:
        """``window_s``: the window the ``…_per_minute`` amounts apply to (tests shorten it)."""
        from limits import RateLimitItemPerSecond
        from limits.aio.strategies import MovingWindowRateLimiter

        self.window_s = window_s
        rules: list[_Rule] = []
        for pattern, limit in check_rate_limits(limits).items():
            items: list[tuple[str, Any]] = []
            if limit.requests_per_minute:
                item = RateLimitItemPerSecond(limit.requests_per_minute, window_s)
                items.append(("requests", item))
            if limit.tokens_per_minute:
                items.append(("tokens", RateLimitItemPerSecond(limit.tokens_per_minute, window_s)))
            rules.append(_Rule(pattern, limit, tuple(items)))
        self.rules = tuple(rules)
        self._strategy: MovingWindowRateLimiter = MovingWindowRateLimiter(open_storage(storage))

    def rule_for(self, model: str) -> _Rule | None:
        return next((rule for rule in self.rules if fnmatchcase(model, rule.pattern)), None)

    def wrap(
        self, provider: LLMProvider, model: str, emit: Callable[[EventBase], None]
    ) -> LLMProvider:
        """``provider`` with its calls held to the limit for ``model`` (itself when none)."""
        rule = self.rule_for(model)
        if rule is None or not rule.items:
            return provider
        return _Limited(provider, self, rule, model, emit)

    async def acquire(
        self, rule: _Rule, model: str, tokens: int, on_wait: Callable[[str, float], None]
    ) -> None:
        """Wait until ``rule`` has room for one request of ``tokens`` tokens, then take it."""
        for kind, item in rule.items:
            cost = 1 if kind == "requests" else tokens
            if cost > item.amount:
                raise LLMError(
                    f"{model}: one call needs about {cost} tokens, more than the limit of "
                    f"{item.amount} tokens per {self._window()} allows; raise tokens_per_minute"
                )
        told: str | None = None
        while True:
            full = None
            for kind, item in rule.items:
                cost = 1 if kind == "requests" else tokens
                if not await self._strategy.test(item, model, kind, cost=cost):
                    full = (kind, item)
                    break
            if full is None:
                # Taken together; a call that loses a race between test and hit goes round.
                if await self._take(rule, model, tokens):
                    return
                continue
            kind, item = full
            stats = await self._strategy.get_window_stats(item, model, kind)
            wait = max(0.01, stats.reset_time - time.time())
            limit = f"{item.amount} {kind} per {self._window()}"
            if told != limit:  # one event per wait, not one per poll
                on_wait(limit, round(wait, 3))
                told = limit
            await asyncio.sleep(min(wait, _POLL_CAP_S))

    def _window(self) -> str:
        return "1 minute" if self.window_s == 60 else f"{self.window_s} s"

    async def _take(self, rule: _Rule, model: str, tokens: int) -> bool:
        for kind, item in rule.items:
            cost = 1 if kind == "requests" else tokens
            if not await self._strategy.hit(item, model, kind, cost=cost):
                return False
        return True


class _Limited:
    """A provider whose calls wait for their turn."""

    def __init__(
        self,
        inner: LLMProvider,
        limiter: RateLimiter,
        rule: _Rule,
        model: str,
        emit: Callable[[EventBase], None],
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self._limiter = limiter
        self._rule = rule
        self._model = model
        self._emit = emit

    async def complete(self, request: LLMRequest) -> LLMResponse:
        chars = sum(len(message.content) for message in request.messages)
        tokens = chars // CHARS_PER_TOKEN + request.max_tokens

        def waiting(limit: str, wait_s: float) -> None:
            self._emit(RateLimited(model=self._model, limit=limit, wait_s=wait_s))

        await self._limiter.acquire(self._rule, self._model, tokens, waiting)
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
