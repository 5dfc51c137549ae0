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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trinity.state import ToolResult

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 8
"""Shorter values are not registered: redacting ``"1"`` or ``"true"`` everywhere would
destroy text and protect nothing."""

_SHAPES: tuple[str, ...] = (
    r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----[\s\S]{0,20000}?-----END[A-Z ]{0,40}PRIVATE KEY-----",
    r"\bsk-ant-[A-Za-z0-9_\-]{16,}",
    r"\bsk-[A-Za-z0-9_\-]{16,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bAIza[0-9A-Za-z_\-]{35}",
)
"""Credential shapes, replaced whole."""
_KEEP_PREFIX: tuple[str, ...] = (
    # `Bearer TOKEN`: the word stays, the token goes.
    r"(?P<p0>\b[Bb]earer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
    # `scheme://user:PASSWORD@host`: the password goes.
    r"(?P<p1>\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s/:@]{0,200}:)[^\s/@]{1,200}(?=@)",
    # aws_secret_access_key = KEY (in a config file or an env listing)
    r"(?P<p2>(?i:aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}",
)


class SecretRegistry:
    """The secret values this process knows of, matched by one compiled pattern."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pattern = self._compile()

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
            self._pattern = self._compile()
        return True

    def add_all(self, values: Iterable[str | None], source: str = "") -> None:
        for value in values:
            self.add(value, source)

    def clear(self) -> None:
        """Forget every registered value (tests)."""
        with self._lock:
            self._values.clear()
            self._pattern = self._compile()

    def sources(self) -> list[str]:
        """Where the registered values came from (for ``trinity doctor``), never the values."""
        return sorted({source for source in self._values.values() if source})

    def _compile(self) -> re.Pattern[str]:
        literals = sorted(self._values, key=len, reverse=True)
        parts = [re.escape(v) for v in literals] + list(_SHAPES) + list(_KEEP_PREFIX)
        return re.compile("|".join(parts))

    def redact(self, text: str) -> str:
        """``text`` with every secret in it replaced by ``[REDACTED]``."""
        return self._pattern.sub(_replacement, text)

    def redact_data(self, value: Any) -> Any:
        """:meth:`redact` applied to every string inside dicts, lists and tuples."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_data(item) for item in value)
        return value


def _replacement(match: re.Match[str]) -> str:
    groups = match.groupdict()
    for name in ("p0", "p1", "p2"):
        if groups.get(name) is not None:
            return groups[name] + REDACTED
    return REDACTED


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
