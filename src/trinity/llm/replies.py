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

import json
import math
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

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


class ReplyProblem(Exception):
    """A reply that is no reply: raised inside an attempt, it fails the call at once (retrying
    an HTML login page or a server's error object gets the same again)."""


def refuse_odd_body(body: Any, *, expected: str) -> None:
    """Raise :class:`ReplyProblem` when ``body`` is not a ``expected`` object
    (``chat.completion``, ``message``): a page of text or HTML, an error object sent with
    status 200, nothing."""
    if isinstance(body, str | bytes):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise ReplyProblem(
            f"the server answered with text, not a {expected} object "
            f"(a proxy, a login page or the wrong base URL?): {quote(text)}"
        )
    if body is None:
        raise ReplyProblem(f"the server sent an empty reply, not a {expected} object")
    error = field(body, "error")
    if error:
        message = field(error, "message") if not isinstance(error, str) else error
        raise ReplyProblem(f"the server reported an error: {quote(str(message or error))}")


def quote(text: str) -> str:
    """The first :data:`_QUOTE_CHARS` characters of what a server sent, tags and runs of
    whitespace squeezed out, as one line."""
    plain = _SPACES.sub(" ", _TAGS.sub(" ", clean_text(text))).strip()
    if len(plain) > _QUOTE_CHARS:
        plain = plain[:_QUOTE_CHARS] + "…"
    return repr(plain)


@dataclass(slots=True)
class Reading:
    """What one reply said, gathered from a whole body or piece by piece from a stream; raw
    values, judged only by :meth:`text` and :func:`usage`."""

    parts: list[str] = dataclass_field(default_factory=list)
    """The reply's text, in pieces."""
    calls: dict[int, list[Any]] = dataclass_field(default_factory=dict)
    """Native tool calls by index: ``[name, [argument pieces]]`` (the argument JSON may come
    in pieces on a stream)."""
    cut_off: bool = False
    input_tokens: Any = None
    output_tokens: Any = None
    chunks: int = 0
    """Stream events read (0 for a whole body)."""
    finished: bool = False
    """A stream's reply said it was complete (a ``finish_reason``, ``message_stop``)."""

    def add_text(self, text: Any) -> int:
        """Adds a piece of text; returns its length (for progress)."""
        if isinstance(text, str) and text:
            self.parts.append(text)
            return len(text)
        return 0

    def add_call(self, index: Any, name: Any = None, arguments: Any = None) -> int:
        """Adds (a piece of) a tool call; returns the argument characters added."""
        slot = self.calls.setdefault(
            index if isinstance(index, int) else len(self.calls),
            [
                None,
                [],
            ],
        )
        if isinstance(name, str) and name:
            slot[0] = name
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str) and arguments:
            slot[1].append(arguments)
            return len(arguments)
        return 0

    def text(self, reply_tool: str = "") -> str:
        """The reply as text for the structured layer.

        A reply that is a native tool call named ``reply_tool`` (the structure's name: how
        Anthropic's forced tool use answers) is the call's argument JSON. Calls of other
        tools are steps a model wrote as calls (some servers turn a model's output into
        ``tool_calls``): a JSON list of ``{id, tool, args}``, which the structured layer puts
        into the one list field a plan has.
        """
        text = clean_text("".join(self.parts))
        if text.strip() or not self.calls:
            return text
        calls = [self.calls[index] for index in sorted(self.calls)]
        for name, pieces in calls:
            if name == reply_tool:
                return clean_text("".join(pieces)) or "{}"
        steps = []
        for number, (name, pieces) in enumerate(calls, start=1):
            try:
                args = json.loads("".join(pieces) or "{}")
            except ValueError:
                args = "".join(pieces)
            steps.append({"id": f"step{number}", "tool": name, "args": args})
        return clean_text(json.dumps(steps, ensure_ascii=False))
