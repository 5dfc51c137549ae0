"""Traces over OTLP to an in-test receiver (the protobuf decoded with opentelemetry-proto): a
scripted run has its run, agent, LLM, tool and verdict spans, parented and nested, named and
attributed per the GenAI semantic conventions; an MCP call carries the trace to the server (a
run started over the API joins the caller's trace: tests/server/test_api_tracing.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parents[1]
META_SERVER = ROOT / "tests" / "mcp_servers" / "meta_server.py"


class Receiver:
    """An OTLP/HTTP trace endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            spans.append(_decoded(span))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_name(self, prefix: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"].startswith(prefix)]


def _decoded(span: Any) -> dict[str, Any]:
    attributes = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        attributes[kv.key] = value
    return {
        "name": span.name,
        "trace": span.trace_id.hex(),
        "id": span.span_id.hex(),
        "parent": span.parent_span_id.hex(),
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "attributes": attributes,
        "error": span.status.code == 2,
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()


def traced_env(receiver: Receiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINITY_", "OTEL_"))}
    return env | {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "TRINITY_SANDBOX": "off",
    }


def test_a_scripted_run_exports_its_spans_over_otlp(tmp_path: Path, receiver: Receiver) -> None:
    model = f"scripted:{ROOT / 'examples' / 'scripted' / 'notes.yaml'}"
    ran = subprocess.run(
        [sys.executable, "-m", "trinity", "run", "Create notes.txt with three lines and count them",
         "--model", model, "--db", str(tmp_path / "t.db"), "-w", str(tmp_path / "ws")],
        env=traced_env(receiver), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    [run] = receiver.by_name("trinity.run")
    assert run["parent"] == "" and run["attributes"]["trinity.stop_reason"] == "completed"
    by_id = {span["id"]: span for span in receiver.spans}
    assert {span["trace"] for span in receiver.spans} == {run["trace"]}
    nodes = receiver.by_name("invoke_agent ")
    assert {n["attributes"]["gen_ai.agent.name"] for n in nodes} >= {
        "recall", "meta", "atlas", "tetyana", "grisha", "learn"
    }  # fmt: skip
    assert all(n["parent"] == run["id"] for n in nodes)
    assert all(n["attributes"]["gen_ai.operation.name"] == "invoke_agent" for n in nodes)
    chats = receiver.by_name("chat ")
    assert len(chats) == 4  # plan, replan and two judgements
    for chat in chats:
        parent = by_id[chat["parent"]]
        assert parent["attributes"]["gen_ai.agent.name"] in ("atlas", "grisha")
        a = chat["attributes"]
        assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"]) == ("chat", "scripted")
        assert a["gen_ai.request.model"] == model and a["gen_ai.usage.input_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
    tools = receiver.by_name("execute_tool ")
    assert {t["name"] for t in tools} == {"execute_tool fs.write", "execute_tool shell.run"}
    assert len(tools) == 4  # write, its retry, write-2, count-2
    for tool in tools:
        assert by_id[tool["parent"]]["attributes"]["gen_ai.agent.name"] == "tetyana"
        assert tool["attributes"]["gen_ai.tool.name"] == tool["name"].split(" ", 1)[1]
    verdicts = receiver.by_name("verdict ")
    assert [v["error"] for v in verdicts].count(True) == 2  # the misspelt write, twice
    # durations nest: every child within its parent (a millisecond of rounding allowed)
    for span in receiver.spans:
        if span["parent"]:
            parent = by_id[span["parent"]]
            assert parent["start"] - 1_000_000 <= span["start"] <= span["end"]
            assert span["end"] <= parent["end"] + 1_000_000, (span["name"], parent["name"])


@pytest.fixture
def meta_http() -> Iterator[str]:
    """meta_server.py over streamable HTTP: its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(META_SERVER), "--http", str(port)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_an_mcp_call_carries_the_trace_to_the_server(
    tmp_path: Path, receiver: Receiver, transport: str, request: pytest.FixtureRequest
) -> None:
    """The tool span's context goes in the request's ``_meta.traceparent`` (both transports)
    and, over HTTP, in the W3C ``traceparent`` header too."""
    meta: dict[str, Any] = {"command": sys.executable, "args": [str(META_SERVER)]}
    if transport == "http":
        meta = {"url": request.getfixturevalue("meta_http")}
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"meta": meta}}))
    plan = {"steps": [{"id": "look", "tool": "meta.seen", "args": {}}]}
    (tmp_path / "p.json").write_text(json.dumps(plan))
    ran = subprocess.run(
        [sys.executable, "-m", "trinity", "run", str(tmp_path / "p.json"), "--mcp",
         str(tmp_path / "mcp.json"), "--db", str(tmp_path / "t.db"), "-w", str(tmp_path / "ws"),
         "--json"],
        env=traced_env(receiver), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    state = json.loads(ran.stdout)
    seen = json.loads(state["plan"]["steps"][0]["attempts"][0]["result"]["output"])
    [tool] = receiver.by_name("execute_tool meta.seen")
    version, trace, span, flags = seen["traceparent"].split("-")
    assert (version, trace, span) == ("00", tool["trace"], tool["id"])
    assert int(flags, 16) & 1  # sampled
    assert tool["attributes"]["trinity.mcp.server"] == "meta"
    if transport == "http":
        assert seen["http_traceparent"] == seen["traceparent"]
    else:
        assert "http_traceparent" not in seen


def test_a_killed_run_still_exports_its_trace(tmp_path: Path, receiver: Receiver) -> None:
    """``kill -9`` in the middle of a tool call: the exporting process (a session of its own)
    gets what the run sent up to the last second, ends the spans left open as cut off, and
    exports them."""
    plan = {"steps": [
        {"id": "write", "tool": "fs.write", "args": {"path": "a.txt", "content": "a"}},
        {"id": "wait", "tool": "shell.run", "args": {"command": "sleep 20"}},
    ]}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(plan))
    run = subprocess.Popen(
        [sys.executable, "-m", "trinity", "run", str(tmp_path / "p.json"),
         "--db", str(tmp_path / "t.db"), "-w", str(tmp_path / "ws")],
        env=traced_env(receiver), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not receiver.by_name("execute_tool fs.write") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receiver.by_name("execute_tool fs.write"), "no span came while the run went on"
        time.sleep(1.5)  # the sleep's call has begun, and a periodic flush has shipped it
        run.kill()
        run.wait(10)
        while not receiver.by_name("trinity.run") and time.monotonic() < deadline + 15:
            time.sleep(0.1)
    finally:
        run.kill()
        run.wait(10)
    [root] = receiver.by_name("trinity.run")
    assert root["error"] and root["attributes"]["error.type"] == "cut_off"
    [wait] = receiver.by_name("execute_tool shell.run")
    assert wait["error"] and wait["attributes"]["error.type"] == "cut_off"
    assert wait["parent"] in {n["id"] for n in receiver.by_name("invoke_agent tetyana")}
    assert all(span["trace"] == root["trace"] for span in receiver.spans)


def test_a_hung_collector_does_not_hold_a_run(tmp_path: Path) -> None:
    """A collector that accepts connections and never answers: the run's 1,500 messages go to
    the exporting process by a thread of their own, so the run and the command end at their
    usual pace (they once waited for every export: 10 s of exporter timeout a batch), and the
    exporting process, left to finish alone, lets go of the command's output after 3 s (it
    held the pipe that captures it for the SDK's 30 s shutdown)."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        steps = [
            {"id": f"s{i}", "tool": "fs.write", "args": {"path": f"{i}.txt", "content": "x"}}
            for i in range(300)
        ]
        (tmp_path / "p.json").write_text(json.dumps({"steps": steps}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINITY_", "OTEL_"))}
        env |= {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hung.getsockname()[1]}",
        }
        started = time.monotonic()
        ran = subprocess.run(
            [sys.executable, "-m", "trinity", "run", str(tmp_path / "p.json"), "--max-steps",
             "2000", "--db", str(tmp_path / "t.db"), "-w", str(tmp_path / "ws"), "--json"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        took = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["stop_reason"] == "completed"
    assert took < 20, f"the run waited for the collector: {took:.1f}s"  # was 30.8 s, now ~5


def test_span_attributes_and_statuses_are_redacted() -> None:
    from trinity.events import RunFinished, RunStarted, ToolCalled, ToolReturned, VerdictGiven
    from trinity.observability.spanbuilder import SpanBuilder
    from trinity.observability.spans import SpanRecord
    from trinity.observability.tracing import RunTracer
    from trinity.security.secrets import SECRETS

    secret = "sk-test-0123456789abcdefghijklmnop"
    SECRETS.add(secret, "test")
    shipped: list[SpanRecord] = []
    tracer = RunTracer(SpanBuilder(shipped.append))
    for event in [
        RunStarted(start_node="tetyana", step=0),
        ToolCalled(step="s", tool="shell.run", attempt=1),
        ToolReturned(step="s", ok=False, error=f"curl: bad key {secret}", seconds=0.1),
        VerdictGiven(step="s", passed=False, level="checks", summary=f"saw {secret}"),
        RunFinished(stop_reason="failed", detail=f"step s failed: {secret}"),
    ]:
        event.run_id, event.ts = "r", time.time()
        tracer(event)
    assert {r.name for r in shipped} >= {"trinity.run", "execute_tool shell.run", "verdict s"}
    shown = " ".join(f"{r.error} {r.attributes}" for r in shipped)
    assert secret not in shown and "[REDACTED]" in shown


def test_sampling_and_an_unparseable_traceparent() -> None:
    from trinity.observability.spans import Sampler, TraceContext, incoming_trace, trace_carrier

    assert Sampler("always_off").sampled(5, None) is False
    assert Sampler("parentbased_always_off").sampled(5, TraceContext(1, 2, True)) is True
    ratio = Sampler("traceidratio", "0.25")
    picked = sum(ratio.sampled(n * (1 << 60) + 7, None) for n in range(16))
    assert picked == 4  # the low 64 bits against a quarter of their range
    with incoming_trace({"traceparent": "00-zz-00f067aa0ba902b7-01"}):
        assert trace_carrier() == {}  # malformed: ignored, as W3C asks
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with incoming_trace({"traceparent": parent}):
        assert trace_carrier() == {"traceparent": parent}
    assert trace_carrier() == {}


def test_prompts_and_completions_only_with_trace_content_and_redacted(
    tmp_path: Path, receiver: Receiver
) -> None:
    model = f"scripted:{ROOT / 'examples' / 'scripted' / 'notes.yaml'}"
    secret = "sk-proj-" + "Q" * 40
    task = f"Create notes.txt with three lines and count them (key {secret})"
    for capture in ("false", "true"):
        ran = subprocess.run(
            [sys.executable, "-m", "trinity", "run", task, "--model", model,
             "--db", str(tmp_path / f"{capture}.db"), "-w", str(tmp_path / "ws")],
            env=traced_env(receiver) | {"TRINITY_TRACE_CONTENT": capture},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    chats = receiver.by_name("chat ")
    assert len(chats) == 8
    recorded = [c for c in chats if "gen_ai.input.messages" in c["attributes"]]
    assert len(recorded) == 4  # the second run's four calls only
    plan = next(c for c in recorded if c["attributes"]["trinity.llm.purpose"] == "atlas.plan")
    messages = json.loads(plan["attributes"]["gen_ai.input.messages"])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["parts"][0]["content"]
    assert "Create notes.txt" in user and secret not in user and "[REDACTED]" in user
    reply = json.loads(plan["attributes"]["gen_ai.output.messages"])
    assert reply[0]["role"] == "assistant" and '"rationale"' in reply[0]["parts"][0]["content"]
