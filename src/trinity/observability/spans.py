"""Spans as plain records, and the trace context Trinity carries itself.

The tracer (:mod:`.tracing`) makes a :class:`SpanRecord` per span: ids, name, explicit times,
attributes, an error message if it failed. Records are shipped in batches to a child process
(:mod:`.export_child`) where the OpenTelemetry SDK's exporter sends them, so a run's process
spends a few microseconds a span instead of the SDK's ~70 (measured: ``bench/observability.py``).

The current span of a call that leaves the process (a tool call) is kept in a context variable
of this module, set in the task that makes the call: :func:`trace_carrier` writes it as a W3C
``traceparent``; :func:`incoming_trace` reads a request's ``traceparent`` into it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple


class SpanRecord(NamedTuple):
    trace_id: int
    span_id: int
    parent_id: int
    """0 for a root span."""
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    error: str | None = None
    """The status message of a span that failed (``None``: it did not)."""
    remote_parent: bool = False
    """The parent is another process's (a ``traceparent`` a request came with)."""


class TraceContext(NamedTuple):
    trace_id: int
    span_id: int
    sampled: bool
    remote: bool = False


CURRENT: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "trinity_trace", default=None
)
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_id(bits: int) -> int:
    """A random span (64) or trace (128) id, never 0."""
    return random.getrandbits(bits) or 1


def trace_carrier() -> dict[str, str]:
    """The current span as W3C headers (``traceparent``); empty when nothing is traced."""
    current = CURRENT.get()
    if current is None:
        return {}
    flags = "01" if current.sampled else "00"
    return {"traceparent": f"00-{current.trace_id:032x}-{current.span_id:016x}-{flags}"}


def _parsed(value: object) -> re.Match[str] | None:
    match = _TRACEPARENT.match(str(value).strip().lower())
    if match is None or int(match[1], 16) == 0 or int(match[2], 16) == 0:
        return None
    return match


def valid_traceparent(value: object) -> bool:
    """A W3C ``traceparent`` (version 00, ids not zero)."""
    return isinstance(value, str) and _parsed(value) is not None


@contextlib.contextmanager
def incoming_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Within it, a request's ``traceparent`` is the current context, so a run started there is
    a span of the caller's trace (a malformed header is ignored, as W3C asks)."""
    match = _parsed(headers.get("traceparent", ""))
    if match is None:
        yield
        return
    token = CURRENT.set(
        TraceContext(int(match[1], 16), int(match[2], 16), bool(int(match[3], 16) & 1), True)
    )
    try:
        yield
    finally:
        CURRENT.reset(token)


class Sampler:
    """``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` as the SDK reads them:
    ``always_on``, ``always_off``, ``traceidratio`` and their ``parentbased_`` forms (the
    default: ``parentbased_always_on``). Decided once per run."""

    def __init__(self, name: str | None = None, arg: str | None = None) -> None:
        chosen = (name or os.environ.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
        self.parent_based = chosen.startswith("parentbased_")
        root = chosen.removeprefix("parentbased_")
        if root not in ("always_on", "always_off", "traceidratio"):
            from trinity.errors import ConfigError

            raise ConfigError(
                f"OTEL_TRACES_SAMPLER={chosen!r}: Trinity knows always_on, always_off, "
                "traceidratio and their parentbased_ forms"
            )
        ratio = 1.0 if root == "always_on" else 0.0
        if root == "traceidratio":
            text = arg if arg is not None else os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
            try:
                ratio = min(1.0, max(0.0, float(text)))
            except ValueError:
                ratio = 1.0  # the SDK's default for a bad argument
        self.bound = round(ratio * (1 << 64))

    def sampled(self, trace_id: int, parent: TraceContext | None) -> bool:
        if self.parent_based and parent is not None:
            return parent.sampled
        return (trace_id & 0xFFFFFFFFFFFFFFFF) < self.bound
