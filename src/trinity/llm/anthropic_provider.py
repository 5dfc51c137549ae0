"""Anthropic's Claude models through the official ``anthropic`` SDK's Messages API."""

from __future__ import annotations

import time
from typing import Any

import anthropic

from trinity.llm.base import LLMRequest, LLMResponse
from trinity.llm.openai_provider import json_schema_instruction
from trinity.llm.retry import (
    AttemptFailure,
    RetryPolicy,
    call_with_retries,
    error_message,
    http_failure,
)

ANTHROPIC_API_KEY_ENV = "ANTHROPIC_API_KEY"


def classify_anthropic_error(exc: Exception) -> AttemptFailure | None:
    """Map an ``anthropic`` SDK exception to an :class:`AttemptFailure` (``None``: not its own)."""
    # APITimeoutError subclasses APIConnectionError, so it must be tested first.
    if isinstance(exc, anthropic.APITimeoutError):
        # The SDK's own text is a paragraph about long requests; the helper says it better.
        return AttemptFailure(retryable=True, kind="timeout", message="request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        reason = exc.__cause__ or exc.__context__
        return AttemptFailure(
            retryable=True, kind="connection", message=f"{exc.message} {reason or ''}".strip()
        )
    if isinstance(exc, anthropic.APIStatusError):
        return http_failure(
            exc.status_code, exc.response.headers, error_message(exc.body, exc.message)
        )
    if isinstance(exc, anthropic.AnthropicError):
        return AttemptFailure(retryable=False, message=f"{type(exc).__name__}: {exc}")
    return None


class AnthropicProvider:
    """:class:`~trinity.llm.base.LLMProvider` for Anthropic's Messages API."""

    def __init__(
        self,
        model: str,
        *,
        model_name: str,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        api_key_env: str = ANTHROPIC_API_KEY_ENV,
    ) -> None:
        """Build the provider.

        Args:
            model: The full model string, e.g. ``anthropic:claude-sonnet-4-5`` (names it in errors).
            model_name: The model as the API knows it.
            api_key: The API key; never shown in messages.
            base_url: Another Anthropic-compatible endpoint; ``None`` = Anthropic's.
            timeout_s: Default per-attempt timeout, when a request does not set one.
            retry: Retry policy; ``None`` = :class:`RetryPolicy` defaults.
            api_key_env: Where the key came from, named when the server refuses it.
        """
        self.model = model
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._api_key_env = api_key_env
        # max_retries=0: call_with_retries owns retrying (see trinity.llm.retry).
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._endpoint = str(self._client.base_url).rstrip("/")

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send one message request, with retries; see :class:`~trinity.llm.base.LLMProvider`."""
        timeout_s = request.timeout_s if request.timeout_s is not None else self.timeout_s
        # The Messages API takes instructions in `system`, not as a message role.
        system_parts = [m.content for m in request.messages if m.role == "system"]
        if request.json_schema is not None:
            # A prompt instruction rather than output_config's structured outputs, which only
            # some models support and which restrict the schema; the reply is validated anyway.
            system_parts.append(json_schema_instruction(request.json_schema))
        params: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": request.max_tokens,
            # No temperature: the Messages API of the anthropic SDK we build on (2.x) no longer
            # has sampling parameters, so LLMRequest.temperature is not sent to Claude.
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if system_parts:
            params["system"] = "\n\n".join(system_parts)

        started = time.monotonic()
        result = await call_with_retries(
            # The SDK timeout ends a silent connection cleanly; the hard limit inside
            # call_with_retries also ends one that trickles bytes and never finishes.
            lambda: self._client.messages.create(**params, timeout=timeout_s),
            classify=classify_anthropic_error,
            policy=self.retry,
            label=self.model,
            endpoint=self._endpoint,
            timeout_s=timeout_s,
            api_key_env=self._api_key_env,
            secrets=(self._api_key,),
        )
        message = result.value
        usage = message.usage
        text = "".join(block.text for block in message.content if block.type == "text")
        # With prompt caching, input_tokens counts only the uncached part of the prompt.
        input_tokens = (
            usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        return LLMResponse(
            text=text,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=usage.output_tokens,
            # The whole call, waits and retries included: what the caller waited.
            latency_s=time.monotonic() - started,
            attempts=result.attempts,
            raw=message.model_dump(mode="json", exclude_none=True),
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()
