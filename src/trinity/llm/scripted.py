"""A deterministic provider: replies from a script, with delays and faults on demand.

A script is a YAML/JSON file (or a Python list) of entries::

    replies:
      - match: {purpose: atlas.plan}        # optional: purpose prefix and/or text in the prompt
        text: '{"steps": [...]}'
        usage: {input_tokens: 120, output_tokens: 40}
      - match: {purpose: grisha.judge, contains: "hello.txt"}
        delay_s: 0.2                         # answer late
        text: '{"passed": true, "reason": "file has the greeting"}'
      - error: {kind: rate_limit}            # or server, timeout, auth
      - text: "not json at all"              # malformed output on purpose
        repeat: true                         # never used up

Each request takes the first unused entry whose ``match`` fits. :class:`RecordingProvider`
wraps a real provider and writes its traffic in this same format, so a real run can be
replayed offline with ``scripted:<file>``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trinity.errors import ConfigError, LLMError, LLMTimeoutError
from trinity.llm.base import LLMProvider, LLMRequest, LLMResponse
from trinity.security.inputs import HostileInputError, load_yaml


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str | None = None
    """Matches requests whose purpose starts with this (``atlas`` matches ``atlas.replan``)."""
    contains: str | None = None
    """Matches requests whose last user message contains this text."""

    def fits(self, request: LLMRequest) -> bool:
        if self.purpose is not None and not request.purpose.startswith(self.purpose):
            return False
        if self.contains is not None:
            last_user = next(
                (m.content for m in reversed(request.messages) if m.role == "user"), ""
            )
            if self.contains not in last_user:
                return False
        return True


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["rate_limit", "server", "timeout", "auth"]
    message: str = ""


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)


class ScriptEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: Match = Field(default_factory=Match)
    text: str | None = None
    error: Fault | None = None
    delay_s: float = Field(default=0.0, ge=0)
    usage: Usage | None = None
    repeat: bool = False


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replies: list[ScriptEntry]


def load_script(path: str | Path) -> list[ScriptEntry]:
    file = Path(path)
    try:
        data = load_yaml(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"scripted model file not found: {file}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, HostileInputError) as exc:
        raise ConfigError(f"cannot read scripted model file {file}: {exc}") from None
    if isinstance(data, list):
        data = {"replies": data}
    try:
        return Script.model_validate(data).replies
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{file}: invalid script at {where}: {first['msg']}") from None


class ScriptedProvider:
    """Answers from a script; raises a clear :class:`LLMError` when the script runs out."""

    def __init__(
        self, entries: list[ScriptEntry | dict[str, Any]], *, model: str = "scripted"
    ) -> None:
        self.model = model
        self.entries = [
            e if isinstance(e, ScriptEntry) else ScriptEntry.model_validate(e) for e in entries
        ]
        self._used = [False] * len(self.entries)
        self.requests: list[LLMRequest] = []
        """Every request received, for tests."""

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedProvider:
        return cls(load_script(path), model=f"scripted:{path}")  # type: ignore[arg-type]

    @property
    def remaining(self) -> int:
        """One-shot entries not used yet (``repeat`` entries never run out and are not counted)."""
        return sum(
            1 for used, e in zip(self._used, self.entries, strict=True) if not used and not e.repeat
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        entry = self._take(request)
        started = time.perf_counter()
        if entry.delay_s:
            if request.timeout_s is not None and entry.delay_s > request.timeout_s:
                await asyncio.sleep(request.timeout_s)
                raise LLMTimeoutError(
                    f"{self.model}: no reply within {request.timeout_s:g}s ({request.purpose})"
                )
            await asyncio.sleep(entry.delay_s)
        if entry.error is not None:
            raise _fault(self.model, entry.error)
        text = entry.text or ""
        usage = entry.usage or Usage(
            input_tokens=sum(len(m.content) for m in request.messages) // 4,
            output_tokens=len(text) // 4,
        )
        return LLMResponse(
            text=text,
            model=self.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            latency_s=time.perf_counter() - started,
        )

    def _take(self, request: LLMRequest) -> ScriptEntry:
        for index, entry in enumerate(self.entries):
            if (entry.repeat or not self._used[index]) and entry.match.fits(request):
                self._used[index] = True
                return entry
        raise LLMError(
            f"{self.model}: the script has no reply left for purpose {request.purpose!r} "
            f"({len(self.entries)} entries, {self.remaining} unused)"
        )

    async def aclose(self) -> None:
        return None


def _fault(model: str, fault: Fault) -> LLMError:
    message = (
        fault.message
        or {
            "rate_limit": "HTTP 429 rate limited (scripted)",
            "server": "HTTP 500 server error (scripted)",
            "timeout": "timed out (scripted)",
            "auth": "HTTP 401 authentication failed (scripted)",
        }[fault.kind]
    )
    if fault.kind == "timeout":
        return LLMTimeoutError(f"{model}: {message}")
    status = {"rate_limit": 429, "server": 500, "auth": 401}[fault.kind]
    return LLMError(f"{model}: {message}", status=status)


class RecordingProvider:
    """Wraps a provider and saves each exchange as a script entry (for later replay)."""

    def __init__(self, inner: LLMProvider, path: str | Path) -> None:
        self.inner = inner
        self.model = inner.model
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []

    async def complete(self, request: LLMRequest) -> LLMResponse:
        response = await self.inner.complete(request)
        self.entries.append(
            {
                "match": {"purpose": request.purpose},
                "text": response.text,
                "usage": {
                    "input_tokens": response.input_tokens,
                    "output_tokens": response.output_tokens,
                },
            }
        )
        self._save()
        return response

    def _save(self) -> None:
        # Written after every exchange, so a run that dies still leaves a usable recording.
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        if self.path.suffix == ".json":
            tmp.write_text(json.dumps({"replies": self.entries}, indent=2), encoding="utf-8")
        else:
            tmp.write_text(
                yaml.safe_dump({"replies": self.entries}, sort_keys=False, allow_unicode=True),
                encoding="utf-8",
            )
        tmp.replace(self.path)

    async def aclose(self) -> None:
        await self.inner.aclose()
