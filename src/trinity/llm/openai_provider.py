"""OpenAI (and OpenAI-compatible servers) through the official ``openai`` SDK's Chat Completions."""

from __future__ import annotations

import time
from typing import Any

import openai

from trinity.llm.base import LLMRequest, LLMResponse, Message
from trinity.llm.retry import AttemptFailure, RetryPolicy
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

    def __init__(
        self,
        model: str,
        *,
        model_name: str,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        api_key_env: str = OPENAI_API_KEY_ENV,
    ) -> None:
        """Build the provider.

        Args:
            model: The full model string, e.g. ``openai:gpt-4o-mini`` (names it in errors).
            model_name: The model as the API knows it, e.g. ``gpt-4o-mini``.
            api_key: The API key; never shown in messages.
            base_url: Another OpenAI-compatible endpoint; ``None`` = OpenAI's.
            timeout_s: Default per-attempt timeout, when a request does not set one.
            retry: Retry policy; ``None`` = :class:`RetryPolicy` defaults.
            api_key_env: Where the key came from, named when the server refuses it.
        """
        client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        super().__init__(
            model,
            model_name=model_name,
            api_key=api_key,
            client=client,
            classify=classify_openai_error,
            timeout_s=timeout_s,
            retry=retry,
            api_key_env=api_key_env,
        )
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
