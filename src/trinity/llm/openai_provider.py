"""OpenAI (and OpenAI-compatible servers) through the official ``openai`` SDK's Chat Completions."""

from __future__ import annotations

from typing import Any

import openai

from trinity.llm import native, replies
from trinity.llm.base import LLMRequest, Message
from trinity.llm.replies import Reading
from trinity.llm.retry import AttemptFailure
from trinity.llm.sdk import SDKProvider, classify_sdk_error, json_schema_instruction

OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
JSON_ONLY = "Reply with a single JSON object, and nothing else."


def classify_openai_error(exc: Exception) -> AttemptFailure | None:
    """Map an ``openai`` SDK exception to an :class:`AttemptFailure` (``None``: not the SDK's)."""
    return classify_sdk_error(openai, exc)


class OpenAIProvider(SDKProvider):
    """:class:`~trinity.llm.base.LLMProvider` for OpenAI's Chat Completions API.

    Also serves OpenAI-compatible servers (vLLM, Ollama, LM Studio, OpenRouter…) through
    ``base_url``. A structured reply is asked for with ``response_format: json_schema``
    (strict when the schema allows), then JSON mode, then the schema in the prompt alone, as far
    as the server supports (:mod:`trinity.llm.native`).
    """

    make_client = openai.AsyncOpenAI
    make_http_client = openai.DefaultAsyncHttpxClient
    key_env = OPENAI_API_KEY_ENV
    classify = staticmethod(classify_openai_error)

    def __init__(self, model: str, **options: Any) -> None:
        super().__init__(model, **options)
        # OpenAI itself names the output limit max_completion_tokens (its reasoning models
        # reject max_tokens); compatible servers reliably know only the older max_tokens.
        official = self._client.base_url.host == "api.openai.com"
        self._limit_param = "max_completion_tokens" if official else "max_tokens"

    def _params(self, request: LLMRequest, refused: set[str]) -> tuple[dict[str, Any], list[str]]:
        tried: list[str] = []
        params: dict[str, Any] = {
            "model": self.model_name,
            "temperature": request.temperature,
            self._limit_param: request.max_tokens,
        }
        schema = request.json_schema
        instruction = None
        if schema is not None:
            instruction = json_schema_instruction(schema)
            if (
                self.native_output
                and native.is_object_schema(schema)
                and "json_schema" not in refused
            ):
                params["response_format"] = native.openai_response_format(
                    schema, request.schema_name
                )
                tried.append("json_schema")
                instruction = JSON_ONLY  # the schema travels in response_format
            elif "json_object" not in refused:
                # JSON mode, which nearly every compatible server has; it wants the messages
                # to mention JSON, which the instruction does.
                params["response_format"] = {"type": "json_object"}
                tried.append("json_object")
        params["messages"] = _chat_messages(request.messages, instruction)
        if self.stream:
            params["stream"] = True
            if "stream_usage" not in refused:
                params["stream_options"] = {"include_usage": True}
                tried.append("stream_usage")
        return params, tried

    async def _attempt(
        self, params: dict[str, Any], request: LLMRequest, timeout: float
    ) -> tuple[Reading, dict[str, Any]]:
        reply = await self._client.chat.completions.create(**params, timeout=timeout)
        if params.get("stream"):
            return await self._read_stream(reply, _absorb_chunk, request, _read_whole), {}
        return _read_whole(reply), _dump(reply)


def _read_whole(reply: Any) -> Reading:
    """A whole ``chat.completion`` (an SDK object, or the dict a server sent instead of a
    stream). Nothing of it is trusted: see trinity.llm.replies."""
    replies.refuse_odd_body(reply, expected="chat.completion")
    reading = Reading(finished=True)
    choices = replies.field(reply, "choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = replies.field(first, "message")
    # A strict-mode refusal comes instead of content; as text, it goes back to the model.
    reading.add_text(replies.field(message, "content")) or reading.add_text(
        replies.field(message, "refusal")
    )
    _add_calls(reading, replies.field(message, "tool_calls"))
    reading.cut_off = replies.field(first, "finish_reason") == "length"
    usage = replies.field(reply, "usage")
    reading.input_tokens = replies.field(usage, "prompt_tokens")
    reading.output_tokens = replies.field(usage, "completion_tokens")
    return reading


def _absorb_chunk(chunk: Any, reading: Reading) -> int:
    """One ``chat.completion.chunk`` of a stream into ``reading``; the characters it added."""
    usage = replies.field(chunk, "usage")
    if usage is not None:  # the last chunk, with stream_options.include_usage
        reading.input_tokens = replies.field(usage, "prompt_tokens")
        reading.output_tokens = replies.field(usage, "completion_tokens")
    choices = replies.field(chunk, "choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    if first is None:
        return 0
    finish = replies.field(first, "finish_reason")
    if finish:
        reading.finished = True
        reading.cut_off = finish == "length"
    delta = replies.field(first, "delta")
    return (
        reading.add_text(replies.field(delta, "content"))
        + reading.add_text(replies.field(delta, "refusal"))
        + _add_calls(reading, replies.field(delta, "tool_calls"))
    )


def _add_calls(reading: Reading, calls: Any) -> int:
    added = 0
    for position, call in enumerate(calls if isinstance(calls, list) else []):
        function = replies.field(call, "function")
        index = replies.field(call, "index")
        added += reading.add_call(
            index if isinstance(index, int) else position,
            replies.field(function, "name"),
            replies.field(function, "arguments"),
        )
    return added


def _chat_messages(messages: list[Message], instruction: str | None) -> list[dict[str, str]]:
    sent: list[Message] = list(messages)
    if instruction is not None:
        if sent and sent[0].role == "system":
            sent[0] = Message("system", f"{sent[0].content}\n\n{instruction}")
        else:
            sent.insert(0, Message("system", instruction))
    return [{"role": m.role, "content": m.content} for m in sent]


def _dump(reply: Any) -> dict[str, Any]:
    dump = getattr(reply, "model_dump", None)
    return dump(mode="json", exclude_none=True, warnings=False) if dump is not None else {}
