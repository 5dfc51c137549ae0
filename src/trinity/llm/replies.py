"""Trust nothing a model server returns: every field of a reply is checked and normalised here,
at the provider boundary, before any agent, budget or store sees it.

- **Token counts** must be non-negative integers no larger than :data:`MAX_TOKENS_PER_CALL`.
  A count that is missing, negative, absurd (2^64), ``null`` or not a number is replaced by an
  estimate from the text (4 characters a token), and the response says so
  (``usage_estimated``): the token budget keeps working, and the report can tell.
- **Text** loses NUL characters and lone surrogates (``\\ud83d``), which no store or JSON
  encoder accepts.
- **Bodies** that are not a completion (an HTML page with status 200, an ``{"error": …}`` object
  with status 200, nothing at all) become a :class:`~trinity.errors.LLMError` that quotes what
  the server sent, instead of a Python error deep in an SDK.
"""

from __future__ import annotations

import math
import re
from typing import Any

from trinity.errors import LLMError

MAX_TOKENS_PER_CALL = 10_000_000
"""More tokens than any model reads or writes in one call: a count above it is a broken server."""
CHARS_PER_TOKEN = 4
_QUOTE_CHARS = 300
_SURROGATES = re.compile("[\ud800-\udfff]")
_TAGS = re.compile(r"<[^>]{0,200}>")
_SPACES = re.compile(r"\s+")


def clean_text(text: Any) -> str:
    """A model's text as a plain, storable string: ``None`` is empty, NULs are dropped and
    lone surrogates become U+FFFD."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return _SURROGATES.sub("\ufffd", text)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def token_count(value: Any) -> int | None:
    """A reported token count, or ``None`` when it is not a sane one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            return None
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_PER_CALL:
        return None
    return value


def usage(
    reported_input: Any, reported_output: Any, *, prompt: str, reply: str
) -> tuple[int, int, bool]:
    """``(input_tokens, output_tokens, estimated)``: the reported counts where they are sane,
    estimates from ``prompt`` and ``reply`` where they are not."""
    input_tokens = token_count(reported_input)
    output_tokens = token_count(reported_output)
    estimated = input_tokens is None or output_tokens is None
    if input_tokens is None:
        input_tokens = estimate_tokens(prompt)
    if output_tokens is None:
        output_tokens = estimate_tokens(reply)
    return input_tokens, output_tokens, estimated


def field(source: Any, name: str) -> Any:
    """``source.name`` or ``source[name]``, whichever the SDK object (or dict) has; ``None``
    when it has neither."""
    if isinstance(source, dict):
        return source.get(name)
    value = getattr(source, name, None)
    if value is None:
        extra = getattr(source, "model_extra", None)
        if isinstance(extra, dict):
            value = extra.get(name)
    return value


def refuse_odd_body(body: Any, *, model: str, expected: str) -> None:
    """Raise :class:`LLMError` when ``body`` is not a ``expected`` object (``chat.completion``,
    ``message``): a page of text or HTML, an error object sent with status 200, nothing."""
    if isinstance(body, str | bytes):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise LLMError(
            f"{model}: the server answered with text, not a {expected} object "
            f"(a proxy, a login page or the wrong base URL?): {quote(text)}"
        )
    if body is None:
        raise LLMError(f"{model}: the server sent an empty reply, not a {expected} object")
    error = field(body, "error")
    if error:
        message = field(error, "message") if not isinstance(error, str) else error
        raise LLMError(f"{model}: the server reported an error: {quote(str(message or error))}")


def quote(text: str) -> str:
    """The first :data:`_QUOTE_CHARS` characters of what a server sent, tags and runs of
    whitespace squeezed out, as one line."""
    plain = _SPACES.sub(" ", _TAGS.sub(" ", clean_text(text))).strip()
    if len(plain) > _QUOTE_CHARS:
        plain = plain[:_QUOTE_CHARS] + "…"
    return repr(plain)
