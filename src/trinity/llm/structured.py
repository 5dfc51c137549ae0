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
import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from trinity.errors import StructuredOutputError
from trinity.llm.base import LLMProvider, LLMRequest, LLMResponse, Message

T = TypeVar("T", bound=BaseModel)

MAX_INPUT_CHARS = 1_000_000
"""Only this many characters of a reply are searched; real structured replies are far smaller."""
MAX_DEPTH = 100
"""Deepest nesting accepted; deeper values are rejected instead of risking deep recursion."""
MAX_CANDIDATES = 64
"""Most places in one reply where a JSON value is tried."""
MAX_TOKENS = 100_000
"""Most tokens the lenient scanner reads for one reply, all candidates together."""
MAX_VALIDATED = 8
"""Most JSON values of one reply that :func:`parse_structured` validates against the model."""

# --------------------------------------------------------------------------------------------
# Lenient JSON: tokenizer, balanced-bracket scanner, parser
# --------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder(strict=False)  # strict=False: models put raw newlines in strings

_SPACE = re.compile(r"[\s\ufeff]+")
_WORD = re.compile(r"(?:[^\s\ufeff{}\[\]:,\"\u201c\u201d\u201e\u2018/]|/(?![/*]))+")
_OPENER = re.compile(r"[{\[]")
_DOUBLE_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_SMART_DOUBLE_BODY = re.compile(r"[^\u201c\u201d\\]*(?:\\.[^\u201c\u201d\\]*)*", re.S)
_SMART_SINGLE_BODY = re.compile(r"[^\u2019\\]*(?:\\.[^\u2019\\]*)*", re.S)
_BODY_FIX = re.compile(r'\\(u[0-9a-fA-F]{4}|.)?|"', re.S)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_SINGLE_QUOTE_CLOSE = re.compile(r"'(?=[\s\ufeff]*(?:[,:}\]]|$))")
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
_LEADING_SPACE = re.compile(r"[\s\ufeff]*")

_SMART_DOUBLE_OPENERS = "\u201c\u201d\u201e"
_SMART_DOUBLE_CLOSERS = "\u201c\u201d"
_PUNCTUATION = frozenset("{}[]:,")
_OPENERS = frozenset("{[")
_CLOSERS = frozenset("}]")
_CLOSER_OF = {"{": "}", "[": "]"}
_VALUE_POSITION = frozenset("{[,:")
"""Tokens after which a single quote opens a string (elsewhere it is an apostrophe)."""
_JSON_ESCAPES = frozenset('"\\/bfnrt')
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


class _Token(NamedTuple):
    kind: str
    """One of ``{ } [ ] : ,``, ``string`` or ``word`` (a bare literal, number or identifier)."""
    value: Any
    """The word's text; for a string, where its body starts and ends (decoded only when parsed,
    so that scanning a candidate that turns out unbalanced costs no decoding)."""
    pos: int


class _SyntaxProblem(Exception):
    """Internal: a candidate is not (lenient) JSON. Never leaves this module."""

    def __init__(self, pos: int, message: str, tokens: int = 0) -> None:
        self.pos = pos
        self.message = message
        self.tokens = tokens
        super().__init__(message)


class _Unclosed(_SyntaxProblem):
    """Internal: the reply (or code block) ends inside a candidate's brackets or a string."""

    def __init__(self, pos: int, message: str, scanned: list[_Token]) -> None:
        super().__init__(pos, message, len(scanned))
        self.scanned = scanned


class _TooDeep(_SyntaxProblem):
    """Internal: a candidate nests deeper than :data:`MAX_DEPTH`."""


class _Truncated(_SyntaxProblem):
    """Internal: the tokens ran out while the parser still expected more."""


class _WorkLimit(Exception):
    """Internal: the reply needs more scanning than :data:`MAX_TOKENS` allows."""


def _decode_body(body: str) -> str:
    """Decode a string literal's body the JSON way, keeping bad escapes as literal text.

    Unescaped double quotes (legal in single- or smart-quoted strings) are escaped, ``\\'`` becomes
    a quote, and any escape JSON does not know keeps its backslash; after that ``json`` accepts it.
    """

    def fix(match: re.Match[str]) -> str:
        if match.group() == '"':
            return '\\"'
        escape = match.group(1)
        if escape is None:  # a lone backslash at the very end
            return "\\\\"
        if len(escape) == 5 or escape in _JSON_ESCAPES:
            return match.group()
        if escape == "'":
            return "'"
        return "\\\\" + escape

    return _DECODER.decode('"' + _BODY_FIX.sub(fix, body) + '"')


class _Lexer:
    """Splits ``text[pos:stop]`` into JSON-ish tokens, skipping whitespace and comments."""

    def __init__(self, text: str, pos: int, stop: int, work: _Work) -> None:
        self.text = text
        self.pos = pos
        self.stop = stop
        self.work = work
        self.previous = ""

    def next_token(self) -> _Token | None:
        """The next token, or ``None`` at the end of the range."""
        text, stop = self.text, self.stop
        while True:
            pos = self.pos
            if pos >= stop:
                return None
            space = _SPACE.match(text, pos, stop)
            if space:
                self.pos = space.end()
            elif text.startswith(("//", "/*"), pos):
                self._skip_comment(pos)
            else:
                break
        char = text[pos]
        if char in _PUNCTUATION:
            self.pos = pos + 1
            token = _Token(char, char, pos)
        elif char == '"':
            token = self._quoted(pos, _DOUBLE_BODY, '"')
        elif char in _SMART_DOUBLE_OPENERS:  # “…”, ”…”, „…“
            token = self._quoted(pos, _SMART_DOUBLE_BODY, _SMART_DOUBLE_CLOSERS)
        elif char == "\u2018":  # left and right single quotation marks
            token = self._quoted(pos, _SMART_SINGLE_BODY, "\u2019")
        elif char == "'" and self.previous in _VALUE_POSITION:
            token = self._single_quoted(pos)
        else:
            word = _WORD.match(text, pos, stop)
            end = word.end() if word else pos + 1
            self.pos = end
            token = _Token("word", text[pos:end], pos)
        self.previous = token.kind
        return token

    def _skip_comment(self, pos: int) -> None:
        text, stop = self.text, self.stop
        if text[pos + 1] == "/":
            end = text.find("\n", pos, stop)
            self.pos = stop if end < 0 else end + 1
        else:
            end = text.find("*/", pos + 2, stop)
            self.pos = stop if end < 0 else end + 2

    def _quoted(self, pos: int, body: re.Pattern[str], closers: str) -> _Token:
        end = body.match(self.text, pos + 1, self.stop).end()  # type: ignore[union-attr]
        if end >= self.stop or self.text[end] not in closers:
            raise _SyntaxProblem(pos, "unterminated string")
        self.pos = end + 1
        return _Token("string", (pos + 1, end), pos)

    def _single_quoted(self, pos: int) -> _Token:
        """A single-quoted string; a quote only closes it when a delimiter follows.

        That keeps apostrophes inside (``'it's done'``) part of the string.
        """
        end = self.work.single_quote_close(self.text, pos + 1, self.stop)
        if end < 0:
            raise _SyntaxProblem(pos, "unterminated string")
        self.pos = end + 1
        return _Token("string", (pos + 1, end), pos)


def _escaped(text: str, pos: int) -> bool:
    """Whether ``text[pos]`` follows an odd number of backslashes.

    Only called inside a string literal, so the run always stops at the opening quote.
    """
    count = 0
    while pos - count > 0 and text[pos - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _string(token: _Token, text: str) -> str:
    """The decoded value of a string token."""
    start, end = token.value
    try:
        return _decode_body(text[start:end])
    except ValueError:  # not expected after _decode_body's fixes; report it, never raise it
        raise _SyntaxProblem(token.pos, "invalid string") from None


def _describe(token: _Token, text: str) -> str:
    """A short, safe description of a token for an error message."""
    if token.kind in _PUNCTUATION:
        return f"'{token.kind}'"
    if token.kind == "string":
        start, end = token.value
        body = text[start : min(end, start + 20)] + ("…" if end - start > 20 else "")
        return f"string {body!r}"
    word = token.value if len(token.value) <= 20 else token.value[:20] + "…"
    return repr(word)  # repr escapes control characters and lone surrogates


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


class _Work:
    """Work done on one reply, across all its candidates: a token budget, and a memo."""

    def __init__(self) -> None:
        self.left = MAX_TOKENS
        self._closes: dict[int, tuple[int, int]] = {}

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _WorkLimit

    def single_quote_close(self, text: str, search: int, stop: int) -> int:
        """Where the single-quoted string whose body starts at ``search`` ends (-1: nowhere).

        A quote closes it only when a delimiter follows. Candidates are retried from every
        bracket, so the same tail would be searched again and again; the last answer is kept,
        as it holds for any search starting between its start and the quote it found.
        """
        memo = self._closes.get(stop)
        if memo is not None and memo[0] <= search <= (memo[1] if memo[1] >= 0 else stop):
            return memo[1]
        start = search
        while True:
            closing = _SINGLE_QUOTE_CLOSE.search(text, search, stop)
            end = -1 if closing is None else closing.start()
            if end < 0 or not _escaped(text, end):
                self._closes[stop] = (start, end)
                return end
            search = end + 1


def _scan_span(text: str, start: int, stop: int, work: _Work) -> tuple[list[_Token], int]:
    """Tokens of the balanced ``{…}`` or ``[…]`` starting at ``start``, and the index after it.

    Brackets inside string literals and comments do not count. Raises :class:`_Unclosed` when
    a bracket or string is still open at ``stop``, :class:`_TooDeep` past :data:`MAX_DEPTH`,
    and :class:`_SyntaxProblem` for a closing bracket of the wrong kind.
    """
    lexer = _Lexer(text, start, stop, work)
    tokens: list[_Token] = []
    stack: list[_Token] = []
    while True:
        try:
            token = lexer.next_token()
        except _SyntaxProblem as exc:  # a string runs to the end: unclosed, like a bracket
            raise _Unclosed(exc.pos, exc.message, tokens) from None
        if token is None:
            opener = stack[-1]
            raise _Unclosed(opener.pos, f"'{opener.kind}' is never closed", tokens)
        work.spend()
        tokens.append(token)
        if token.kind in _OPENERS:
            stack.append(token)
            if len(stack) > MAX_DEPTH:
                message = f"nested deeper than {MAX_DEPTH} levels"
                raise _TooDeep(token.pos, message, len(tokens))
        elif token.kind in _CLOSERS:
            expected = _CLOSER_OF[stack[-1].kind]
            if token.kind != expected:
                message = f"expected '{expected}' but found '{token.kind}'"
                raise _SyntaxProblem(token.pos, message, len(tokens))
            stack.pop()
            if not stack:
                return tokens, lexer.pos


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


# --------------------------------------------------------------------------------------------
# Schema-guided forgiveness and validation
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, or ``{}`` when it has none (then nothing is coerced).

    Cached: building a schema costs far more than parsing a typical reply. Never mutated.
    """
    try:
        return model.model_json_schema()
    except Exception:  # a field type without a JSON schema: coercion is only a nicety
        return {}


def _resolve(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and single-item ``allOf``) to the schema node that describes a value."""
    for _ in range(32):  # a bound, in case of a self-referencing alias
        if not isinstance(node, dict):
            return {}
        if "$ref" in node and isinstance(node["$ref"], str):
            node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node
    return {}


def _non_null_branch(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    """For ``X | None`` (``anyOf`` with one non-null branch), the schema of ``X``."""
    branches = node.get("anyOf")
    if not isinstance(branches, list):
        return None
    others = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    return _resolve(others[0], defs) if len(others) == 1 else None


def _is_array(node: Any, defs: dict[str, Any]) -> bool:
    node = _resolve(node, defs)
    node = _non_null_branch(node, defs) or node
    return node.get("type") == "array"


def _coerce(value: Any, node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """Forgive the type slips the schema makes unambiguous; leave everything else to pydantic.

    * a number where a string is expected becomes its text;
    * a single value where an array is expected becomes a one-item array;
    * a boolean written as text with spaces around it loses them (pydantic does the rest).

    Unions other than ``X | None`` are left alone: which branch was meant is not clear.
    """
    if depth > MAX_DEPTH or value is None:
        return value
    node = _resolve(node, defs)
    if "anyOf" in node:
        branch = _non_null_branch(node, defs)
        return value if branch is None else _coerce(value, branch, defs, depth + 1)
    kind = node.get("type")
    if kind == "string":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif kind == "boolean":
        if isinstance(value, str):
            return value.strip()
    elif kind == "array":
        items = value if isinstance(value, list) else [value]
        item_schema = node.get("items")
        if not isinstance(item_schema, dict):
            return items
        coerced = []
        for item in items:
            coerced.append(_coerce(item, item_schema, defs, depth + 1))
        return coerced
    elif kind == "object" and isinstance(value, dict):
        properties = node.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        extra = node.get("additionalProperties")
        result = {}
        for key, item in value.items():
            item_schema = properties.get(key, extra)
            fits = isinstance(item_schema, dict)
            result[key] = _coerce(item, item_schema, defs, depth + 1) if fits else item
        return result
    return value


def _reshape(value: Any, schema: dict[str, Any]) -> Any:
    """Fix the top-level shape: unwrap ``{"plan": {...}}``, wrap a bare list.

    A single-key object whose key is not a field and whose value holds the model's fields is a
    wrapper; a top-level array goes into the model's only array field, if it has exactly one.
    """
    defs = schema.get("$defs", {})
    properties = _resolve(schema, defs).get("properties")
    if not isinstance(properties, dict) or not properties:
        return value
    array_fields = [name for name, node in properties.items() if _is_array(node, defs)]
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key not in properties:
            holds_fields = isinstance(inner, dict) and bool(properties.keys() & inner.keys())
            holds_items = isinstance(inner, list) and len(array_fields) == 1
            if holds_fields or holds_items:
                value = inner
    if isinstance(value, list) and len(array_fields) == 1:
        value = {array_fields[0]: value}
    return value


def _relevance(value: Any, schema: dict[str, Any]) -> int:
    """How many of the model's fields a candidate names: to pick which failure to report."""
    properties = _resolve(schema, schema.get("$defs", {})).get("properties")
    if not isinstance(value, dict) or not isinstance(properties, dict):
        return 0
    return len(properties.keys() & value.keys())


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
        data = _coerce(_reshape(value, schema), schema, defs)
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


def _repair_prompt(error: str, schema: dict[str, Any] | None) -> str:
    """The user message that asks the model to try again."""
    parts = [
        f"Your previous reply could not be used.\n{error}",
        "Reply again with only the corrected JSON: no prose, no code fences.",
    ]
    if schema:
        compact = json.dumps(schema, ensure_ascii=False, separators=(",", ":"), default=str)
        parts.append(f"The JSON must follow this schema:\n{compact}")
    return "\n\n".join(parts)


async def complete_structured(
    provider: LLMProvider,
    request: LLMRequest,
    model: type[T],
    *,
    max_repairs: int = 2,
    check: Callable[[T], None] | None = None,
    on_response: Callable[[LLMResponse], None] | None = None,
) -> T:
    """Ask ``provider`` for a reply that validates as ``model``, repairing up to ``max_repairs``.

    The request gets ``model``'s JSON schema unless it already has one. After a reply that does
    not parse, validate or pass ``check`` (a callable raising :class:`ValueError`), the reply and
    a message naming the errors are appended to a copy of the conversation and the model is
    asked again. ``on_response`` sees every response, failed ones included, so callers can count
    tokens. Provider errors propagate unchanged; the caller's request is never modified.

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
        call = dataclasses.replace(request, messages=list(messages), json_schema=schema)
        response = await provider.complete(call)
        if on_response is not None:
            on_response(response)
        text = response.text
        try:
            return _accept(text, model, check)
        except StructuredOutputError as exc:
            error = str(exc)
        if attempt < calls:
            messages.append(Message(role="assistant", content=text))
            messages.append(Message(role="user", content=_repair_prompt(error, schema)))
    raise StructuredOutputError(
        f"no valid structured output after {calls} attempt{'s' if calls > 1 else ''}: {error}",
        raw=text,
        attempts=calls,
    )
