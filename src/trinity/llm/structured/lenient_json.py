"""Lenient JSON: find and parse the JSON value in a model's reply.

Models asked for JSON still wrap it in code fences and prose, leave trailing commas, write
Python literals and single or typographic quotes. This module holds the parser for the tokens
of :mod:`trinity.llm.structured.lexer`, the search that tries candidates in order of preference
within the :mod:`~trinity.llm.structured.limits`, and :func:`extract_json`, its public face.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from trinity.errors import StructuredOutputError
from trinity.llm.structured.lexer import (
    _DECODER,
    _describe,
    _scan_span,
    _string,
    _SyntaxProblem,
    _Token,
    _TooDeep,
    _Truncated,
    _Unclosed,
    _Work,
    _WorkLimit,
)
from trinity.llm.structured.limits import MAX_CANDIDATES, MAX_DEPTH, MAX_INPUT_CHARS

_OPENER = re.compile(r"[{\[]")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
_LEADING_SPACE = re.compile(r"[\s\ufeff]*")
_REASONING = re.compile(r"\A\s*<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
"""The reasoning a model (DeepSeek-R1, QwQ…) writes before its answer: its drafts are not the
answer. Only a closed block at the very start is dropped; the same tag later is content."""
_LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}


def _key(token: _Token, text: str) -> str:
    if token.kind == "string":
        return _string(token, text)
    if token.kind == "word" and _IDENTIFIER.fullmatch(token.value):
        return token.value  # unquoted keys, as in JavaScript
    raise _SyntaxProblem(token.pos, f"expected a property name but found {_describe(token, text)}")


def _scalar(token: _Token, text: str) -> Any:
    if token.kind == "string":
        return _string(token, text)
    if token.kind == "word":
        word = token.value
        if word in _LITERALS:
            return _LITERALS[word]
        if _NUMBER.fullmatch(word):
            try:
                return _DECODER.decode(word)
            except ValueError:  # more digits than int() accepts
                raise _SyntaxProblem(token.pos, "number too long") from None
    raise _SyntaxProblem(token.pos, f"expected a value but found {_describe(token, text)}")


# Parser states.
_VALUE, _KEY, _ITEM, _AFTER_VALUE = range(4)


def _parse_tokens(tokens: list[_Token], text: str) -> Any:
    """Parse the tokens of one balanced span, allowing trailing commas.

    Iterative (an explicit stack), so no input can exhaust Python's recursion limit.
    """
    containers: list[dict[str, Any] | list[Any]] = []
    keys: list[str] = []
    state = _VALUE
    index = 0
    while True:
        if index >= len(tokens):  # only for an unclosed span: the text looks cut off
            raise _Truncated(tokens[-1].pos, "unexpected end")
        token = tokens[index]
        index += 1
        if state == _VALUE:
            if token.kind == "{":
                containers.append({})
                keys.append("")
                state = _KEY
                continue
            if token.kind == "[":
                containers.append([])
                keys.append("")
                state = _ITEM
                continue
            value = _scalar(token, text)
        elif state == _KEY:
            if token.kind == "}":  # empty object, or a trailing comma
                value = containers.pop()
                keys.pop()
            else:
                keys[-1] = _key(token, text)
                if index >= len(tokens):
                    raise _Truncated(token.pos, "unexpected end")
                colon = tokens[index]
                if colon.kind != ":":
                    raise _SyntaxProblem(
                        colon.pos,
                        f"expected ':' after a property name but found {_describe(colon, text)}",
                    )
                index += 1
                state = _VALUE
                continue
        elif state == _ITEM:
            if token.kind == "]":  # empty array, or a trailing comma
                value = containers.pop()
                keys.pop()
            else:
                index -= 1  # the token starts the item
                state = _VALUE
                continue
        else:  # _AFTER_VALUE
            is_object = isinstance(containers[-1], dict)
            closer = "}" if is_object else "]"
            if token.kind == ",":
                state = _KEY if is_object else _ITEM
                continue
            if token.kind != closer:
                raise _SyntaxProblem(
                    token.pos, f"expected ',' or '{closer}' but found {_describe(token, text)}"
                )
            value = containers.pop()
            keys.pop()
        # A complete value: it is the result, or it goes into the enclosing container.
        if not containers:
            return value
        parent = containers[-1]
        if isinstance(parent, dict):
            parent[keys[-1]] = value
        else:
            parent.append(value)
        state = _AFTER_VALUE


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels deep (iteratively)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _line_column(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


class _Search:
    """Finds the JSON values of one reply, most likely answer first, within the work limits.

    Order: the whole reply if it is exactly one JSON value; then objects and arrays inside
    fenced code blocks; then objects and arrays anywhere, left to right. At each ``{`` or ``[``
    the strict parser is tried first (fast, exact) and the lenient scanner only when it fails.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise StructuredOutputError("the reply is not text", raw=repr(text))
        self.raw = text
        self.truncated = len(text) > MAX_INPUT_CHARS
        text = text[:MAX_INPUT_CHARS]
        # A byte-order mark in front confuses json; one inside a string value is content.
        lead = _LEADING_SPACE.match(text)
        if lead and "\ufeff" in lead.group():
            text = lead.group().replace("\ufeff", "") + text[lead.end() :]
        text = _REASONING.sub("", text, count=1)
        self.text = text
        self.work = _Work()
        self.candidates = 0
        self.exhausted = False
        self.problem: _SyntaxProblem | None = None
        self.problem_rank: tuple[bool, int] = (False, -1)

    def values(self) -> Iterator[Any]:
        """Yield candidate JSON values in order of preference."""
        whole = self.text.strip()
        if whole:
            try:
                value = _DECODER.decode(whole)
            except (ValueError, RecursionError):
                pass
            else:
                if not _deeper_than(value, MAX_DEPTH):
                    yield value
                    return
        found: set[int] = set()
        try:
            for match in _FENCE.finditer(self.text):
                yield from self._spans(match.start(1), match.end(1), found, fenced=True)
            yield from self._spans(0, len(self.text), found, fenced=False)
        except _WorkLimit:
            self.exhausted = True

    def _spans(self, start: int, stop: int, found: set[int], *, fenced: bool) -> Iterator[Any]:
        pos = start
        while True:
            match = _OPENER.search(self.text, pos, stop)
            if match is None:
                return
            begin = match.start()
            if begin in found:  # already yielded from a fenced block
                pos = begin + 1
                continue
            self.candidates += 1
            if self.candidates > MAX_CANDIDATES:
                raise _WorkLimit
            value, pos = self._parse_at(begin, stop, fenced)
            if value is not _NOTHING:
                found.add(begin)
                yield value

    def _parse_at(self, start: int, stop: int, fenced: bool) -> tuple[Any, int]:
        """The value at ``start`` (or ``_NOTHING``) and where to look for the next one."""
        try:
            value, end = _DECODER.raw_decode(self.text, start)
        except (ValueError, RecursionError):
            pass
        else:
            if end <= stop and not _deeper_than(value, MAX_DEPTH):
                return value, end
        try:
            tokens, end = _scan_span(self.text, start, stop, self.work)
        except _Unclosed as exc:
            return _NOTHING, self._unclosed(exc, start, stop, fenced)
        except _TooDeep as exc:
            self._note(exc, fenced)
            return _NOTHING, stop  # what lies inside is fragments of it; not worth the work
        except _SyntaxProblem as exc:
            self._note(exc, fenced)
            return _NOTHING, start + 1  # mismatched: the real value may start inside
        try:
            return _parse_tokens(tokens, self.text), end
        except _SyntaxProblem as exc:
            exc.tokens = exc.tokens or len(tokens)
            self._note(exc, fenced)
            return _NOTHING, end  # balanced but broken: its insides are fragments, skip them

    def _unclosed(self, problem: _Unclosed, start: int, stop: int, fenced: bool) -> int:
        """Tell a cut-off reply from a stray bracket; return where to look next.

        If the tokens up to the end read as JSON, the reply was cut off: anything found further
        in would be a fragment of it, so the search moves to ``stop``. Otherwise the bracket was
        prose (``use { to open``) and the real value may start right after it.
        """
        try:
            _parse_tokens(problem.scanned, self.text)
        except _Truncated:
            problem.message += " (the reply seems cut off)"
            self._note(problem, fenced)
            return stop
        except _SyntaxProblem as grammar:
            grammar.tokens = sum(1 for token in problem.scanned if token.pos <= grammar.pos)
            self._note(grammar, fenced)
        return start + 1

    def _note(self, problem: _SyntaxProblem, fenced: bool) -> None:
        """Keep the problem most worth reporting: fenced first, then the biggest candidate."""
        rank = (fenced, problem.tokens)
        if rank > self.problem_rank:
            self.problem, self.problem_rank = problem, rank

    def failure(self) -> StructuredOutputError:
        """The error to raise when no usable value was found."""
        if self.problem is not None:
            line, column = _line_column(self.text, self.problem.pos)
            message = f"invalid JSON at line {line} column {column}: {self.problem.message}"
        else:
            message = "no JSON object found in the reply"
        if self.exhausted:
            message += " (gave up: the reply is too large or irregular to search further)"
        if self.truncated:
            message += f" (only the first {MAX_INPUT_CHARS} characters were read)"
        return StructuredOutputError(message, raw=self.raw)


_NOTHING: Any = object()


def extract_json(text: str) -> Any:
    """Find and parse the JSON value in a model's reply.

    Accepts code fences, prose around the JSON, trailing commas, ``//`` and ``/* */`` comments,
    Python's ``True``/``False``/``None``, single-quoted and smart-quoted strings, unquoted keys,
    a byte-order mark. When several values are present, the whole reply (if it is one JSON value)
    wins, then the first object or array in a fenced block, then the first anywhere.

    Raises :class:`StructuredOutputError` (and nothing else) when no value can be found.
    """
    search = _Search(text)
    for value in search.values():
        return value
    raise search.failure()
