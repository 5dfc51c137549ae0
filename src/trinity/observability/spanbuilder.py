"""Spans made from the trace messages a run's process sends (:mod:`.tracing`).

:class:`SpanBuilder` runs in the exporting process (:mod:`.export_child`): it keeps each traced
run's open spans and hands every span that ends to ``ship`` as a :class:`~.spans.SpanRecord`.
A node's span starts when the engine moves to it (the run's start or the previous node's end
names it) and ends with the node; a tool call's span has the id the run's process chose (it
went to the MCP server as the call's ``traceparent``); an LLM call's span is placed by its
measured latency; a verdict is a span of its own, under the agent's.

The messages are plain tuples, their strings already redacted by the run's process; the first
item says what happened:

========================  ==========================================================================
``start``                 run_id, ts, trace_id, parent span id (0: none), parent is remote,
                          first node, resumed
``node``                  run_id, ts, step, next node (a node ended)
``llm``                   run_id, ts, model, provider, latency_s, input tokens, output tokens,
                          finish reason, purpose, attempts, cost_usd, input / output messages
                          (JSON, or ``None`` without ``trace_content``)
``llm_failed``            run_id, ts, model, provider, purpose, attempts, error
``tool``                  run_id, ts, span id, tool, step, attempt
``tool_end``              run_id, ts, ok, exit code, error
``verdict``               run_id, ts, step, passed, level, summary
``end``                   run_id, ts, stop reason, detail
========================  ==========================================================================

When the messages stop for good (the run's process exited, or was killed), :meth:`close_all`
ends what is still open with an error status, so a run cut short still shows its trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trinity.observability import NOT_FAILED
from trinity.observability.spans import SpanRecord, new_id

_NS = 1_000_000_000


class _Open:
    """A span not ended yet."""

    __slots__ = ("attributes", "name", "span_id", "start_ns")

    def __init__(self, name: str, start: float, attributes: dict[str, Any], span_id: int = 0):
        self.span_id = span_id or new_id(64)
        self.name = name
        self.start_ns = int(start * _NS)
        self.attributes = attributes


class _RunSpans:
    """One run's open spans."""

    __slots__ = ("last", "node", "parent_id", "remote", "run", "tool", "trace_id")

    def __init__(self, trace_id: int, run: _Open, parent_id: int, remote: bool) -> None:
        self.trace_id = trace_id
        self.run = run
        self.parent_id = parent_id
        self.remote = remote
        self.node: _Open | None = None
        self.tool: _Open | None = None
        self.last = 0.0
        """When the run's latest message happened."""


class SpanBuilder:
    """Trace messages in (``builder(message)``), span records out (``ship(record)``)."""

    def __init__(self, ship: Callable[[SpanRecord], None]) -> None:
        self.ship = ship
        self._runs: dict[str, _RunSpans] = {}
        self._handlers: dict[str, Callable[[_RunSpans, tuple[Any, ...]], None]] = {
            "node": self._node_ended,
            "llm": self._llm,
            "llm_failed": self._llm_failed,
            "tool": self._tool,
            "tool_end": self._tool_ended,
            "verdict": self._verdict,
        }

    def __call__(self, message: tuple[Any, ...]) -> None:
        kind, run_id, ts = message[0], message[1], message[2]
        if kind == "start":
            self._start(message)
            return
        spans = self._runs.get(run_id)
        if spans is None:
            return
        spans.last = ts
        if kind == "end":
            self._close(run_id, ts, message[3], message[4])
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(spans, message)

    def close_all(self, why: str = "the traced process ended during the run") -> None:
        """End every run still open, at its last message, with an error status."""
        for run_id in list(self._runs):
            self._close(run_id, self._runs[run_id].last, None, why)

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
        end_ns = int(at * _NS)
        self.ship(
            SpanRecord(
                spans.trace_id,
                span.span_id,
                parent_id,
                span.name,
                span.start_ns,
                end_ns if end_ns > span.start_ns else span.start_ns,
                span.attributes,
                error,
                remote,
            )
        )

    def _instant(
        self,
        spans: _RunSpans,
        name: str,
        start: float,
        at: float,
        attributes: dict[str, Any],
        error: str | None = None,
    ) -> None:
        """A span made and ended at once (an LLM call; a verdict), under the agent's."""
        self._end(spans, _Open(name, start, attributes), self._parent_of_child(spans), at, error)

    def _open_node(self, spans: _RunSpans, name: str, at: float) -> None:
        if not name or name == "__end__":
            return
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}
        spans.node = _Open(f"invoke_agent {name}", at, attributes)

    def _parent_of_child(self, spans: _RunSpans) -> int:
        return spans.node.span_id if spans.node is not None else spans.run.span_id

    def _end_tool(self, spans: _RunSpans, at: float, error: str | None, cut: bool) -> None:
        tool = spans.tool
        if tool is None:
            return
        if cut:
            tool.attributes["error.type"] = "cut_off"
        self._end(spans, tool, self._parent_of_child(spans), at, error)
        spans.tool = None

    # -- messages --------------------------------------------------------------------------------

    def _start(self, message: tuple[Any, ...]) -> None:
        _, run_id, ts, trace_id, parent_id, remote, first, resumed = message
        if run_id in self._runs:  # a run that did not end here before
            self._close(run_id, ts, None, "the run started again before it ended")
        run = _Open(
            "trinity.run",
            ts,
            {
                "trinity.run.id": run_id,
                "trinity.run.resumed": resumed,
                "gen_ai.conversation.id": run_id,
            },
        )
        spans = self._runs[run_id] = _RunSpans(trace_id, run, parent_id, remote)
        spans.last = ts
        self._open_node(spans, first, ts)

    def _node_ended(self, spans: _RunSpans, message: tuple[Any, ...]) -> None:
        _, _, ts, step, following = message
        self._end_tool(spans, ts, "the node ended during the call", cut=True)
        if spans.node is not None:
            spans.node.attributes["trinity.step"] = step
            self._end(spans, spans.node, spans.run.span_id, ts)
        spans.node = None
        self._open_node(spans, following, ts)

    def _llm(self, spans: _RunSpans, message: tuple[Any, ...]) -> None:
        (_, _, ts, model, provider, latency, tokens_in, tokens_out, finish, purpose, attempts,
         cost, shown, reply) = message  # fmt: skip
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": tokens_in,
            "gen_ai.usage.output_tokens": tokens_out,
            "gen_ai.response.finish_reasons": [finish],
            "trinity.llm.purpose": purpose,
            "trinity.llm.attempts": attempts,
        }
        if cost is not None:
            attributes["trinity.llm.cost_usd"] = cost
        if shown is not None:
            attributes["gen_ai.input.messages"] = shown
            attributes["gen_ai.output.messages"] = reply
        self._instant(spans, f"chat {model}", ts - latency, ts, attributes)

    def _llm_failed(self, spans: _RunSpans, message: tuple[Any, ...]) -> None:
        _, _, ts, model, provider, purpose, attempts, error = message
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "trinity.llm.purpose": purpose,
            "trinity.llm.attempts": attempts,
            "error.type": "llm_failed",
        }
        self._instant(spans, f"chat {model}", ts, ts, attributes, error)

    def _tool(self, spans: _RunSpans, message: tuple[Any, ...]) -> None:
        _, _, ts, span_id, tool, step, attempt = message
        self._end_tool(spans, ts, "another call started during the call", cut=True)
        spans.tool = _Open(
            f"execute_tool {tool}",
            ts,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "trinity.step.id": step,
                "trinity.tool.attempt": attempt,
                "trinity.mcp.server": tool.split(".", 1)[0],
            },
            span_id,
        )

    def _tool_ended(self, spans: _RunSpans, message: tuple[Any, ...]) -> None:
        _, _, ts, ok, exit_code, error = message
        tool = spans.tool
        if tool is None:
            return
        if exit_code is not None:
            tool.attributes["trinity.tool.exit_code"] = exit_code
        if not ok:
            tool.attributes["error.type"] = "tool_error"
        self._end_tool(spans, ts, None if ok else (error or "failed"), cut=False)

    def _verdict(self, spans: _RunSpans, message: tuple[Any, ...]) -> None:
        _, _, ts, step, passed, level, summary = message
        attributes = {
            "trinity.step.id": step,
            "trinity.verdict.passed": passed,
            "trinity.verdict.level": level,
            "trinity.verdict.summary": summary,
        }
        error = None
        if not passed:
            attributes["error.type"] = "verdict_failed"
            error = summary or "not passed"
        self._instant(spans, f"verdict {step}", ts, ts, attributes, error)

    def _close(self, run_id: str, at: float, stop_reason: str | None, detail: str | None) -> None:
        spans = self._runs.pop(run_id)
        self._end_tool(spans, at, "the run ended during the call", cut=True)
        if spans.node is not None:
            self._end(spans, spans.node, spans.run.span_id, at)
        error = None
        if stop_reason is not None:
            spans.run.attributes["trinity.stop_reason"] = stop_reason
        if stop_reason not in NOT_FAILED:
            spans.run.attributes["error.type"] = stop_reason or "cut_off"
            error = detail or stop_reason
        self._end(spans, spans.run, spans.parent_id, at, error, spans.remote)
