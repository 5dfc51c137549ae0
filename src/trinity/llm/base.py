"""The LLM provider interface every agent talks to, and the data it exchanges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Message:
    role: Role
    content: str


@dataclass(slots=True)
class LLMRequest:
    """One completion request."""

    messages: list[Message]
    """Conversation so far; a leading ``system`` message carries the instructions."""
    purpose: str = ""
    """Who asks and why (``atlas.plan``, ``grisha.judge``…): for traces and scripted matching."""
    max_tokens: int = 2048
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    """JSON schema the reply must follow, when structured output is wanted (the server is
    asked to enforce it where it can, :mod:`trinity.llm.native`; the reply is always parsed and
    validated by :mod:`trinity.llm.structured`)."""
    schema_name: str = "reply"
    """What the structure is called (``PlanDraft``): names the schema or tool sent natively."""
    timeout_s: float | None = None
    """Per-call timeout; ``None`` uses the provider's default."""
    on_retry: Callable[[int, str, float], None] | None = None
    """Told ``(attempt that failed, why, seconds to wait)`` before the provider retries, so the
    wait shows in the run's events."""
    on_progress: Callable[[int, float], None] | None = None
    """Told ``(characters received, seconds since the attempt's reply began)`` as a streamed
    reply arrives: when its text starts, then every few seconds."""


@dataclass(slots=True)
class LLMResponse:
    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    """Provider calls it took, retries included."""
    raw: dict[str, Any] = field(default_factory=dict)
    cut_off: bool = False
    """The reply stopped because it reached ``max_tokens`` (``finish_reason: length``,
    ``stop_reason: max_tokens``): its end is missing."""
    usage_estimated: bool = False
    """The server sent no usable token counts (missing, negative, absurd, not numbers): the
    counts are estimates from the text (:mod:`trinity.llm.replies`)."""


@runtime_checkable
class LLMProvider(Protocol):
    """Anything that turns an :class:`LLMRequest` into an :class:`LLMResponse`.

    Implementations raise :class:`trinity.errors.LLMError` (or a subclass) when a call fails for
    good; they never let an SDK exception escape.
    """

    model: str
    """The model string it was made from, e.g. ``openai:gpt-4o-mini``."""

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...
