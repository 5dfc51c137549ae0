"""OpenTelemetry traces, made from the runs' events.

:class:`RunTracer` is an event sink: a span per run, per agent turn (``invoke_agent atlas``),
per LLM call (``chat {model}``), per tool call (``execute_tool {tool}``) and per verdict, with
the GenAI semantic conventions' attributes. A node's span starts when the engine moves to it
(``run_started`` or the previous ``node_finished`` names it) and ends with its own
``node_finished``; a tool call's span is live while the call runs, and is the current span then,
so the tool hub can hand its context to an MCP server (:func:`trace_carrier`, sent as the
request's ``_meta.traceparent``); an LLM call's span is placed by its measured latency.

The exporter comes from the standard environment variables, read by :func:`tracer_from_env`:
``OTEL_TRACES_EXPORTER`` = ``otlp`` (``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf``, the
default, or ``grpc``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``…_TRACES_ENDPOINT``), ``console``, or
``none`` (the default: no tracing, and the OpenTelemetry SDK is never imported). Span
attributes are redacted of secrets like every other sink; prompt and completion text is not
recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from trinity.observability.metrics import provider_of
from trinity.security.secrets import redact

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from trinity.events import EventBase

_NS = 1_000_000_000
_FAILED = {"failed", "error", "timeout", "deadline", "loop", "stalled", "step_budget",
           "token_budget", "cost_budget"}  # fmt: skip


def tracer_from_env() -> TracerProvider | None:
    """A tracer provider exporting where the ``OTEL_*`` environment variables say, or ``None``
    (``OTEL_TRACES_EXPORTER`` unset or ``none``)."""
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if chosen in ("", "none"):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporters: list[Any] = []
    for name in (part.strip() for part in chosen.split(",")):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporters.append(GrpcExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpExporter,
                )

                exporters.append(HttpExporter())
        else:
            from trinity.errors import ConfigError

            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={chosen!r}: Trinity knows otlp, console and none"
            )
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "trinity")})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class _RunSpans:
    """One run's open spans."""

    def __init__(self, run: Span) -> None:
        self.run = run
        self.recording = run.is_recording()
        """False for a run the sampler left out: its children are not made at all."""
        self.node: Span | None = None
        self.node_name = ""
        self.tool: Span | None = None
        self.tool_token: object | None = None
        self.run_context: Any = None


_PROCESS: RunTracer | None = None
_CHECKED = False
CONTENT_CHARS = 20_000
"""The most of a prompt or a completion a chat span records (``trace_content``)."""


def note_content(run_id: str, messages: list[tuple[str, str]], completion: str) -> None:
    """The text of the LLM call whose ``llm_call`` event comes next for ``run_id``: recorded on
    its span (``trace_content`` on; nothing happens when nothing is traced)."""
    if _PROCESS is not None:
        _PROCESS.pending[run_id] = (messages, completion)


def process_tracer() -> RunTracer | None:
    """The process's one :class:`RunTracer`, when the environment asks for traces."""
    global _PROCESS, _CHECKED
    if not _CHECKED:
        _CHECKED = True
        provider = tracer_from_env()
        if provider is not None:
            _PROCESS = RunTracer(provider)
    return _PROCESS


class RunTracer:
    """The event sink that turns runs' events into spans (``tracer(event)``)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("trinity")
        self._trace = trace
        self._context = context
        self._kind = SpanKind
        self._status, self._code = Status, StatusCode
        self._runs: dict[str, _RunSpans] = {}
        self._handlers = {
            "node_finished": self._on_node_finished,
            "llm_call": self._on_llm_call,
            "llm_failed": self._on_llm_failed,
            "tool_call": self._on_tool_call,
            "tool_result": self._on_tool_result,
            "verdict": self._on_verdict,
            "run_finished": self._on_run_finished,
        }
        self.pending: dict[str, tuple[list[tuple[str, str]], str]] = {}
        """Prompt and completion of a run's next ``llm_call`` (:func:`note_content`)."""
        self._agents: dict[str, dict[str, Any]] = {}
        """The attributes of an agent's turn, made once per agent."""

    def __call__(self, event: EventBase) -> None:
        kind = event.kind
        if kind == "run_started":
            self._on_run_started(event)
            return
        spans = self._runs.get(event.run_id)
        if spans is None:
            return
        if not spans.recording:  # sampled out: only its end matters
            if kind == "run_finished":
                self._runs.pop(event.run_id, None)
                spans.run.end(end_time=int(event.ts * _NS))
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(event)

    def shutdown(self) -> None:
        """End what is still open and flush the exporter."""
        for run_id in list(self._runs):
            self._close(run_id, None, None)
        self.provider.shutdown()

    # -- spans -----------------------------------------------------------------------------------

    def _start(self, name: str, parent: Span | None, at: float, **attributes: Any) -> Span:
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            kind=self._kind.INTERNAL,
            start_time=int(at * _NS),
            attributes={k: _value(v) for k, v in attributes.items() if v is not None},
        )

    def _fail(self, span: Span, message: str, error_type: str) -> None:
        span.set_status(self._status(self._code.ERROR, redact(message)[:500]))
        span.set_attribute("error.type", error_type)

    def _node(self, spans: _RunSpans, name: str, at: float) -> None:
        if name and name != "__end__":
            spans.node_name = name
            attributes = self._agents.get(name)
            if attributes is None:  # node names are the graph's: nothing to redact
                attributes = self._agents[name] = {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": name,
                }
            spans.node = self.tracer.start_span(
                f"invoke_agent {name}",
                context=spans.run_context,
                start_time=int(at * _NS),
                attributes=attributes,
            )

    # -- events ----------------------------------------------------------------------------------

    def _on_run_started(self, event: Any) -> None:
        self._close(event.run_id, None, event.ts)  # a run that did not end here before
        run = self.tracer.start_span(  # child of the caller's context (an API request's)
            "trinity.run",
            start_time=int(event.ts * _NS),
            attributes={
                "trinity.run.id": event.run_id,
                "trinity.run.resumed": event.resumed,
                "gen_ai.conversation.id": event.run_id,
            },
        )
        spans = self._runs[event.run_id] = _RunSpans(run)
        if spans.recording:
            spans.run_context = self._trace.set_span_in_context(run)
            self._node(spans, event.start_node, event.ts)

    def _on_node_finished(self, event: Any) -> None:
        spans = self._runs.get(event.run_id)
        if spans is None:
            return
        self._end_tool(spans, event.ts, "the node ended during the call")
        if spans.node is not None:
            spans.node.set_attribute("trinity.step", event.step)
            spans.node.end(end_time=int(event.ts * _NS))
        spans.node = None
        self._node(spans, event.next, event.ts)

    def _on_llm_call(self, event: Any) -> None:
        spans = self._runs.get(event.run_id)
        if spans is None:
            return
        span = self._start(
            f"chat {_value(event.model)}",
            spans.node or spans.run,
            event.ts - event.latency_s,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider_of(event.model),
                "gen_ai.request.model": event.model,
                "gen_ai.response.model": event.model,
                "gen_ai.usage.input_tokens": event.input_tokens,
                "gen_ai.usage.output_tokens": event.output_tokens,
                "gen_ai.response.finish_reasons": [event.finish_reason],
                "trinity.llm.purpose": event.purpose,
                "trinity.llm.attempts": event.attempts,
                "trinity.llm.cost_usd": event.cost_usd,
            },
        )
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
            span.set_attribute("gen_ai.input.messages", redact(json.dumps(shown)))
            span.set_attribute("gen_ai.output.messages", redact(json.dumps(reply)))
        span.end(end_time=int(event.ts * _NS))

    def _on_llm_failed(self, event: Any) -> None:
        spans = self._runs.get(event.run_id)
        if spans is None:
            return
        span = self._start(
            f"chat {_value(event.model)}",
            spans.node or spans.run,
            event.ts,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider_of(event.model),
                "gen_ai.request.model": event.model,
                "trinity.llm.purpose": event.purpose,
                "trinity.llm.attempts": event.attempts,
            },
        )
        self._fail(span, event.error, "llm_failed")
        span.end(end_time=int(event.ts * _NS))

    def _on_tool_call(self, event: Any) -> None:
        spans = self._runs.get(event.run_id)
        if spans is None:
            return
        namespace = event.tool.split(".", 1)[0]
        spans.tool = self._start(
            f"execute_tool {_value(event.tool)}",
            spans.node or spans.run,
            event.ts,
            **{
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool,
                "trinity.step.id": event.step,
                "trinity.tool.attempt": event.attempt,
                "trinity.mcp.server": namespace,
            },
        )
        # The current span while the call runs (this is the caller's task): the hub hands its
        # context to an MCP server with the request.
        spans.tool_token = self._context.attach(self._trace.set_span_in_context(spans.tool))

    def _on_tool_result(self, event: Any) -> None:
        spans = self._runs.get(event.run_id)
        if spans is None or spans.tool is None:
            return
        if not event.ok:
            self._fail(spans.tool, event.error or "failed", "tool_error")
        if event.exit_code is not None:
            spans.tool.set_attribute("trinity.tool.exit_code", event.exit_code)
        self._end_tool(spans, event.ts, None)

    def _end_tool(self, spans: _RunSpans, at: float, cut: str | None) -> None:
        if spans.tool is None:
            return
        if cut is not None:
            self._fail(spans.tool, cut, "cut_off")
        spans.tool.end(end_time=int(at * _NS))
        spans.tool = None
        token, spans.tool_token = spans.tool_token, None
        if token is not None:
            with contextlib.suppress(Exception):  # another task's (a call cut off by a cancel)
                self._context.detach(token)  # type: ignore[arg-type]

    def _on_verdict(self, event: Any) -> None:
        spans = self._runs.get(event.run_id)
        if spans is None:
            return
        span = self._start(
            f"verdict {_value(event.step)}",
            spans.node or spans.run,
            event.ts,
            **{
                "trinity.step.id": event.step,
                "trinity.verdict.passed": event.passed,
                "trinity.verdict.level": event.level,
                "trinity.verdict.summary": event.summary[:500],
            },
        )
        if not event.passed:
            self._fail(span, event.summary or "not passed", "verdict_failed")
        span.end(end_time=int(event.ts * _NS))

    def _on_run_finished(self, event: Any) -> None:
        self._close(event.run_id, event, event.ts)

    def _close(self, run_id: str, finished: Any, at: float | None) -> None:
        spans = self._runs.pop(run_id, None)
        if spans is None:
            return
        end = int(at * _NS) if at is not None else None
        if spans.tool is not None:
            self._end_tool(spans, at or 0.0, "the run ended during the call")
        if spans.node is not None:
            spans.node.end(end_time=end)
        if finished is not None:
            spans.run.set_attribute("trinity.stop_reason", finished.stop_reason)
            if finished.stop_reason in _FAILED:
                self._fail(spans.run, finished.detail or finished.stop_reason, finished.stop_reason)
        spans.run.end(end_time=end)


def _value(value: Any) -> Any:
    """An attribute value, redacted when it is text."""
    if isinstance(value, str):
        return redact(value)[:1000]
    if isinstance(value, list):
        return [_value(item) for item in value]
    return value
