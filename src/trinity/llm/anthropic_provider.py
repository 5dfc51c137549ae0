"""Anthropic's Claude models through the official ``anthropic`` SDK's Messages API."""

from __future__ import annotations

from typing import Any

import anthropic

from trinity.llm import native, replies
from trinity.llm.base import LLMRequest
from trinity.llm.replies import Reading
from trinity.llm.retry import AttemptFailure
from trinity.llm.sdk import SDKProvider, classify_sdk_error, json_schema_instruction

ANTHROPIC_API_KEY_ENV = "ANTHROPIC_API_KEY"
CACHE_FIELDS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def classify_anthropic_error(exc: Exception) -> AttemptFailure | None:
    """Map an ``anthropic`` SDK exception to an :class:`AttemptFailure` (``None``: not its own)."""
    # The SDK's own timeout text is a paragraph about long requests; this says it better.
    return classify_sdk_error(anthropic, exc, timeout_message="request timed out")


class AnthropicProvider(SDKProvider):
    """:class:`~trinity.llm.base.LLMProvider` for Anthropic's Messages API.

    A structured reply is asked for as a forced tool call whose input schema is the reply's
    schema, or with the schema in the system prompt where the server lacks tools
    (:mod:`trinity.llm.native`).
    """

    make_client = anthropic.AsyncAnthropic
    make_http_client = anthropic.DefaultAsyncHttpxClient
    key_env = ANTHROPIC_API_KEY_ENV
    classify = staticmethod(classify_anthropic_error)

    def _params(self, request: LLMRequest, refused: set[str]) -> tuple[dict[str, Any], list[str]]:
        tried: list[str] = []
        # The Messages API takes instructions in `system`, not as a message role.
        system_parts = [m.content for m in request.messages if m.role == "system"]
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
        schema = request.json_schema
        if schema is not None:
            if self.native_output and native.is_object_schema(schema) and "tool" not in refused:
                tool, choice = native.anthropic_tool(schema, request.schema_name)
                params["tools"] = [tool]
                params["tool_choice"] = choice
                tried.append("tool")
            else:
                system_parts.append(json_schema_instruction(schema))
        if system_parts:
            params["system"] = "\n\n".join(system_parts)
        if self.stream:
            params["stream"] = True
        return params, tried

    async def _attempt(
        self, params: dict[str, Any], request: LLMRequest, timeout: float
    ) -> tuple[Reading, dict[str, Any]]:
        reply = await self._client.messages.create(**params, timeout=timeout)
        if params.get("stream"):
            return await self._read_stream(reply, _absorb_event, request, _read_whole), {}
        dump = getattr(reply, "model_dump", None)
        raw = dump(mode="json", exclude_none=True, warnings=False) if dump is not None else {}
        return _read_whole(reply), raw


def _read_whole(reply: Any) -> Reading:
    """A whole ``message`` (an SDK object, or the dict a server sent instead of a stream).
    Nothing of it is trusted: see trinity.llm.replies."""
    replies.refuse_odd_body(reply, expected="message")
    reading = Reading(finished=True)
    blocks = replies.field(reply, "content")
    for index, block in enumerate(blocks if isinstance(blocks, list) else []):
        _add_block(reading, index, block)
    reading.cut_off = replies.field(reply, "stop_reason") == "max_tokens"
    _add_usage(reading, replies.field(reply, "usage"))
    return reading


def _add_block(reading: Reading, index: int, block: Any) -> int:
    kind = replies.field(block, "type")
    if kind == "text":
        return reading.add_text(replies.field(block, "text"))
    if kind == "tool_use":
        # A streamed tool call starts with an empty input and sends its JSON in pieces.
        given = replies.field(block, "input")
        return reading.add_call(index, replies.field(block, "name"), given or None)
    return 0


def _add_usage(reading: Reading, usage: Any) -> None:
    if usage is None:
        return
    uncached = replies.token_count(replies.field(usage, "input_tokens"))
    if uncached is not None:
        # With prompt caching, input_tokens counts only the uncached part of the prompt.
        cached = sum(replies.token_count(replies.field(usage, name)) or 0 for name in CACHE_FIELDS)
        reading.input_tokens = uncached + cached
    output = replies.field(usage, "output_tokens")
    if output is not None:
        reading.output_tokens = output


def _absorb_event(event: Any, reading: Reading) -> int:
    """One server-sent event of a streamed message into ``reading``; the characters added."""
    kind = replies.field(event, "type")
    index = replies.field(event, "index")
    if kind == "message_start":
        _add_usage(reading, replies.field(replies.field(event, "message"), "usage"))
    elif kind == "content_block_start":
        return _add_block(reading, index, replies.field(event, "content_block"))
    elif kind == "content_block_delta":
        delta = replies.field(event, "delta")
        if replies.field(delta, "type") == "input_json_delta":
            return reading.add_call(index, arguments=replies.field(delta, "partial_json"))
        return reading.add_text(replies.field(delta, "text"))
    elif kind == "message_delta":
        stop = replies.field(replies.field(event, "delta"), "stop_reason")
        if stop:
            reading.finished = True
            reading.cut_off = stop == "max_tokens"
        _add_usage(reading, replies.field(event, "usage"))
    elif kind == "message_stop":
        reading.finished = True
    return 0
