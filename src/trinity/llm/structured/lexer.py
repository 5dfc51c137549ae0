"""Tokenizer and balanced-bracket scanner for lenient JSON.

This is the lowest layer of :mod:`trinity.llm.structured`: it splits a stretch of a model's
reply into JSON-ish tokens (skipping whitespace and comments, accepting single, smart and
unquoted strings), decodes string bodies the forgiving way, and finds where a ``{…}`` or
``[…]`` candidate ends, spending a per-reply token budget. It knows nothing of grammar beyond
bracket balance; :mod:`trinity.llm.structured.lenient_json` parses the tokens it yields.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from trinity.llm.structured.limits import MAX_DEPTH, MAX_TOKENS

_DECODER = json.JSONDecoder(strict=False)  # strict=False: models put raw newlines in strings

_SPACE = re.compile(r"[\s\ufeff]+")
_WORD = re.compile(r"(?:[^\s\ufeff{}\[\]:,\"\u201c\u201d\u201e\u2018/]|/(?![/*]))+")
_DOUBLE_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_SMART_DOUBLE_BODY = re.compile(r"[^\u201c\u201d\\]*(?:\\.[^\u201c\u201d\\]*)*", re.S)
_SMART_SINGLE_BODY = re.compile(r"[^\u2019\\]*(?:\\.[^\u2019\\]*)*", re.S)
_BODY_FIX = re.compile(r'\\(u[0-9a-fA-F]{4}|.)?|"', re.S)
_SINGLE_QUOTE_CLOSE = re.compile(r"'(?=[\s\ufeff]*(?:[,:}\]]|$))")

_SMART_DOUBLE_OPENERS = "\u201c\u201d\u201e"
_SMART_DOUBLE_CLOSERS = "\u201c\u201d"
_PUNCTUATION = frozenset("{}[]:,")
_OPENERS = frozenset("{[")
_CLOSERS = frozenset("}]")
_CLOSER_OF = {"{": "}", "[": "]"}
_VALUE_POSITION = frozenset("{[,:")
"""Tokens after which a single quote opens a string (elsewhere it is an apostrophe)."""
_JSON_ESCAPES = frozenset('"\\/bfnrt')


class _Token(NamedTuple):
    kind: str
    """One of ``{ } [ ] : ,``, ``string`` or ``word`` (a bare literal, number or identifier)."""
    value: Any
    """The word's text; for a string, where its body starts and ends (decoded only when parsed,
    so that scanning a candidate that turns out unbalanced costs no decoding)."""
    pos: int


class _SyntaxProblem(Exception):
    """Internal: a candidate is not (lenient) JSON. Never leaves this package."""

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
