"""Turn what language models actually emit into validated pydantic models.

Models asked for JSON still wrap it in code fences and prose, leave trailing commas, write
Python literals, single or typographic quotes, and give a number where a string was asked for.
This module copes with that in three layers:

* :func:`extract_json` finds and parses the JSON value in a reply, leniently;
* :func:`parse_structured` validates it against a pydantic model, after forgiving simple type
  slips the model's JSON schema makes unambiguous;
* :func:`complete_structured` asks a provider, and feeds errors back to the model a bounded
  number of times.

Every failure to understand a reply is a :class:`~trinity.errors.StructuredOutputError` whose
message is short enough to show to the model. Work per reply is bounded (input size, nesting
depth, candidates tried, tokens scanned) so a pathological reply cannot stall a run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from trinity.errors import StructuredOutputError
from trinity.llm.base import LLMProvider, LLMRequest, LLMResponse, Message
from trinity.llm.native import lean_schema
from trinity.llm.replies import clean_text
from trinity.llm.structured.coercion import _coerce, _relevance, _reshape, _schema_of
from trinity.llm.structured.lenient_json import _Search, extract_json
from trinity.llm.structured.limits import (
    MAX_CANDIDATES,
    MAX_DEPTH,
    MAX_INPUT_CHARS,
    MAX_TOKENS,
    MAX_VALIDATED,
)
from trinity.security.secrets import redact

__all__ = [
    "MAX_CANDIDATES",
    "MAX_DEPTH",
    "MAX_INPUT_CHARS",
    "MAX_TOKENS",
    "MAX_VALIDATED",
    "complete_structured",
    "extract_json",
    "parse_structured",
]

T = TypeVar("T", bound=BaseModel)

# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)  # repr escapes control characters and lone surrogates
    return text if len(text) <= 40 else text[:37] + "..."


def _describe_errors(error: ValidationError, limit: int = 10) -> str:
    """One ``field.path: message`` line per validation error, short enough for a prompt."""
    lines: list[str] = []
    for item in error.errors(include_url=False, include_context=False):
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        line = f"{path}: {item['msg']}"
        value = item.get("input")
        if item["type"] != "missing" and isinstance(value, str | int | float | bool):
            line += f" (got {_short(value)})"
        if line not in lines:
            lines.append(line)
    shown = [f"- {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"- … and {len(lines) - limit} more")
    return "the reply does not match the expected structure:\n" + "\n".join(shown)


def parse_structured(text: str, model: type[T]) -> T:
    """Extract the JSON from a reply and validate it as ``model``, forgiving simple slips.

    Each JSON value the reply holds is tried in :func:`extract_json`'s order until one validates.
    Raises :class:`StructuredOutputError` (with ``.raw`` = the reply) listing each problem as
    ``field.path: message``.
    """
    schema = _schema_of(model)
    defs = schema.get("$defs", {})
    search = _Search(text)
    best: tuple[int, ValidationError] | None = None
    for count, value in enumerate(search.values(), start=1):
        data = _clean(_coerce(_reshape(value, schema), schema, defs))
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            relevance = _relevance(data, schema)
            if best is None or relevance > best[0]:
                best = (relevance, exc)
        if count >= MAX_VALIDATED:
            break
    if best is None:
        raise search.failure()
    raise StructuredOutputError(_describe_errors(best[1]), raw=text)


# --------------------------------------------------------------------------------------------
# Asking a provider, with repairs
# --------------------------------------------------------------------------------------------


def _accept(text: str, model: type[T], check: Callable[[T], None] | None) -> T:
    """Parse a reply and run the caller's semantic check; every failure is a
    :class:`StructuredOutputError` whose message can be shown to the model."""
    value = parse_structured(text, model)
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            raise StructuredOutputError(f"the reply failed a check: {exc}", raw=text) from exc
    return value


REPAIR_EXCERPT_CHARS = 4_000
"""How much of an unusable reply is sent back with the request to repair it."""


def _clip(text: str) -> str:
    if len(text) <= REPAIR_EXCERPT_CHARS:
        return text
    cut = len(text) - REPAIR_EXCERPT_CHARS
    return f"{text[:REPAIR_EXCERPT_CHARS]}\n[… {cut} more characters of this reply not shown]"


def _clean(value: Any) -> Any:
    """A parsed reply's strings (keys too) without NULs or lone surrogates, which a ``\\u0000``
    or ``\\ud83d`` escape inside the JSON puts there after the text itself was cleaned."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _repair_prompt(error: str, schema: dict[str, Any] | None) -> str:
    """The user message that asks the model to try again."""
    parts = [
        f"Your previous reply could not be used.\n{error}",
        "Reply again with only the corrected JSON: no prose, no code fences.",
    ]
    if schema:
        compact = json.dumps(
            lean_schema(schema), ensure_ascii=False, separators=(",", ":"), default=str
        )
        parts.append(f"The JSON must follow this schema:\n{compact}")
    return "\n\n".join(parts)


async def complete_structured(
    provider: LLMProvider,
    request: LLMRequest,
    model: type[T],
    *,
    max_repairs: int = 2,
    max_tokens_ceiling: int = 16_384,
    check: Callable[[T], None] | None = None,
    on_response: Callable[[LLMResponse], None] | None = None,
) -> T:
    """Ask ``provider`` for a reply that validates as ``model``, repairing up to ``max_repairs``.

    The request gets ``model``'s JSON schema unless it already has one. After a reply that does
    not parse, validate or pass ``check`` (a callable raising :class:`ValueError`), the reply and
    a message naming the errors are appended to a copy of the conversation and the model is
    asked again; a reply cut off at ``max_tokens`` is asked again with twice the room, up to
    ``max_tokens_ceiling``. ``on_response`` sees every response, failed ones included, so callers
    can count tokens. Provider errors propagate unchanged; the caller's request is never modified.

    Raises :class:`StructuredOutputError` with ``attempts`` = provider calls made when no reply
    is usable.
    """
    schema = request.json_schema
    if schema is None:
        try:
            schema = model.model_json_schema()
        except Exception:  # no schema for this model: the reply is still parsed and validated
            schema = None
    messages = list(request.messages)
    calls = 1 + max(0, max_repairs)
    error = ""
    text = ""
    for attempt in range(1, calls + 1):
        # A fresh list per call, so a provider that edits its request cannot change ours.
        # Redacted here, the one door to a model: no secret a tool printed reaches it.
        sent = [Message(m.role, redact(m.content)) for m in messages]
        call = dataclasses.replace(
            request,
            messages=sent,
            json_schema=schema,
            schema_name=request.schema_name if request.schema_name != "reply" else model.__name__,
        )
        response = await provider.complete(call)
        if on_response is not None:
            on_response(response)
        text = response.text
        try:
            return _accept(text, model, check)
        except StructuredOutputError as exc:
            error = str(exc)
        if response.cut_off:
            # The reply ran out of room, so asking again with the same room fails the same
            # way: the next call gets twice as much, up to the ceiling.
            error = (
                f"your reply was cut off after {request.max_tokens} tokens (max_tokens), so "
                f"its end is missing; reply again, completely and more briefly. ({error})"
            )
            room = min(max(request.max_tokens * 2, request.max_tokens), max_tokens_ceiling)
            request = dataclasses.replace(request, max_tokens=room)
        if attempt < calls:
            # Only the first part of a bad reply goes back: a 5 MB reply must not become a
            # 5 MB request, then a 10 MB one. The error says what was wrong with the whole.
            messages.append(Message(role="assistant", content=_clip(text)))
            messages.append(Message(role="user", content=_repair_prompt(error, schema)))
    raise StructuredOutputError(
        f"no valid structured output after {calls} attempt{'s' if calls > 1 else ''}: {error}",
        raw=text,
        attempts=calls,
    )
