"""Retries for LLM provider calls, the same for every provider.

The official SDKs can retry on their own, but each does it a little differently and hides what
happened. Providers therefore build their SDK clients with ``max_retries=0`` and run every call
through :func:`call_with_retries`, which

* retries what is worth retrying: HTTP 408, 409, 429 and 5xx (the statuses the SDKs retry),
  connection errors and timeouts;
* waits as the server asks (``Retry-After`` in seconds or as an HTTP date, ``retry-after-ms``),
  and otherwise backs off exponentially with jitter;
* gives up at once when the server asks for a longer wait than
  :attr:`RetryPolicy.max_retry_after_s`, or when the status cannot get better by retrying
  (400, 401, 403, 404, 422…);
* cuts every attempt with a hard :func:`asyncio.timeout`, because an SDK's own timeout is a
  per-read timeout that a server trickling one byte at a time never trips;
* turns the final failure into :class:`~trinity.errors.LLMError` /
  :class:`~trinity.errors.LLMTimeoutError` with a message that says who failed, how, and after
  how many attempts, and never contains the API key.

Each provider only supplies a *classifier*: a function that maps its SDK's exceptions to an
:class:`AttemptFailure`. :func:`http_failure` and :func:`error_message` do the parts of that
mapping that are the same for every HTTP API.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Generic, Literal, TypeVar

from trinity.errors import ConfigError, LLMError, LLMTimeoutError

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""4xx statuses worth retrying (request timeout, lock conflict, rate limit); every 5xx is too."""

_MAX_SERVER_MESSAGE = 500
"""Server error texts are cut to this many characters: enough to explain, short enough for a log."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a provider call is retried."""

    max_attempts: int = 4
    """Calls made at most, the first one included (1 = never retry)."""
    base_delay_s: float = 0.5
    """Backoff before the first retry; it doubles on each further retry."""
    max_delay_s: float = 20.0
    """Ceiling of the exponential backoff (a server's ``Retry-After`` may ask for more)."""
    max_retry_after_s: float = 60.0
    """Longest ``Retry-After`` honoured; a server asking for more fails the call at once."""
    jitter: float = 0.25
    """Fraction of each backoff removed at random, so that clients do not retry in lockstep."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(
                f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}"
            )
        for name in ("base_delay_s", "max_delay_s", "max_retry_after_s"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ConfigError(f"RetryPolicy.{name} must be >= 0, got {value}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter}")

    def backoff_s(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(retry - 1, 60))
        return delay * (1.0 - self.jitter * rand())


FailureKind = Literal["status", "timeout", "idle", "connection", "other"]


class StreamIdle(Exception):
    """A streamed reply sent nothing for longer than its idle timeout (raised by the provider's
    stream reader; retried like a timeout)."""


class StreamBroken(Exception):
    """A streamed reply ended before the event that says it is complete (retried like a
    dropped connection: its text may stop anywhere)."""


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """What a provider's classifier says about one failed attempt."""

    retryable: bool
    kind: FailureKind = "other"
    status: int | None = None
    """HTTP status, when the server answered."""
    retry_after_s: float | None = None
    """Wait the server asked for (``Retry-After``), when it asked."""
    message: str = ""
    """What went wrong, preferably in the server's words."""


Classifier = Callable[[Exception], "AttemptFailure | None"]
"""Maps an exception raised by one attempt to an :class:`AttemptFailure`; ``None`` = not known."""


@dataclass(frozen=True, slots=True)
class Attempted(Generic[T]):
    """A successful call's result and the number of calls it took."""

    value: T
    attempts: int


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks to wait before retrying, or ``None`` when it does not say.

    Understands ``retry-after-ms`` (milliseconds; sent by OpenAI and Anthropic, preferred as the
    more precise) and ``Retry-After`` as seconds (fractions accepted, as the SDKs do) or as an
    HTTP date. Malformed or negative values count as not given; a date in the past means 0.
    Infinite values are returned as ``inf``, so that the caller refuses them as too long.
    ``headers`` may be any mapping; names are matched case-insensitively.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            continue
        if math.isnan(value) or value < 0:
            continue
        return value / divisor
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" dates: RFC 9110 dates are always GMT
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status may succeed when the same request is sent again."""
    return status in RETRYABLE_STATUSES or status >= 500


def http_failure(status: int, headers: Mapping[str, str], message: str) -> AttemptFailure:
    """Classify an HTTP error response the way every provider should.

    Honours the non-standard ``x-should-retry`` header that OpenAI and Anthropic send to overrule
    the status-based decision, as their SDKs do.
    """
    retryable = is_retryable_status(status)
    lowered = {key.lower(): value for key, value in headers.items()}
    should_retry = lowered.get("x-should-retry", "").strip().lower()
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    return AttemptFailure(
        retryable=retryable,
        kind="status",
        status=status,
        retry_after_s=parse_retry_after(lowered) if retryable else None,
        message=message,
    )


def error_message(body: object, fallback: str) -> str:
    """The human-readable part of an API error body.

    OpenAI, Anthropic and most compatible servers answer ``{"error": {"message": ...}}``; others
    send a bare string or some other JSON, which is shown as is.
    """
    if isinstance(body, Mapping):
        error: Any = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return body["message"]
    if isinstance(body, str) and body.strip():
        return body.strip()
    return fallback


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        # Very short "secrets" (empty, a placeholder like "x") would mangle the message instead.
        if len(secret) >= 8:
            text = text.replace(secret, "***")
    return text


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_SERVER_MESSAGE:
        text = text[: _MAX_SERVER_MESSAGE - 1] + "…"
    return text


def _plural(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _status_hint(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        where = f" in the {api_key_env} environment variable" if api_key_env else ""
        return f" — check the API key{where} (and that it may use this model)"
    if status == 404:
        return " — check the model name and the base URL"
    return ""


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    classify: Classifier,
    policy: RetryPolicy,
    label: str,
    endpoint: str,
    timeout_s: float | None,
    api_key_env: str | None = None,
    secrets: Sequence[str] = (),
    on_retry: Callable[[int, str, float], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> Attempted[T]:
    """Run ``call`` until it succeeds, retrying as ``policy`` allows.

    Args:
        call: Makes one attempt (exactly one HTTP request: the SDK must not retry itself).
        classify: The provider's mapping of the exceptions ``call`` raises.
        policy: Attempts and delays.
        label: Who is calling, e.g. ``openai:gpt-4o-mini``; starts every error message.
        endpoint: The base URL called, for error messages.
        timeout_s: Hard limit for each attempt, whatever the SDK does; ``None`` = no limit.
        api_key_env: Environment variable holding the API key, named in 401/403 messages.
        secrets: Strings (the API key) that must never appear in an error message.
        on_retry: Told ``(attempt that failed, why, seconds to wait)`` before each retry.
        sleep: Waits between attempts; tests may pass a recorder.
        rand: Random source for the jitter, in [0, 1).

    Returns:
        The result and the number of attempts made.

    Raises:
        LLMTimeoutError: The last attempt timed out.
        LLMError: Any other failure, once retrying is pointless or the attempts are spent.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(timeout_s):
                value = await call()
            return Attempted(value, attempt)
        except TimeoutError as exc:
            # Our hard limit fired (the SDK's own timeouts arrive as SDK exceptions).
            failure = AttemptFailure(retryable=True, kind="timeout", message=str(exc))
            cause: Exception = exc
        except StreamIdle as exc:
            failure = AttemptFailure(retryable=True, kind="idle", message=str(exc))
            cause = exc
        except StreamBroken as exc:
            failure = AttemptFailure(retryable=True, message=str(exc))
            cause = exc
        except Exception as exc:
            failure = classify(exc) or AttemptFailure(
                retryable=False, message=f"{type(exc).__name__}: {exc}"
            )
            cause = exc

        what = _describe(failure, endpoint, timeout_s)
        server_says = _shorten(failure.message)
        detail = f": {server_says}" if server_says else ""

        if not failure.retryable:
            hint = _status_hint(failure.status, api_key_env) if failure.status else ""
            after = f" after {_plural(attempt)}" if attempt > 1 else ""
            message = f"{what}{after}{detail}{hint}"
            raise _error(label, message, failure, attempt, secrets) from cause

        if attempt >= policy.max_attempts:
            message = f"{what} after {_plural(attempt)}{detail}"
            raise _error(label, message, failure, attempt, secrets) from cause

        wait = failure.retry_after_s
        if wait is not None and wait > policy.max_retry_after_s:
            asked = "forever" if math.isinf(wait) else f"{wait:.0f} s"
            message = (
                f"{what}; the server asks to wait {asked} before retrying, longer than the "
                f"{policy.max_retry_after_s:g} s allowed (RetryPolicy.max_retry_after_s), "
                f"so giving up after {_plural(attempt)}{detail}"
            )
            raise _error(label, message, failure, attempt, secrets) from cause
        if wait is None:
            wait = policy.backoff_s(attempt, rand)
        if on_retry is not None:
            on_retry(attempt, _redact(f"{what}{detail}", secrets), wait)
        await sleep(wait)


def _describe(failure: AttemptFailure, endpoint: str, timeout_s: float | None) -> str:
    if failure.kind == "timeout":
        within = f" within {timeout_s:g} s" if timeout_s is not None else ""
        return f"no complete reply from {endpoint}{within}"
    if failure.kind == "idle":
        return f"the reply from {endpoint} stalled"
    if failure.kind == "connection":
        return f"cannot reach {endpoint}"
    if failure.status is not None:
        return f"HTTP {failure.status} from {endpoint}"
    return f"call to {endpoint} failed"


def _error(
    label: str, message: str, failure: AttemptFailure, attempts: int, secrets: Sequence[str]
) -> LLMError:
    error_type = LLMTimeoutError if failure.kind in ("timeout", "idle") else LLMError
    return error_type(
        _redact(f"{label}: {message}", secrets),
        status=failure.status,
        attempts=attempts,
        detail=_redact(failure.message, secrets),
    )
