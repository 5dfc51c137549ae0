"""OpenAI (and OpenAI-compatible servers) through the official ``openai`` SDK's Chat Completions."""

from __future__ import annotations

import time
from typing import Any

import openai

from trinity.llm import replies
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
            request.on_retry,
        )
        completion = result.value
        # Nothing of the reply is trusted: see trinity.llm.replies.
        replies.refuse_odd_body(completion, model=self.model, expected="chat.completion")
        choices = replies.field(completion, "choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        text = replies.clean_text(replies.field(replies.field(first, "message"), "content"))
        cut_off = replies.field(first, "finish_reason") == "length"
        usage = replies.field(completion, "usage")
        input_tokens, output_tokens, estimated = replies.usage(
            replies.field(usage, "prompt_tokens"),
            replies.field(usage, "completion_tokens"),
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
            attempts=result.attempts,
            raw=_dump(completion),
            cut_off=cut_off,
            usage_estimated=estimated,
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


def _dump(reply: Any) -> dict[str, Any]:
    dump = getattr(reply, "model_dump", None)
    return dump(mode="json", exclude_none=True, warnings=False) if dump is not None else {}
