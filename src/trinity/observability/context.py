"""The trace context a call that leaves the process carries (kept apart from
:mod:`.tracing`, so that the tool hub imports nothing of OpenTelemetry's)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping


def trace_carrier() -> dict[str, str]:
    """The current span's context as W3C headers (``traceparent``, ``tracestate``), for a call
    that leaves the process; empty when nothing is traced."""
    if "opentelemetry.trace" not in sys.modules:  # tracing never started in this process
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def incoming_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Within it, the trace context a request came with (its ``traceparent`` header) is the
    current one, so a run started there is a span of the caller's trace. Nothing happens when
    this process traces nothing."""
    if "opentelemetry.trace" not in sys.modules or "traceparent" not in headers:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(dict(headers)))
    try:
        yield
    finally:
        context.detach(token)
