"""The OpenAI and Anthropic providers, over real HTTP through the official SDKs, and the retry
helper they share.

Every provider test runs against :mod:`llm_server`, a scripted local fake, for both providers.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llm_server import (  # the fixture must be imported for pytest to find it
    FakeLLMServer,
    Hang,
    Raw,
    Reply,
    Status,
    Trickle,
    fake_llm_server,  # noqa: F401
)
from trinity.errors import ConfigError, LLMError, LLMTimeoutError
from trinity.llm import native
from trinity.llm.anthropic_provider import AnthropicProvider
from trinity.llm.base import LLMProvider, LLMRequest, Message
from trinity.llm.openai_provider import OpenAIProvider
from trinity.llm.retry import (
    AttemptFailure,
    RetryPolicy,
    call_with_retries,
    http_failure,
    parse_retry_after,
)

API_KEY = "sk-test-0123456789abcdef-SECRET"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.02)
"""Tiny backoff: a test that sees a long gap between requests knows it came from Retry-After."""

MakeProvider = Callable[..., Any]


@pytest.fixture(params=["openai", "anthropic"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=[False, True], ids=["whole", "stream"])
def stream(request: pytest.FixtureRequest) -> bool:
    """Every provider test runs with replies read whole and streamed."""
    return request.param


@pytest.fixture
async def make_provider(
    kind: str,
    stream: bool,
    fake_llm_server: FakeLLMServer,  # noqa: F811
) -> AsyncIterator[MakeProvider]:
    """Builds providers of the current ``kind`` aimed at the fake server; closes them after."""
    made: list[Any] = []
    native.REFUSED.clear()  # what earlier tests' servers refused

    def make(
        *,
        retry: RetryPolicy = FAST,
        timeout_s: float = 10.0,
        base_url: str | None = None,
        **options: Any,
    ):
        options = {"stream": stream, "timeout_s": timeout_s, "retry": retry, **options}
        if kind == "openai":
            provider: Any = OpenAIProvider(
                "openai:gpt-4o-mini",
                model_name="gpt-4o-mini",
                api_key=API_KEY,
                base_url=base_url or fake_llm_server.openai_base_url,
                **options,
            )
        else:
            provider = AnthropicProvider(
                "anthropic:claude-test",
                model_name="claude-test",
                api_key=API_KEY,
                base_url=base_url or fake_llm_server.anthropic_base_url,
                **options,
            )
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def _request(**kwargs: Any) -> LLMRequest:
    return LLMRequest(
        [Message("system", "You are terse."), Message("user", "Say hello.")],
        purpose="test",
        max_tokens=64,
        **kwargs,
    )


def _api_key_env(kind: str) -> str:
    return "OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY"


# -- providers over HTTP ---------------------------------------------------------------------------


async def test_normal_reply(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    fake_llm_server.script(Reply("Hello there.", input_tokens=23, output_tokens=5))
    provider = make_provider()
    assert isinstance(provider, LLMProvider)

    response = await provider.complete(_request())

    assert response.text == "Hello there."
    assert (response.input_tokens, response.output_tokens) == (23, 5)
    assert response.attempts == 1
    assert response.model == provider.model
    assert 0 < response.latency_s < 5

    [sent] = fake_llm_server.requests
    body = sent.body
    assert body["model"] == provider.model_name
    assert body["max_tokens"] == 64
    if kind == "openai":
        assert sent.path == "/v1/chat/completions"
        assert sent.headers["authorization"] == f"Bearer {API_KEY}"
        assert body["messages"] == [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ]
        assert body["temperature"] == 0.0
    else:
        assert sent.path == "/v1/messages"
        # Older SDKs send x-api-key, newer ones a bearer token; either must carry the key.
        assert API_KEY in (
            sent.headers.get("x-api-key"),
            sent.headers.get("authorization", "").removeprefix("Bearer "),
        )
        assert "anthropic-version" in sent.headers
        assert body["system"] == "You are terse."
        assert body["messages"] == [{"role": "user", "content": "Say hello."}]


OPEN = {"type": "object", "properties": {"answer": {"type": "integer"}}}
"""A schema with an optional field: strict mode cannot take it as it is."""
CLOSED = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.mark.parametrize("schema", [OPEN, CLOSED], ids=["open", "closed"])
async def test_structured_replies_are_asked_for_natively(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
    schema: dict[str, Any],
) -> None:
    fake_llm_server.script(Reply('{"answer": 42}'))

    response = await make_provider().complete(_request(json_schema=schema, schema_name="Answer"))

    assert json.loads(response.text) == {"answer": 42}
    body = fake_llm_server.requests[0].body
    if kind == "openai":
        sent = body["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Answer"
        # Strict only where it keeps the schema's meaning; then every object is closed.
        assert sent["json_schema"]["strict"] is (schema is CLOSED)
        if schema is CLOSED:
            assert sent["json_schema"]["schema"]["additionalProperties"] is False
        system = body["messages"][0]["content"]
    else:
        # The reply is the input of a forced tool call, whose schema is the reply's.
        assert body["tools"] == [
            {
                "name": "Answer",
                "description": "Give your reply as this tool's input.",
                "input_schema": schema,
            }
        ]
        assert body["tool_choice"] == {"type": "tool", "name": "Answer"}
        system = body["system"]
    # The schema travels in the API's own field, not a second time in the prompt.
    assert system.startswith("You are terse.") and '"answer"' not in system


async def test_a_server_without_native_output_is_asked_with_the_prompt_and_remembered(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    refusal = (
        "response_format json_schema is not supported by this server"
        if kind == "openai"
        else "tools are not supported for this model"
    )
    fake_llm_server.script(Status(400, refusal), Reply('{"answer": 1}'), Reply('{"answer": 2}'))
    provider = make_provider()

    first = await provider.complete(_request(json_schema=OPEN))
    second = await make_provider().complete(_request(json_schema=OPEN))

    assert json.loads(first.text) == {"answer": 1} and json.loads(second.text) == {"answer": 2}
    assert first.attempts == 2 and second.attempts == 1
    refused, retried, remembered = (r.body for r in fake_llm_server.requests)
    if kind == "openai":
        assert refused["response_format"]["type"] == "json_schema"
        # JSON mode next, with the schema in the prompt, and so from then on.
        for body in (retried, remembered):
            assert body["response_format"] == {"type": "json_object"}
            assert '"answer"' in body["messages"][0]["content"]
    else:
        assert "tools" in refused
        for body in (retried, remembered):
            assert "tools" not in body and "tool_choice" not in body
            assert '"answer"' in body["system"]


async def test_a_400_about_something_else_is_not_taken_for_a_missing_feature(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    fake_llm_server.script(Status(400, "messages: the last message must be from the user"))

    with pytest.raises(LLMError, match="last message must be from the user") as caught:
        await make_provider().complete(_request(json_schema=OPEN))

    assert caught.value.attempts == 1 and len(fake_llm_server.requests) == 1
    assert not any(native.REFUSED.values())


async def test_native_output_can_be_switched_off(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    fake_llm_server.script(Reply('{"answer": 42}'))

    await make_provider(native_output=False).complete(_request(json_schema=OPEN))

    body = fake_llm_server.requests[0].body
    assert "tools" not in body
    assert body.get("response_format", {"type": "json_object"}) == {"type": "json_object"}
    system = body["messages"][0]["content"] if kind == "openai" else body["system"]
    assert '"answer"' in system


async def test_a_streamed_reply_tells_its_progress(
    kind: str,
    stream: bool,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    text = "The answer is forty-two, as computed."
    fake_llm_server.script(Reply(text, input_tokens=30, output_tokens=9))
    told: list[tuple[int, float]] = []

    response = await make_provider().complete(
        _request(on_progress=lambda chars, s: told.append((chars, s)))
    )

    assert response.text == text and (response.input_tokens, response.output_tokens) == (30, 9)
    assert fake_llm_server.requests[0].body.get("stream", False) is stream
    if stream:
        # Told when the text starts (then at most every few seconds): the first piece.
        assert told and 0 < told[0][0] <= len(text)
    else:
        assert told == []


@pytest.mark.parametrize("problem", ["stall", "cut"])
async def test_a_stream_that_stalls_or_breaks_is_retried(
    kind: str,
    stream: bool,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
    problem: str,
) -> None:
    if not stream:
        pytest.skip("a property of streamed replies")
    bad = (
        Reply("partial reply", stall_s=30)
        if problem == "stall"
        else Reply("x" * 90, stream_cut=True)
    )
    fake_llm_server.script(bad, Reply("whole reply"))
    reasons: list[str] = []
    started = time.monotonic()

    response = await make_provider(timeout_s=10, idle_timeout_s=0.5).complete(
        _request(on_retry=lambda attempt, why, wait: reasons.append(why))
    )

    assert response.text == "whole reply" and response.attempts == 2
    [why] = reasons
    if problem == "stall":
        # Found by the idle timeout, long before the attempt's 10 s.
        assert "stalled" in why and "nothing arrived for 0.5 s" in why, why
        assert time.monotonic() - started < 5
    else:
        assert "without saying it was complete" in why, why


async def test_a_stream_that_keeps_stalling_fails_with_a_clear_error(
    kind: str,
    stream: bool,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    if not stream:
        pytest.skip("a property of streamed replies")
    fake_llm_server.script(*[Reply("partial", stall_s=30)] * 2)
    provider = make_provider(
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01), idle_timeout_s=0.3
    )

    with pytest.raises(
        LLMTimeoutError, match=r"stalled after 2 attempts: nothing arrived for 0.3 s"
    ):
        await provider.complete(_request())


MID_STREAM_ERROR = {
    "openai": b'data: {"error": {"message": "overloaded mid-stream"}}\n\n',
    "anthropic": b"event: error\ndata: "
    b'{"type": "error", "error": {"type": "overloaded_error", "message": "overloaded mid-stream"}}'
    b"\n\n",
}


async def test_an_error_event_inside_a_stream_is_retried(
    kind: str,
    stream: bool,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    if not stream:
        pytest.skip("a property of streamed replies")
    fake_llm_server.script(
        Raw(MID_STREAM_ERROR[kind], content_type="text/event-stream"), Reply("after all")
    )
    reasons: list[str] = []

    response = await make_provider().complete(
        _request(on_retry=lambda attempt, why, wait: reasons.append(why))
    )

    assert response.text == "after all" and response.attempts == 2
    assert "error mid-reply: overloaded mid-stream" in reasons[0], reasons


async def test_a_stream_that_never_ends_is_cut_at_the_size_cap(
    kind: str,
    stream: bool,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not stream:
        pytest.skip("a property of streamed replies")
    from trinity.llm import sdk

    monkeypatch.setattr(sdk, "MAX_STREAMED_CHARS", 1_000)
    fake_llm_server.script(Reply("x" * 5_000))

    response = await make_provider().complete(_request())

    # Read up to the cap (a piece past it), then judged like any reply; nothing more is read.
    assert 1_000 < len(response.text) < 5_000 and response.attempts == 1
    assert "went past 1,000 characters without ending" in caplog.text


async def test_429_honours_retry_after(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    fake_llm_server.script(Status(429, "slow down", headers={"Retry-After": "1"}), Reply("finally"))

    response = await make_provider().complete(_request())

    assert response.text == "finally"
    assert response.attempts == 2
    first, second = fake_llm_server.requests
    # FAST's backoff is 0.01 s: only Retry-After explains a one-second gap.
    assert 0.9 <= second.arrived - first.arrived < 3


async def test_server_error_storm_gives_up_after_max_attempts(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    # One more good reply than allowed: a fifth attempt would succeed and fail the test.
    fake_llm_server.script(*[Status(500, "upstream exploded")] * 4, Reply("too late"))
    provider = make_provider()

    with pytest.raises(LLMError) as caught:
        await provider.complete(_request())

    error = caught.value
    assert not isinstance(error, LLMTimeoutError)
    assert (error.status, error.attempts) == (500, 4)
    assert len(fake_llm_server.requests) == 4
    message = str(error)
    assert message.startswith(f"{provider.model}: HTTP 500 from http://127.0.0.1:")
    assert "after 4 attempts" in message
    assert "upstream exploded" in message


async def test_hung_response_is_cut_by_the_timeout(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    fake_llm_server.script(Hang(seconds=10), Reply("never asked"))
    provider = make_provider(retry=RetryPolicy(max_attempts=1))

    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as caught:
        await provider.complete(_request(timeout_s=0.5))

    assert time.monotonic() - started < 3
    assert caught.value.attempts == 1
    assert len(fake_llm_server.requests) == 1
    assert "0.5 s" in str(caught.value)


async def test_trickling_response_is_cut_by_the_hard_timeout(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    # A byte every 0.1 s never trips the SDK's per-read timeout; only the hard limit ends it.
    fake_llm_server.script(Trickle(interval_s=0.1, seconds=10))
    provider = make_provider(retry=RetryPolicy(max_attempts=1), timeout_s=0.5)

    started = time.monotonic()
    with pytest.raises(LLMTimeoutError):
        await provider.complete(_request())

    assert time.monotonic() - started < 3


async def test_401_is_not_retried_and_never_shows_the_key(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    # Real servers echo (part of) a bad key; the error message must not.
    fake_llm_server.script(
        Status(401, f"Incorrect API key provided: {API_KEY}"), Reply("should not be reached")
    )

    with pytest.raises(LLMError) as caught:
        await make_provider().complete(_request())

    error = caught.value
    assert (error.status, error.attempts) == (401, 1)
    assert len(fake_llm_server.requests) == 1
    assert _api_key_env(kind) in str(error)
    assert API_KEY not in str(error)
    assert "HTTP 401" in str(error)


async def test_too_long_retry_after_fails_at_once(
    kind: str,
    make_provider: MakeProvider,
    fake_llm_server,  # noqa: F811
) -> None:
    fake_llm_server.script(Status(429, "quota", headers={"Retry-After": "120"}), Reply("no"))

    started = time.monotonic()
    with pytest.raises(LLMError) as caught:
        await make_provider().complete(_request())

    assert time.monotonic() - started < 2
    assert len(fake_llm_server.requests) == 1
    assert (caught.value.status, caught.value.attempts) == (429, 1)
    assert "120 s" in str(caught.value)


async def test_unreachable_server_is_retried_then_reported(
    kind: str, make_provider: MakeProvider
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    provider = make_provider(base_url=base, retry=RetryPolicy(3, 0.01, 0.02))

    with pytest.raises(LLMError) as caught:
        await provider.complete(_request())

    assert not isinstance(caught.value, LLMTimeoutError)
    assert caught.value.attempts == 3
    assert caught.value.status is None
    assert f"cannot reach http://127.0.0.1:{port}" in str(caught.value)


# -- Retry-After parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": "0"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    in_30_s = email.utils.formatdate(now + 30, usegmt=True)  # "Tue, 14 Nov 2023 22:13:50 GMT"
    assert parse_retry_after({"Retry-After": in_30_s}, now=now) == pytest.approx(30, abs=0.01)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0


def test_parse_retry_after_infinity_counts_as_too_long() -> None:
    assert parse_retry_after({"Retry-After": "inf"}) == float("inf")


@pytest.mark.parametrize(
    ("status", "headers", "retryable"),
    [
        (400, {}, False),
        (401, {}, False),
        (403, {}, False),
        (404, {}, False),
        (422, {}, False),
        (408, {}, True),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (529, {}, True),
        (500, {"x-should-retry": "false"}, False),  # the server overrules the status
        (400, {"X-Should-Retry": "true"}, True),
    ],
)
def test_http_failure_classification(status: int, headers: dict[str, str], retryable: bool) -> None:
    failure = http_failure(status, {**headers, "Retry-After": "3"}, "msg")
    assert (failure.retryable, failure.status, failure.kind) == (retryable, status, "status")
    # A wait only matters when a retry will follow.
    assert failure.retry_after_s == (3.0 if retryable else None)


# -- the retry helper on its own ------------------------------------------------------------------


class _Scripted:
    """A fake provider call: raises each given failure in turn, then returns "done"."""

    def __init__(self, *failures: AttemptFailure) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise _Failed(self.failures.pop(0))
        return "done"


class _Failed(Exception):
    def __init__(self, failure: AttemptFailure) -> None:
        self.failure = failure


def _classify(exc: Exception) -> AttemptFailure | None:
    return exc.failure if isinstance(exc, _Failed) else None


async def _run(
    call: Any, policy: RetryPolicy, waits: list[float] | None = None, **kwargs: Any
) -> Any:
    """call_with_retries with test defaults; the waits it asks for are appended to ``waits``."""

    async def record(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)

    kwargs.setdefault("timeout_s", 5.0)
    return await call_with_retries(
        call,
        classify=_classify,
        policy=policy,
        label="test:model",
        endpoint="http://llm.example",
        sleep=record,
        **kwargs,
    )


def _status(status: int, retry_after: float | None = None, message: str = "") -> AttemptFailure:
    return AttemptFailure(
        retryable=status in (408, 409, 429) or status >= 500,
        kind="status",
        status=status,
        retry_after_s=retry_after,
        message=message,
    )


async def test_helper_waits_as_long_as_the_server_asks() -> None:
    call = _Scripted(_status(429, retry_after=2.5), _status(503, retry_after=0.0))

    waits: list[float] = []
    result = await _run(call, RetryPolicy(base_delay_s=7), waits)

    assert (result.value, result.attempts) == ("done", 3)
    assert waits == [2.5, 0.0]


async def test_helper_refuses_a_retry_after_longer_than_allowed() -> None:
    call = _Scripted(_status(429, retry_after=120, message="quota exceeded"))
    waits: list[float] = []

    with pytest.raises(LLMError) as caught:
        await _run(call, RetryPolicy(max_retry_after_s=60), waits)

    assert call.calls == 1 and waits == []
    assert (caught.value.status, caught.value.attempts) == (429, 1)
    message = str(caught.value)
    assert message.startswith("test:model: HTTP 429 from http://llm.example")
    assert "120 s" in message and "60 s" in message and "quota exceeded" in message


async def test_helper_backs_off_exponentially_up_to_the_cap() -> None:
    call = _Scripted(*[_status(500)] * 5)
    policy = RetryPolicy(max_attempts=5, base_delay_s=1, max_delay_s=3, jitter=0.5)
    waits: list[float] = []

    with pytest.raises(LLMError) as caught:
        await _run(call, policy, waits, rand=lambda: 1.0)

    # 1, 2, 4→3 (the cap), 3; each with the largest jitter (half) removed. No wait after the last.
    assert waits == [0.5, 1.0, 1.5, 1.5]
    assert caught.value.attempts == 5 and call.calls == 5
    assert "after 5 attempts" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_helper_does_not_retry_client_errors(status: int) -> None:
    call = _Scripted(_status(status, message="nope"))

    with pytest.raises(LLMError) as caught:
        await _run(call, RetryPolicy(), api_key_env="SOME_API_KEY")

    assert call.calls == 1
    assert (caught.value.status, caught.value.attempts) == (status, 1)
    assert ("SOME_API_KEY" in str(caught.value)) == (status in (401, 403))


async def test_helper_wraps_unknown_exceptions() -> None:
    async def broken() -> None:
        raise ValueError("weird reply")

    with pytest.raises(LLMError, match="ValueError: weird reply") as caught:
        await _run(broken, RetryPolicy())

    assert isinstance(caught.value.__cause__, ValueError)


async def test_helper_hard_timeout_and_secret_redaction() -> None:
    async def slow() -> None:
        await asyncio.sleep(10)

    started = time.monotonic()
    with pytest.raises(LLMTimeoutError) as caught:
        await _run(slow, RetryPolicy(max_attempts=2, base_delay_s=0), timeout_s=0.05)
    assert time.monotonic() - started < 1
    assert caught.value.attempts == 2

    leaky = _Scripted(_status(401, message=f"bad key {API_KEY}"))
    with pytest.raises(LLMError) as caught:
        await _run(leaky, RetryPolicy(), secrets=(API_KEY,))
    assert API_KEY not in str(caught.value) and "***" in str(caught.value)


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="jitter"):
        RetryPolicy(jitter=2)
