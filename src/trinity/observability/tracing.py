"""OpenTelemetry traces, made from the runs' events.

:class:`RunTracer` is the event sink in a run's process. It decides once per run whether the
run is traced (``OTEL_TRACES_SAMPLER``, :class:`.spans.Sampler`; a run left out costs nothing
more), gives the run its trace id (the caller's, when ``POST /v1/runs`` came with a
``traceparent``), makes a tool call's span id the current context while the call runs (so the
tool hub hands it to an MCP server: :func:`.spans.trace_carrier`), redacts the strings, and
sends one small tuple per event that matters to the exporting child process (:mod:`.shipping`).
There :class:`.spanbuilder.SpanBuilder` makes the spans (a span per run, per agent turn
``invoke_agent atlas``, per LLM call ``chat {model}``, per tool call ``execute_tool {tool}`` and
per verdict, with the GenAI semantic conventions' attributes) and the OpenTelemetry SDK exports
them (:mod:`.export_child`).

Why the split: the SDK's span objects and OTLP encoding cost ~70 µs of CPU a span, and even
plain span records made here cost a run's process ~10 µs a span on a busy step; a message
costs a tuple. And the run never waits for a collector.

The exporter comes from the standard environment variables: ``OTEL_TRACES_EXPORTER`` = ``otlp``
(``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf``, the default, or ``grpc``;
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console``, or ``none`` (the default: no tracing, no child).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trinity.observability import tracing_asked
from trinity.observability.metrics import provider_of
from trinity.observability.shipping import Shipper
from trinity.observability.spans import CURRENT, Sampler, TraceContext, new_id
from trinity.security.secrets import redact

if TYPE_CHECKING:
    import contextvars

    from trinity.events import EventBase

CONTENT_CHARS = 20_000
"""The most of a prompt or a completion a chat span records (``trace_content``)."""
TEXT_CHARS = 1000
"""The most of a name or an id a span attribute keeps."""
MESSAGE_CHARS = 500
"""The most of an error, a stop detail or a verdict summary a span keeps."""


_PROCESS: RunTracer | None = None
_CHECKED = False


def process_tracer() -> RunTracer | None:
    """The process's one :class:`RunTracer`, when the environment asks for traces."""
    global _PROCESS, _CHECKED
    if not _CHECKED:
        _CHECKED = True
        if tracing_asked():
            shipper = Shipper()
            _PROCESS = RunTracer(shipper, Sampler(), flush=shipper.flush)
    return _PROCESS


def note_content(run_id: str, messages: list[tuple[str, str]], completion: str) -> None:
    """The text of the LLM call whose ``llm_call`` event comes next for ``run_id``: recorded on
    its span (``trace_content`` on; nothing happens when nothing is traced)."""
    if _PROCESS is not None and run_id in _PROCESS._traces:  # a run sampled out keeps nothing
        _PROCESS.pending[run_id] = (messages, completion)


class RunTracer:
    """The event sink that turns runs' events into trace messages (``tracer(event)``; the
    messages are :mod:`.spanbuilder`'s), handed to ``ship``: :class:`Shipper` in a process; a
    :class:`.spanbuilder.SpanBuilder` in a test."""

    def __init__(
        self,
        ship: Callable[[tuple[Any, ...]], None],
        sampler: Sampler | None = None,
        *,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.ship = ship
        self.sampler = sampler or Sampler("always_on")
        self._flush = flush
        self._traces: dict[str, int] = {}
        """The trace id of each traced run that has not ended."""
        self._calls: dict[str, contextvars.Token[TraceContext | None]] = {}
        """A run's tool call in progress: how to restore the context it replaced."""
        self.pending: dict[str, tuple[list[tuple[str, str]], str]] = {}
        """Prompt and completion of a run's next ``llm_call`` (:func:`note_content`)."""
        self._handlers: dict[str, Callable[[Any, int], None]] = {
            "llm_call": self._on_llm_call,
            "llm_failed": self._on_llm_failed,
            "tool_call": self._on_tool_call,
            "tool_result": self._on_tool_result,
            "verdict": self._on_verdict,
            "run_finished": self._on_run_finished,
        }

    def __call__(self, event: EventBase) -> None:
        kind = event.kind
        if kind == "node_finished":  # the most frequent event: its path kept short
            if event.run_id in self._traces:
                if self._calls:
                    self._call_ended(event.run_id)
                self.ship(("node", event.run_id, event.ts, event.step, event.next))  # type: ignore[attr-defined]
            return
        if kind == "run_started":
            self._on_run_started(event)
            return
        trace_id = self._traces.get(event.run_id)
        if trace_id is not None:
            handler = self._handlers.get(kind)
            if handler is not None:
                handler(event, trace_id)

    def _call_ended(self, run_id: str) -> None:
        token = self._calls.pop(run_id, None)
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another task (a call cut short)
                CURRENT.reset(token)

    # -- events ----------------------------------------------------------------------------------

    def _on_run_started(self, event: Any) -> None:
        self._call_ended(event.run_id)
        parent = CURRENT.get()  # an API request's traceparent (incoming_trace)
        trace_id = parent.trace_id if parent is not None else new_id(128)
        if not self.sampler.sampled(trace_id, parent):
            self._traces.pop(event.run_id, None)
            return
        self._traces[event.run_id] = trace_id
        self.ship(
            (
                "start",
                event.run_id,
                event.ts,
                trace_id,
                parent.span_id if parent is not None else 0,
                parent is not None and parent.remote,
                event.start_node,
                event.resumed,
            )
        )

    def _on_llm_call(self, event: Any, trace_id: int) -> None:
        shown = reply = None
        content = self.pending.pop(event.run_id, None)
        if content is not None:
            messages, completion = content
            shown = redact(json.dumps([_chat_message(role, text) for role, text in messages]))
            said = _chat_message("assistant", completion, finish_reason=event.finish_reason)
            reply = redact(json.dumps([said]))
        self.ship(
            (
                "llm",
                event.run_id,
                event.ts,
                _text(event.model),
                provider_of(event.model),
                event.latency_s,
                event.input_tokens,
                event.output_tokens,
                event.finish_reason,
                event.purpose,
                event.attempts,
                event.cost_usd,
                shown,
                reply,
            )
        )

    def _on_llm_failed(self, event: Any, trace_id: int) -> None:
        self.ship(
            (
                "llm_failed",
                event.run_id,
                event.ts,
                _text(event.model),
                provider_of(event.model),
                event.purpose,
                event.attempts,
                _message(event.error),
            )
        )

    def _on_tool_call(self, event: Any, trace_id: int) -> None:
        self._call_ended(event.run_id)
        span_id = new_id(64)
        # The current context while the call runs (this is the calling task): the hub sends it
        # to an MCP server with the request.
        self._calls[event.run_id] = CURRENT.set(TraceContext(trace_id, span_id, True))
        step = _text(event.step)
        self.ship(("tool", event.run_id, event.ts, span_id, _text(event.tool), step, event.attempt))

    def _on_tool_result(self, event: Any, trace_id: int) -> None:
        self._call_ended(event.run_id)
        error = _message(event.error) if event.error else None
        self.ship(("tool_end", event.run_id, event.ts, event.ok, event.exit_code, error))

    def _on_verdict(self, event: Any, trace_id: int) -> None:
        summary = _message(event.summary) if event.summary else ""
        step = _text(event.step)
        self.ship(("verdict", event.run_id, event.ts, step, event.passed, event.level, summary))

    def _on_run_finished(self, event: Any, trace_id: int) -> None:
        self._call_ended(event.run_id)
        del self._traces[event.run_id]
        self.pending.pop(event.run_id, None)
        detail = _message(event.detail) if event.detail else None
        self.ship(("end", event.run_id, event.ts, event.stop_reason, detail))
        if self._flush is not None:
            self._flush()  # a run's trace leaves when the run ends


def _chat_message(role: str, text: str, **more: Any) -> dict[str, Any]:
    """A message as the GenAI conventions' ``gen_ai.*.messages`` JSON has it."""
    return {"role": role, "parts": [{"type": "text", "content": text[:CONTENT_CHARS]}], **more}


def _text(value: str) -> str:
    return redact(value)[:TEXT_CHARS]


def _message(value: str) -> str:
    return redact(value)[:MESSAGE_CHARS]  # whole, then cut: a cut could halve a secret
