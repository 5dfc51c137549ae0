"""Rate limits for model calls (the ``limits`` library): a call over the limit waits for its
turn with a ``rate_limited`` event, the run's deadline still holds while it waits, a call that
can never fit fails clearly, and a bad setting is refused before the run starts."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinity.config import Settings
from trinity.errors import ConfigError, LLMError
from trinity.events import EventBase, RateLimited
from trinity.limits import RunLimits
from trinity.llm.base import LLMRequest, Message
from trinity.llm.ratelimit import RateLimiter
from trinity.llm.scripted import ScriptedProvider
from trinity.runtime import Runtime
from trinity.state import StopReason


def _request(chars: int = 40, max_tokens: int = 100) -> LLMRequest:
    return LLMRequest(messages=[Message("user", "x" * chars)], max_tokens=max_tokens)


async def test_calls_over_the_limit_wait_for_their_turn() -> None:
    limiter = RateLimiter({"scripted:*": {"requests_per_minute": 2}}, window_s=1)
    events: list[EventBase] = []
    llm = limiter.wrap(
        ScriptedProvider([{"text": "ok", "repeat": True}]), "scripted:a", events.append
    )
    started = time.monotonic()
    for _ in range(2):
        await llm.complete(_request())
    assert time.monotonic() - started < 0.5 and events == []  # within the limit: no wait
    await llm.complete(_request())
    waited = time.monotonic() - started
    assert 0.5 < waited < 3, waited
    assert len(events) == 1 and isinstance(events[0], RateLimited)
    assert events[0].limit == "2 requests per 1 s" and 0 < events[0].wait_s <= 1.0


async def test_tokens_are_reserved_per_call() -> None:
    limiter = RateLimiter({"*": {"tokens_per_minute": 500}}, window_s=1)
    events: list[EventBase] = []
    llm = limiter.wrap(
        ScriptedProvider([{"text": "ok", "repeat": True}]), "scripted:a", events.append
    )
    await llm.complete(_request(chars=400, max_tokens=100))  # 100 + 100 tokens
    await llm.complete(_request(chars=400, max_tokens=100))
    assert events == []
    await llm.complete(_request(chars=400, max_tokens=100))  # 600 > 500: waits
    assert [e.limit for e in events if isinstance(e, RateLimited)] == ["500 tokens per 1 s"]


async def test_a_call_that_can_never_fit_fails_at_once() -> None:
    limiter = RateLimiter({"*": {"tokens_per_minute": 1000}})
    llm = limiter.wrap(ScriptedProvider([{"text": "ok"}]), "scripted:a", lambda event: None)
    with pytest.raises(LLMError, match="more than the limit of 1000 tokens"):
        await llm.complete(_request(chars=40, max_tokens=2048))


def test_models_without_a_matching_limit_are_not_wrapped() -> None:
    limiter = RateLimiter({"openai:*": {"requests_per_minute": 1}})
    provider = ScriptedProvider([{"text": "ok"}])
    assert limiter.wrap(provider, "anthropic:claude", lambda event: None) is provider


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"openai:*": {"requests_per_minut": 5}}, "requests_per_minut"),
        ({"openai:*": {"requests_per_minute": 0}}, "greater than or equal to 1"),
    ],
)
def test_a_bad_rate_limit_setting_is_refused_before_the_run(
    settings: Settings, limits: dict[str, dict[str, int]], expected: str
) -> None:
    llm = ScriptedProvider([{"text": "ok"}])
    runtime = Runtime(settings.model_copy(update={"rate_limits": limits}), llm=llm)
    try:
        with pytest.raises(ConfigError, match=expected):
            runtime.prepare("say hi", model="scripted:x")
    finally:
        runtime.close()


async def test_the_deadline_holds_while_a_run_waits(settings: Settings, workspace: Path) -> None:
    plan = {"steps": [{"id": "a", "tool": "fs.write", "args": {"path": "a.txt", "content": "a"}}]}
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(plan)},
            {"text": json.dumps({"passed": True, "reason": "ok"}), "repeat": True},
        ]
    )
    # One call a minute: the planner's first call passes, the judge's waits a minute.
    update = {"rate_limits": {"scripted:*": {"requests_per_minute": 1}}}
    runtime = Runtime(settings.model_copy(update=update), llm=llm)
    events: list[EventBase] = []
    try:
        request = runtime.prepare("write a", model="scripted:x", limits=RunLimits(timeout_s=1.5))
        started = time.monotonic()
        state = await runtime.start(request, subscribers=[events.append])
        took = time.monotonic() - started
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.DEADLINE, state.stop_detail
    assert took < 4
    waits = [e for e in events if isinstance(e, RateLimited)]
    assert waits and waits[0].limit == "1 requests per 1 minute" and waits[0].wait_s > 30


# -- shared limits in Redis ----------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, in a temp folder (installed by .ci/run)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("LOUD SKIP: redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


async def test_limits_in_redis_hold_across_processes(redis_url: str) -> None:
    """Two limiters (two workers) on one Redis share one window: the second's call waits."""
    limits = {"openai:*": {"requests_per_minute": 2}}
    first = RateLimiter(limits, redis_url, window_s=1)
    second = RateLimiter(limits, redis_url, window_s=1)
    events: list[EventBase] = []
    provider = ScriptedProvider([{"text": "ok", "repeat": True}])
    a = first.wrap(provider, "openai:gpt-4o", events.append)
    b = second.wrap(provider, "openai:gpt-4o", events.append)
    started = time.monotonic()
    await a.complete(_request())
    await a.complete(_request())
    assert events == []
    await b.complete(_request())  # the window is full in Redis, whichever process asks
    assert time.monotonic() - started > 0.5
    assert [e.limit for e in events if isinstance(e, RateLimited)] == ["2 requests per 1 s"]


def test_an_unreachable_storage_url_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigError, match="rate_limit_storage 'nosuch://x'"):
        RateLimiter({"*": {"requests_per_minute": 1}}, "nosuch://x")
