"""OpenTelemetry traces, made from the runs' events.

:class:`RunTracer` is an event sink: a span per run, per agent turn (``invoke_agent atlas``),
per LLM call (``chat {model}``), per tool call (``execute_tool {tool}``) and per verdict, with
the GenAI semantic conventions' attributes. A node's span starts when the engine moves to it
(``run_started`` or the previous ``node_finished`` names it) and ends with its own
``node_finished``; a tool call's span is the current context while the call runs, so the tool
hub hands it to an MCP server (``_meta.traceparent``, :func:`.spans.trace_carrier`); an LLM
call's span is placed by its measured latency.

Spans are plain records (:class:`.spans.SpanRecord`) shipped in batches to a child process that
exports them with the OpenTelemetry SDK (:mod:`.export_child`): the SDK's own span objects and
its OTLP encoding cost ~70 µs of CPU a span, which a run's process no longer pays. The exporter
comes from the standard environment variables: ``OTEL_TRACES_EXPORTER`` = ``otlp``
(``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf``, the default, or ``grpc``;
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console``, or ``none`` (the default: no tracing, no child).
Sampling follows ``OTEL_TRACES_SAMPLER`` (:class:`.spans.Sampler`), decided once per run; a run
left out makes no spans at all. Span attributes are redacted of secrets like every other sink.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import marshal
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trinity.observability import NOT_FAILED
from trinity.observability.metrics import provider_of
from trinity.observability.spans import CURRENT, Sampler, SpanRecord, TraceContext, new_id
from trinity.security.secrets import redact

if TYPE_CHECKING:
    import contextvars

    from trinity.events import EventBase

_NS = 1_000_000_000
CONTENT_CHARS = 20_000
"""The most of a prompt or a completion a chat span records (``trace_content``)."""
BATCH = 256
"""Spans shipped to the exporting process at once (and at a run's end, and at exit)."""


def tracing_asked() -> bool:
    return os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() not in ("", "none")


class Shipper:
    """Batches of span records, written to the exporting child process's standard input."""

    def __init__(self) -> None:
        from trinity.observability.export_child import exporters_from_env

        exporters_from_env()  # a bad OTEL_TRACES_EXPORTER is a ConfigError here, not in the child
        self._child = subprocess.Popen(
            [sys.executable, "-m", "trinity.observability.export_child"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the run's terminal does not lose the last spans
        )
        self._lock = threading.Lock()
        self._pending: list[SpanRecord] = []
        atexit.register(self.close)

    def __call__(self, record: SpanRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            stdin = self._child.stdin
            if not batch or stdin is None or stdin.closed:
                return
            # marshal: plain tuples of numbers, strings and dicts, ~3x faster than pickle
            data = marshal.dumps([tuple(record) for record in batch])
            try:
                stdin.write(struct.pack(">I", len(data)) + data)
                stdin.flush()
            except (BrokenPipeError, OSError):  # the exporter died: these spans are lost
                stdin.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Ship what is left, let the child export it, and wait for it (at exit)."""
        self.flush()
        if self._child.stdin is not None and not self._child.stdin.closed:
            with contextlib.suppress(OSError):
                self._child.stdin.close()
        try:
            self._child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._child.kill()


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
    if _PROCESS is not None:
        _PROCESS.pending[run_id] = (messages, completion)


class _Open:
    """A span not ended yet."""

    __slots__ = ("attributes", "name", "span_id", "start_ns")

    def __init__(self, name: str, start: float, attributes: dict[str, Any]) -> None:
        self.span_id = new_id(64)
        self.name = name
        self.start_ns = int(start * _NS)
        self.attributes = attributes


class _RunSpans:
    """One run's open spans."""

    __slots__ = ("node", "parent", "run", "tool", "tool_token", "trace_id")

    def __init__(self, trace_id: int, run: _Open, parent: TraceContext | None) -> None:
        self.trace_id = trace_id
        self.run = run
        self.parent = parent
        self.node: _Open | None = None
        self.tool: _Open | None = None
        self.tool_token: contextvars.Token[TraceContext | None] | None = None


class RunTracer:
    """The event sink that turns runs' events into span records (``tracer(event)``), handed to
    ``ship`` (:class:`Shipper` in a process; a list's ``append`` in a test)."""

    def __init__(
        self,
        ship: Callable[[SpanRecord], None],
        sampler: Sampler | None = None,
        *,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.ship = ship
        self.sampler = sampler or Sampler("always_on")
        self._flush = flush
        self._runs: dict[str, _RunSpans] = {}
        self._skipped: set[str] = set()
        self.pending: dict[str, tuple[list[tuple[str, str]], str]] = {}
        """Prompt and completion of a run's next ``llm_call`` (:func:`note_content`)."""
        self._handlers: dict[str, Callable[[Any, _RunSpans], None]] = {
            "node_finished": self._on_node_finished,
            "llm_call": self._on_llm_call,
            "llm_failed": self._on_llm_failed,
            "tool_call": self._on_tool_call,
            "tool_result": self._on_tool_result,
            "verdict": self._on_verdict,
        }
        self._agents: dict[str, dict[str, Any]] = {}

    def __call__(self, event: EventBase) -> None:
        kind = event.kind
        if kind == "run_started":
            self._on_run_started(event)
            return
        spans = self._runs.get(event.run_id)
        if spans is None:
            if kind == "run_finished":
                self._skipped.discard(event.run_id)
            return
        if kind == "run_finished":
            self._close(event.run_id, event, event.ts)
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(event, spans)

    # -- records ---------------------------------------------------------------------------------

    def _end(
        self,
        spans: _RunSpans,
        span: _Open,
        parent_id: int,
        at: float,
        error: str | None = None,
        remote: bool = False,
    ) -> None:
        self.ship(
            SpanRecord(
                spans.trace_id,
                span.span_id,
                parent_id,
                span.name,
                span.start_ns,
                max(span.start_ns, int(at * _NS)),
                span.attributes,
                redact(error)[:500] if error is not None else None,
                remote,
            )
        )

    def _node(self, spans: _RunSpans, name: str, at: float) -> None:
        if not name or name == "__end__":
            return
        attributes = self._agents.get(name)
        if attributes is None:  # node names are the graph's: nothing to redact
            attributes = self._agents[name] = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": name,
            }
        spans.node = _Open(f"invoke_agent {name}", at, dict(attributes))

    def _parent_of_child(self, spans: _RunSpans) -> int:
        return spans.node.span_id if spans.node is not None else spans.run.span_id

    # -- events ----------------------------------------------------------------------------------

    def _on_run_started(self, event: Any) -> None:
        self._close(event.run_id, None, event.ts)  # a run that did not end here before
        parent = CURRENT.get()  # an API request's traceparent (incoming_trace)
        trace_id = parent.trace_id if parent is not None else new_id(128)
        if not self.sampler.sampled(trace_id, parent):
            self._skipped.add(event.run_id)
            return
        run = _Open(
            "trinity.run",
            event.ts,
            {
                "trinity.run.id": event.run_id,
                "trinity.run.resumed": event.resumed,
                "gen_ai.conversation.id": event.run_id,
            },
        )
        spans = self._runs[event.run_id] = _RunSpans(trace_id, run, parent)
        self._node(spans, event.start_node, event.ts)

    def _on_node_finished(self, event: Any, spans: _RunSpans) -> None:
        self._end_tool(spans, event.ts, "the node ended during the call")
        if spans.node is not None:
            spans.node.attributes["trinity.step"] = event.step
            self._end(spans, spans.node, spans.run.span_id, event.ts)
        spans.node = None
        self._node(spans, event.next, event.ts)

    def _on_llm_call(self, event: Any, spans: _RunSpans) -> None:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_of(event.model),
            "gen_ai.request.model": _text(event.model),
            "gen_ai.response.model": _text(event.model),
            "gen_ai.usage.input_tokens": event.input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "gen_ai.response.finish_reasons": [event.finish_reason],
            "trinity.llm.purpose": event.purpose,
            "trinity.llm.attempts": event.attempts,
        }
        if event.cost_usd is not None:
            attributes["trinity.llm.cost_usd"] = event.cost_usd
        content = self.pending.pop(event.run_id, None)
        if content is not None:
            messages, completion = content
            shown = [
                {"role": role, "parts": [{"type": "text", "content": text[:CONTENT_CHARS]}]}
                for role, text in messages
            ]
            reply = [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": completion[:CONTENT_CHARS]}],
                    "finish_reason": event.finish_reason,
                }
            ]
            attributes["gen_ai.input.messages"] = redact(json.dumps(shown))
            attributes["gen_ai.output.messages"] = redact(json.dumps(reply))
        span = _Open(f"chat {_text(event.model)}", event.ts - event.latency_s, attributes)
        self._end(spans, span, self._parent_of_child(spans), event.ts)

    def _on_llm_failed(self, event: Any, spans: _RunSpans) -> None:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_of(event.model),
            "gen_ai.request.model": _text(event.model),
            "trinity.llm.purpose": event.purpose,
            "trinity.llm.attempts": event.attempts,
            "error.type": "llm_failed",
        }
        span = _Open(f"chat {_text(event.model)}", event.ts, attributes)
        self._end(spans, span, self._parent_of_child(spans), event.ts, event.error)

    def _on_tool_call(self, event: Any, spans: _RunSpans) -> None:
        spans.tool = _Open(
            f"execute_tool {_text(event.tool)}",
            event.ts,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": _text(event.tool),
                "trinity.step.id": _text(event.step),
                "trinity.tool.attempt": event.attempt,
                "trinity.mcp.server": _text(event.tool.split(".", 1)[0]),
            },
        )
        # The current context while the call runs (this is the calling task): the hub sends it
        # to an MCP server with the request.
        spans.tool_token = CURRENT.set(TraceContext(spans.trace_id, spans.tool.span_id, True))

    def _on_tool_result(self, event: Any, spans: _RunSpans) -> None:
        tool = spans.tool
        if tool is None:
            return
        if event.exit_code is not None:
            tool.attributes["trinity.tool.exit_code"] = event.exit_code
        error = None if event.ok else (event.error or "failed")
        if error is not None:
            tool.attributes["error.type"] = "tool_error"
        self._end_tool(spans, event.ts, None, error)

    def _end_tool(
        self, spans: _RunSpans, at: float, cut: str | None, error: str | None = None
    ) -> None:
        tool = spans.tool
        if tool is None:
            return
        if cut is not None:
            tool.attributes["error.type"] = "cut_off"
            error = cut
        self._end(spans, tool, self._parent_of_child(spans), at, error)
        spans.tool = None
        token, spans.tool_token = spans.tool_token, None
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another task (a call cut short)
                CURRENT.reset(token)

    def _on_verdict(self, event: Any, spans: _RunSpans) -> None:
        attributes = {
            "trinity.step.id": _text(event.step),
            "trinity.verdict.passed": event.passed,
            "trinity.verdict.level": event.level,
            "trinity.verdict.summary": _text(event.summary[:500]),
        }
        error = None
        if not event.passed:
            attributes["error.type"] = "verdict_failed"
            error = event.summary or "not passed"
        span = _Open(f"verdict {_text(event.step)}", event.ts, attributes)
        self._end(spans, span, self._parent_of_child(spans), event.ts, error)

    def _close(self, run_id: str, finished: Any, at: float) -> None:
        spans = self._runs.pop(run_id, None)
        self._skipped.discard(run_id)
        if spans is None:
            return
        self._end_tool(spans, at, "the run ended during the call")
        if spans.node is not None:
            self._end(spans, spans.node, spans.run.span_id, at)
        error = None
        if finished is not None:
            spans.run.attributes["trinity.stop_reason"] = finished.stop_reason
            if finished.stop_reason not in NOT_FAILED:
                spans.run.attributes["error.type"] = finished.stop_reason
                error = finished.detail or finished.stop_reason
        parent = spans.parent
        self._end(
            spans,
            spans.run,
            parent.span_id if parent is not None else 0,
            at,
            error,
            remote=parent is not None and parent.remote,
        )
        if self._flush is not None:
            self._flush()  # a run's trace leaves when the run ends


def _text(value: str) -> str:
    return redact(value)[:1000]
