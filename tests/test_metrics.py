"""Prometheus metrics from a run's events, in one process and across processes (metrics_dir
and `trinity metrics serve`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from trinity.events import LLMCall, RunFinished, RunStarted, ToolCalled, ToolReturned
from trinity.observability.metrics import RunMetrics
from trinity.security.secrets import SECRETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_events_become_series_with_redacted_labels() -> None:
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    SECRETS.add("hunter2-very-secret-password", "test")
    model = "openai-compatible:http://me:hunter2-very-secret-password@llm.local/v1#llama"
    for event, ts in [
        (RunStarted(start_node="recall", step=0), 100.0),
        (
            LLMCall(
                purpose="atlas.plan",
                model=model,
                input_tokens=900,
                output_tokens=80,
                latency_s=1.5,
                attempts=1,
                cost_usd=0.002,
            ),
            101.0,
        ),
        (ToolCalled(step="s", tool="time.get_current_time", attempt=1), 101.5),
        (ToolReturned(step="s", ok=False, error="boom", seconds=0.25), 101.75),
        (RunFinished(stop_reason="failed"), 104.0),
    ]:
        event.run_id, event.ts = "r1", ts
        metrics(event)
    text = generate_latest(registry).decode()
    assert "hunter2" not in text
    labels = (
        'gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
        'gen_ai_request_model="openai-compatible:http://me:[REDACTED]@llm.local/v1#llama"'
    )
    assert f'gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="input"}} 900.0' in text
    assert f"gen_ai_client_operation_duration_seconds_sum{{{labels}}} 1.5" in text
    tool = 'server="time",tool="time.get_current_time"'
    assert f"trinity_tool_call_errors_total{{{tool}}} 1.0" in text
    assert 'trinity_run_duration_seconds_sum{stop_reason="failed"} 4.0' in text
    assert 'trinity_runs_finished_total{stop_reason="failed"} 1.0' in text
    assert "_created" not in text


def test_label_sets_past_the_cap_are_counted_as_other() -> None:
    """A stream of distinct tool names (an MCP server listing thousands, say) stops making new
    series at SERIES_PER_METRIC: the rest are counted, under "other"."""
    from trinity.observability.metrics import SERIES_PER_METRIC

    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    calls = SERIES_PER_METRIC + 50
    for n in range(calls):
        for event in (
            ToolCalled(step="s", tool=f"mcp{n}.tool", attempt=1),
            ToolReturned(step="s", ok=False, error="no", seconds=0.01),
        ):
            event.run_id, event.ts = "r1", 1.0
            metrics(event)
    counts = [
        (sample.labels, sample.value)
        for family in registry.collect()
        if family.name == "trinity_tool_call_errors"
        for sample in family.samples
    ]
    assert len(counts) == SERIES_PER_METRIC + 1
    assert ({"server": "other", "tool": "other"}, 50.0) in counts
    assert sum(value for _, value in counts) == calls


def test_cli_runs_keep_metrics_that_trinity_metrics_serve_shows(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
    env |= {"TRINITY_METRICS_DIR": str(tmp_path / "metrics"), "TRINITY_SANDBOX": "off"}
    db = str(tmp_path / "t.db")
    trinity = [sys.executable, "-m", "trinity"]
    for _ in range(2):  # two processes, one after the other
        ran = subprocess.run(
            [*trinity, "run", str(EXAMPLES / "hello.yaml"), "--db", db, "-w", str(tmp_path / "w")],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    # a process killed while its file grew left it truncated: the others still count
    (tmp_path / "metrics" / "counter_999999.db").write_bytes(b"\x00\x10\x00\x00cut")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*trinity, "metrics", "serve", "--port", str(port), "--db", db],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until = time.monotonic() + 20
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except httpx.HTTPError:
                if time.monotonic() > until:
                    server.terminate()
                    raise AssertionError(f"no scrape answered: {server.communicate()[1]}") from None
                time.sleep(0.1)
        missing = httpx.get(f"http://127.0.0.1:{port}/other", timeout=2)
    finally:
        server.terminate()
        server.wait(10)
    assert 'trinity_runs_finished_total{stop_reason="completed"} 2.0' in text, text
    assert 'trinity_runs{status="succeeded"} 2.0' in text
    assert "trinity_tool_call_duration_seconds_count" in text
    assert missing.status_code == 404
