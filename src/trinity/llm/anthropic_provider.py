"""Anthropic's Claude models through the official ``anthropic`` SDK's Messages API."""

from __future__ import annotations

import time
from typing import Any

import anthropic

from trinity.llm import replies
from trinity.llm.base import LLMRequest, LLMResponse
from trinity.llm.retry import AttemptFailure
from trinity.llm.sdk import SDKProvider, classify_sdk_error, json_schema_instruction

ANTHROPIC_API_KEY_ENV = "ANTHROPIC_API_KEY"


def classify_anthropic_error(exc: Exception) -> AttemptFailure | None:
    """Map an ``anthropic`` SDK exception to an :class:`AttemptFailure` (``None``: not its own)."""
    # The SDK's own timeout text is a paragraph about long requests; this says it better.
    return classify_sdk_error(anthropic, exc, timeout_message="request timed out")


class AnthropicProvider(SDKProvider):
    """:class:`~trinity.llm.base.LLMProvider` for Anthropic's Messages API."""

    make_client = anthropic.AsyncAnthropic
    key_env = ANTHROPIC_API_KEY_ENV
    classify = staticmethod(classify_anthropic_error)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send one message request, with retries; see :class:`~trinity.llm.base.LLMProvider`."""
        timeout_s = self._timeout(request.timeout_s)
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
        result = await self._call(
            lambda timeout: self._client.messages.create(**params, timeout=timeout),
            timeout_s,
            request.on_retry,
        )
        message = result.value
        # Nothing of the reply is trusted: see trinity.llm.replies.
        replies.refuse_odd_body(message, model=self.model, expected="message")
        blocks = replies.field(message, "content")
        text = replies.clean_text(
            "".join(
                replies.clean_text(replies.field(block, "text"))
                for block in (blocks if isinstance(blocks, list) else [])
                if replies.field(block, "type") == "text"
            )
        )
        cut_off = replies.field(message, "stop_reason") == "max_tokens"
        usage = replies.field(message, "usage")
        uncached = replies.token_count(replies.field(usage, "input_tokens"))
        # With prompt caching, input_tokens counts only the uncached part of the prompt.
        cached = sum(
            replies.token_count(replies.field(usage, name)) or 0
            for name in ("cache_creation_input_tokens", "cache_read_input_tokens")
        )
        input_tokens, output_tokens, estimated = replies.usage(
            None if uncached is None else uncached + cached,
            replies.field(usage, "output_tokens"),
            prompt="".join(m.content for m in request.messages),
            reply=text,
        )
        dump = getattr(message, "model_dump", None)
        return LLMResponse(
            text=text,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            # The whole call, waits and retries included: what the caller waited.
            latency_s=time.monotonic() - started,
            attempts=result.attempts,
            raw=dump(mode="json", exclude_none=True, warnings=False) if dump is not None else {},
            cut_off=cut_off,
            usage_estimated=estimated,
        )
