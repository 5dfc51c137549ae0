"""Secrets: one registry of secret values, and the one redaction pass.

Everything Trinity stores, prints, traces, learns or sends to a model goes through
:func:`redact` first (the store's writer, tool results, LLM requests, log records). It replaces:

- every value in the registry (:data:`SECRETS`): provider API keys, ``${VAR}`` expansions of MCP
  configurations, values from ``.env`` files and the keyring, and the values of environment
  variables the child-environment scrub removes that look like credentials;
- text in the shape of a credential, wherever it came from: ``sk-…`` / ``sk-ant-…`` keys,
  GitHub tokens (``ghp_…``, ``github_pat_…``), Slack tokens and webhooks, AWS access key ids and
  secret keys, ``Bearer …`` tokens, private key blocks, and the password of a URL
  (``postgres://user:PASSWORD@host``).

What is replaced becomes ``[REDACTED]``; the text around it is kept, so a log line still says
what happened.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trinity.state import ToolResult

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 8
"""Shorter values are not registered: redacting ``"1"`` or ``"true"`` everywhere would
destroy text and protect nothing."""
CACHED_CHARS = 200
"""Texts up to this long are remembered with their redaction (names, models, step ids: the
metrics' labels and the spans' attributes redact the same few strings over and over)."""
CACHED_TEXTS = 4096


@dataclass(frozen=True, slots=True)
class _Shape:
    """A credential shape: a pattern, tried only when one of its anchors (plain substrings
    every match contains) is in the text, so most text costs a few substring searches."""

    anchors: tuple[str, ...]
    pattern: re.Pattern[str]
    keep_prefix: bool = False
    """The pattern's first group stays (``Bearer ``, ``user:``); only the rest goes."""


_SHAPES: tuple[_Shape, ...] = (
    _Shape(
        ("-----BEGIN",),
        re.compile(
            r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----[\s\S]{0,20000}?-----END[A-Z ]{0,40}"
            r"PRIVATE KEY-----"
        ),
    ),
    _Shape(("sk-",), re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")),  # sk-…, sk-proj-…, sk-ant-…
    _Shape(("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}")),
    _Shape(("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    _Shape(("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}")),
    _Shape(
        ("hooks.slack.com",), re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+")
    ),
    _Shape(("AKIA", "ASIA"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    _Shape(("AIza",), re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    _Shape(  # `Bearer TOKEN`: the word stays, the token goes
        ("Bearer", "bearer", "BEARER"),
        re.compile(r"(\b[Bb][Ee][Aa][Rr][Ee][Rr]\s+)[A-Za-z0-9\-._~+/]{8,}=*"),
        keep_prefix=True,
    ),
    _Shape(  # `scheme://user:PASSWORD@host`: the password goes
        ("://",),
        re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s/:@]{0,200}:)[^\s/@]{1,200}(?=@)"),
        keep_prefix=True,
    ),
    _Shape(  # aws_secret_access_key = KEY, in a config file or an environment listing
        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        re.compile(r"((?i:aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}"),
        keep_prefix=True,
    ),
)


class SecretRegistry:
    """The secret values this process knows of."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()
        self._longest_first: tuple[str, ...] = ()
        self._cache: dict[str, tuple[int, str]] = {}
        self._generation = 0
        """Counts the changes of the registry: a remembered redaction of an older generation
        is never used (it may miss a secret registered since)."""

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str | None, source: str = "") -> bool:
        """Register a secret value (and its JSON-escaped spelling); ``False`` when it is too
        short to register. ``source`` says where it came from (never the value)."""
        if not value or len(value) < MIN_SECRET_CHARS:
            return False
        spellings = {value, json.dumps(value)[1:-1], value.strip()}
        with self._lock:
            new = [s for s in spellings if len(s) >= MIN_SECRET_CHARS and s not in self._values]
            if not new:
                return True
            for spelling in new:
                self._values[spelling] = source
            self._longest_first = tuple(sorted(self._values, key=len, reverse=True))
            self._generation += 1
        return True

    def add_all(self, values: Iterable[str | None], source: str = "") -> None:
        for value in values:
            self.add(value, source)

    def clear(self) -> None:
        """Forget every registered value (tests)."""
        with self._lock:
            self._values.clear()
            self._longest_first = ()
            self._generation += 1

    def sources(self) -> list[str]:
        """Where the registered values came from (for ``trinity doctor``), never the values."""
        return sorted({source for source in self._values.values() if source})

    def redact(self, text: str) -> str:
        """``text`` with every secret in it replaced by ``[REDACTED]``.

        Substring searches (C speed: a few microseconds for a journal row), and a shape's
        pattern only where one of its anchors occurs (a combined regular expression was
        measured slower). The store runs this on every value it writes; a short text's result
        is remembered (a dictionary look-up, ~20x faster than the searches)."""
        if len(text) < MIN_SECRET_CHARS:
            return text
        if len(text) > CACHED_CHARS:
            return self._redact(text)
        generation = self._generation
        known = self._cache.get(text)
        if known is not None and known[0] == generation:
            return known[1]
        redacted = self._redact(text)
        if len(self._cache) >= CACHED_TEXTS:
            self._cache.clear()
        self._cache[text] = (generation, redacted)
        return redacted

    def _redact(self, text: str) -> str:
        for shape in _SHAPES:
            for anchor in shape.anchors:
                if anchor in text:
                    text = shape.pattern.sub(_keep_prefix if shape.keep_prefix else REDACTED, text)
                    break
        for value in self._longest_first:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def redact_data(self, value: Any) -> Any:
        """:meth:`redact` applied to every string inside dicts, lists and tuples."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_data(item) for item in value)
        return value


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED


SECRETS = SecretRegistry()
"""This process's registry."""


def redact(text: str) -> str:
    """``text`` with every known secret and credential shape replaced (see the module)."""
    return SECRETS.redact(text)


def redact_data(value: Any) -> Any:
    return SECRETS.redact_data(value)


def redact_result(result: ToolResult) -> ToolResult:
    """A tool's result with its output and error redacted, before anything keeps it."""
    output, error = redact(result.output), result.error and redact(result.error)
    if output is result.output and error is result.error:
        return result
    return result.model_copy(update={"output": output, "error": error})
