"""What the providers built on the official SDKs share.

The ``openai`` and ``anthropic`` SDKs are generated from the same template: the same exception
classes (``APITimeoutError`` ⊂ ``APIConnectionError``, ``APIStatusError``), the same client
options. So one classifier and one base class serve both; each provider keeps only what differs
(the request and response formats).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from trinity.llm.replies import quote
from trinity.llm.retry import (
    Attempted,
    AttemptFailure,
    RetryPolicy,
    call_with_retries,
    error_message,
    http_failure,
)

T = TypeVar("T")


def json_schema_instruction(schema: dict[str, Any]) -> str:
    """System-prompt text asking for one JSON object following ``schema``.

    The schema is a hint (the reply is validated elsewhere); in the prompt it works with every
    model and server, whatever structured-output features they have or lack.
    """
    return (
        "Reply with a single JSON object, and nothing else, that follows this JSON schema:\n"
        + json.dumps(_without_titles(schema), ensure_ascii=False, separators=(",", ":"))
    )


def _without_titles(schema: Any) -> Any:
    """A schema without pydantic's ``title`` keywords (``"title": "Reason"`` for a field named
    ``reason``): a fifth of a schema's tokens that tell a model nothing. A *property* named
    ``title`` stays: only the keyword goes."""
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _without_titles(sub) for name, sub in value.items()}
        else:
            out[key] = _without_titles(value)
    return out


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
        return AttemptFailure(
            retryable=True, kind="connection", message=f"{exc.message} {reason or ''}".strip()
        )
    if isinstance(exc, sdk.APIStatusError):
        return http_failure(
            exc.status_code, exc.response.headers, error_message(exc.body, exc.message)
        )
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

        The client is made with ``max_retries=0``: :meth:`_call` owns retrying, so every
        provider behaves alike and ``LLMResponse.attempts`` counts real HTTP calls.
        """
        self.model = model
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._api_key_env = api_key_env or self.key_env
        self._client = self.make_client(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._endpoint = str(self._client.base_url).rstrip("/")

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
