"""What the providers built on the official SDKs share.

The ``openai`` and ``anthropic`` SDKs are generated from the same template: the same exception
classes (``APITimeoutError`` ⊂ ``APIConnectionError``, ``APIStatusError``), the same client
options. So one classifier and one base class serve both; each provider keeps only what differs
(the request and response formats).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from trinity.errors import LLMError
from trinity.llm import native, replies
from trinity.llm.base import LLMRequest, LLMResponse
from trinity.llm.bodycap import cap_body
from trinity.llm.replies import Reading, ReplyProblem, quote
from trinity.llm.retry import (
    Attempted,
    AttemptFailure,
    RetryPolicy,
    StreamBroken,
    StreamIdle,
    call_with_retries,
    error_message,
    http_failure,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_STREAMED_CHARS = 4_000_000
"""A streamed reply is read up to this many characters, then the stream is closed: no
max_tokens comes near it (16,384 tokens are about 65,000 characters), so the server is broken,
and its text must not fill memory. What was read is judged like any reply (the structured
layer asks for a repair, sending back only an excerpt)."""
PROGRESS_EVERY_S = 5.0
"""A streamed reply tells its progress when its text starts, then at most this often."""


def json_schema_instruction(schema: dict[str, Any]) -> str:
    """System-prompt text asking for one JSON object following ``schema``.

    The schema is a hint (the reply is validated elsewhere); in the prompt it works with every
    model and server, whatever structured-output features they have or lack.
    """
    return "Reply with only a JSON object that follows this JSON schema:\n" + json.dumps(
        native.lean_schema(schema), ensure_ascii=False, separators=(",", ":")
    )


def classify_sdk_error(
    sdk: ModuleType, exc: Exception, *, timeout_message: str | None = None
) -> AttemptFailure | None:
    """Map an SDK exception to an :class:`AttemptFailure` (``None``: not the SDK's)."""
    # APITimeoutError subclasses APIConnectionError, so it must be tested first.
    if isinstance(exc, sdk.APITimeoutError):
        return AttemptFailure(
            retryable=True, kind="timeout", message=timeout_message or exc.message
        )
    if isinstance(exc, sdk.APIConnectionError):
        reason = exc.__cause__ or exc.__context__
        if isinstance(reason, ReplyProblem):  # raised while the SDK read (bodycap)
            return AttemptFailure(retryable=False, message=str(reason))
        return AttemptFailure(
            retryable=True, kind="connection", message=f"{exc.message} {reason or ''}".strip()
        )
    if isinstance(exc, sdk.APIStatusError) and exc.status_code >= 400:
        return http_failure(
            exc.status_code, exc.response.headers, error_message(exc.body, exc.message)
        )
    if type(exc) is sdk.APIError or isinstance(exc, sdk.APIStatusError):
        # An error event inside a stream that began with 200 (the base APIError is what the
        # SDKs raise for one; Anthropic's carries the 200): the server broke down while
        # answering (overloaded, an internal error), which another attempt may not meet.
        said = error_message(getattr(exc, "body", None), getattr(exc, "message", str(exc)))
        return AttemptFailure(
            retryable=True, message=f"the server reported an error mid-reply: {said}"
        )
    if isinstance(exc, ReplyProblem):
        return AttemptFailure(retryable=False, message=str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return AttemptFailure(
            retryable=False,
            message=f"the server's reply is not UTF-8 text (byte {exc.start}): a proxy, or not "
            "an API endpoint?",
        )
    if isinstance(exc, json.JSONDecodeError):
        if not exc.doc.strip():
            return AttemptFailure(retryable=False, message="the server sent an empty reply")
        return AttemptFailure(
            retryable=False,
            message=f"the server's reply is not valid JSON ({exc.msg}): {quote(exc.doc)}",
        )
    base = getattr(sdk, "OpenAIError", None) or getattr(sdk, "AnthropicError", None)
    if base is not None and isinstance(exc, base):
        return AttemptFailure(retryable=False, message=f"{type(exc).__name__}: {exc}")
    return None


class SDKProvider:
    """Base of the SDK providers: identity, timeouts, the retry loop and closing."""

    make_client: Callable[..., Any]
    """The SDK's async client class (``openai.AsyncOpenAI``, ``anthropic.AsyncAnthropic``)."""
    make_http_client: Callable[..., Any] | None = None
    """The SDK's HTTP client with its own defaults (``DefaultAsyncHttpxClient``; unset: the one
    of ``make_client``'s package, if it has one): Trinity adds a cap on how much of a body is
    read (:mod:`trinity.llm.bodycap`)."""
    key_env: str
    """The environment variable the key usually comes from, named when a server refuses it."""
    classify: Callable[[Exception], AttemptFailure | None]
    """Maps an exception of this provider's SDK to an :class:`AttemptFailure` (a staticmethod)."""

    def __init__(
        self,
        model: str,
        *,
        model_name: str,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        api_key_env: str | None = None,
        stream: bool = True,
        idle_timeout_s: float = 30.0,
        native_output: bool = True,
    ) -> None:
        """Build the provider.

        Args:
            model: The full model string, e.g. ``openai:gpt-4o-mini`` (names it in errors).
            model_name: The model as the API knows it, e.g. ``gpt-4o-mini``.
            api_key: The API key; never shown in messages.
            base_url: Another endpoint speaking the same API; ``None`` = the vendor's.
            timeout_s: Default per-attempt timeout, when a request does not set one.
            retry: Retry policy; ``None`` = :class:`RetryPolicy` defaults.
            api_key_env: Where the key came from (default :attr:`key_env`).
            stream: Stream replies: progress as text arrives, and ``idle_timeout_s``.
            idle_timeout_s: A stream that sends nothing for this long fails the attempt.
            native_output: Ask the server to enforce a structured reply's schema
                (:mod:`trinity.llm.native`), falling back when it cannot.

        The client is made with ``max_retries=0``: :meth:`_call` owns retrying, so every
        provider behaves alike and ``LLMResponse.attempts`` counts real HTTP calls.
        """
        self.model = model
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.stream = stream
        self.idle_timeout_s = idle_timeout_s
        self.native_output = native_output
        self._api_key = api_key
        self._api_key_env = api_key_env or self.key_env
        self._client = self.make_client(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
            **self._http_client(),
        )
        self._endpoint = str(self._client.base_url).rstrip("/")

    def _http_client(self) -> dict[str, Any]:
        make = self.make_http_client
        if make is None:
            package = importlib.import_module(self.make_client.__module__.partition(".")[0])
            make = getattr(package, "DefaultAsyncHttpxClient", None)
        if make is None:
            return {}
        return {"http_client": make(event_hooks={"response": [cap_body]})}

    # -- what each provider supplies ------------------------------------------------------------

    def _params(self, request: LLMRequest, refused: set[str]) -> tuple[dict[str, Any], list[str]]:
        """The SDK call's parameters, without the features the server ``refused``; and the
        optional features (:data:`trinity.llm.native.FEATURE_WORDS`) they use."""
        raise NotImplementedError

    async def _attempt(self, params: dict[str, Any], request: LLMRequest, timeout: float) -> Any:
        """One HTTP call: a whole reply as a :class:`Reading` and its raw dump."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send one request, with retries; see :class:`~trinity.llm.base.LLMProvider`."""
        started = time.monotonic()
        refused = native.refused(self._endpoint, self.model_name)
        earlier = 0  # calls a server refused a feature in
        while True:
            params, tried = self._params(request, refused)
            attempt = functools.partial(self._attempt, params, request)
            try:
                result = await self._call(
                    attempt, self._timeout(request.timeout_s), request.on_retry
                )
            except LLMError as exc:
                feature = (
                    native.refused_feature(exc.detail, tried) if exc.status in (400, 422) else None
                )
                if feature is None:
                    raise
                native.note_refusal(self._endpoint, self.model_name, feature, exc.detail)
                earlier += exc.attempts
                continue
            reading, raw = result.value
            return self._response(request, reading, raw, started, earlier + result.attempts)

    def _response(
        self, request: LLMRequest, reading: Reading, raw: dict[str, Any], started: float, calls: int
    ) -> LLMResponse:
        text = reading.text(native.schema_name(request.schema_name))
        input_tokens, output_tokens, estimated = replies.usage(
            reading.input_tokens,
            reading.output_tokens,
            prompt="".join(message.content for message in request.messages),
            reply=text,
        )
        return LLMResponse(
            text=text,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            # The whole call, waits and retries included: what the caller waited.
            latency_s=time.monotonic() - started,
            attempts=calls,
            raw=raw,
            cut_off=reading.cut_off,
            usage_estimated=estimated,
        )

    async def _read_stream(
        self,
        stream: Any,
        absorb: Callable[[Any, Reading], int],
        request: LLMRequest,
        whole: Callable[[Any], Reading],
    ) -> Reading:
        """Read a stream of events into a :class:`Reading` (``absorb`` takes one event and
        returns the characters it added), telling ``request.on_progress`` as text arrives.
        Nothing for :attr:`idle_timeout_s` fails the attempt: a server that stalls mid-reply
        is found long before the attempt's total timeout. A server that answered with
        something else than events (a whole reply: it ignores ``stream``; an HTML page; an
        error object) is read with ``whole``, which refuses what is not a reply."""
        response = getattr(stream, "response", None)
        kind = response.headers.get("content-type", "") if response is not None else ""
        if response is not None and "event-stream" not in kind:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    body = (await response.aread()).decode()
            except TimeoutError:
                raise StreamIdle(
                    f"nothing arrived for {self.idle_timeout_s:g} s (llm_idle_timeout_s)"
                ) from None
            finally:
                await stream.close()
            try:
                data = json.loads(body) if body.strip() else None
            except ValueError:
                data = body  # refused by `whole`, quoting it
            return whole(data)
        reading = Reading()
        started = time.monotonic()
        told: float | None = None
        received = 0
        events = stream.__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        event = await events.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise StreamIdle(
                        f"nothing arrived for {self.idle_timeout_s:g} s (llm_idle_timeout_s) "
                        f"after {received} characters"
                    ) from None
                reading.chunks += 1
                received += absorb(event, reading)
                if received > MAX_STREAMED_CHARS:
                    log.warning(
                        "%s: the streamed reply went past %s characters without ending "
                        "(max_tokens was %d); reading no more of it",
                        self.model,
                        f"{MAX_STREAMED_CHARS:,}",
                        request.max_tokens,
                    )
                    reading.finished = True
                    break
                now = time.monotonic()
                if (
                    request.on_progress is not None
                    and received
                    and (told is None or now - told >= PROGRESS_EVERY_S)
                ):
                    told = now
                    request.on_progress(received, now - started)
        finally:
            await stream.close()
        if not reading.chunks:
            raise ReplyProblem(
                "the server's streamed reply held no events (a proxy, a login page or the "
                "wrong base URL?)"
            )
        if not reading.finished:
            raise StreamBroken(
                f"the streamed reply ended after {received} characters without saying it was "
                "complete (the connection dropped?)"
            )
        return reading

    def _timeout(self, timeout_s: float | None) -> float:
        return timeout_s if timeout_s is not None else self.timeout_s

    async def _call(
        self,
        create: Callable[[float], Awaitable[T]],
        timeout_s: float,
        on_retry: Callable[[int, str, float], None] | None = None,
    ) -> Attempted[T]:
        """``create(timeout_s)`` with retries. The SDK's timeout ends a silent connection
        cleanly; the hard limit inside call_with_retries also ends one that trickles bytes and
        never finishes."""
        return await call_with_retries(
            lambda: create(timeout_s),
            classify=self.classify,
            policy=self.retry,
            label=self.model,
            endpoint=self._endpoint,
            timeout_s=timeout_s,
            api_key_env=self._api_key_env,
            secrets=(self._api_key,),
            on_retry=on_retry,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()
