"""OpenAI (and OpenAI-compatible servers) through the official ``openai`` SDK's Chat Completions."""

from __future__ import annotations

import time
from typing import Any

import openai

from trinity.llm.base import LLMRequest, LLMResponse, Message
from trinity.llm.retry import AttemptFailure
from trinity.llm.sdk import SDKProvider, classify_sdk_error, json_schema_instruction

OPENAI_API_KEY_ENV = "OPENAI_API_KEY"


def classify_openai_error(exc: Exception) -> AttemptFailure | None:
    """Map an ``openai`` SDK exception to an :class:`AttemptFailure` (``None``: not the SDK's)."""
    return classify_sdk_error(openai, exc)


class OpenAIProvider(SDKProvider):
    """:class:`~trinity.llm.base.LLMProvider` for OpenAI's Chat Completions API.

    Also serves OpenAI-compatible servers (vLLM, Ollama, LM Studio, OpenRouter…) through
    ``base_url``.
    """

    make_client = openai.AsyncOpenAI
    key_env = OPENAI_API_KEY_ENV
    classify = staticmethod(classify_openai_error)

    def __init__(self, model: str, **options: Any) -> None:
        super().__init__(model, **options)
        # OpenAI itself names the output limit max_completion_tokens (its reasoning models
        # reject max_tokens); compatible servers reliably know only the older max_tokens.
        official = self._client.base_url.host == "api.openai.com"
        self._limit_param = "max_completion_tokens" if official else "max_tokens"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Send one chat completion, with retries; see :class:`~trinity.llm.base.LLMProvider`."""
        timeout_s = self._timeout(request.timeout_s)
        params: dict[str, Any] = {
            "model": self.model_name,
            "messages": _chat_messages(request),
            "temperature": request.temperature,
            self._limit_param: request.max_tokens,
        }
        if request.json_schema is not None:
            # JSON mode (json_object) rather than strict json_schema output: every OpenAI model
            # and nearly every compatible server (vLLM, Ollama, LM Studio, Groq…) supports it,
            # whereas strict mode is missing on many servers and rejects ordinary schemas
            # (it wants additionalProperties: false and every property required). The schema
            # itself goes in the prompt, which also satisfies JSON mode's rule that the
            # messages mention JSON.
            params["response_format"] = {"type": "json_object"}

        started = time.monotonic()
        result = await self._call(
            lambda timeout: self._client.chat.completions.create(**params, timeout=timeout),
            timeout_s,
        )
        completion = result.value
        usage = completion.usage
        choices = completion.choices or []
        text = (choices[0].message.content or "") if choices else ""
        return LLMResponse(
            text=text,
            model=self.model,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            # The whole call, waits and retries included: what the caller waited.
            latency_s=time.monotonic() - started,
            attempts=result.attempts,
            raw=completion.model_dump(mode="json", exclude_none=True),
        )


def _chat_messages(request: LLMRequest) -> list[dict[str, str]]:
    messages: list[Message] = list(request.messages)
    if request.json_schema is not None:
        instruction = json_schema_instruction(request.json_schema)
        if messages and messages[0].role == "system":
            messages[0] = Message("system", f"{messages[0].content}\n\n{instruction}")
        else:
            messages.insert(0, Message("system", instruction))
    return [{"role": m.role, "content": m.content} for m in messages]
