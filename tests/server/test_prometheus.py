"""A real Prometheus (Debian's) scrapes `trinity serve`'s /metrics with a token, and its query
API returns the series the runs made: runs by stop reason, LLM tokens and durations by model
(the GenAI conventions' names), tool calls by server and tool, and the database's gauges."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from server_helpers import Serve, _free_port, admin_token, plan, wait_for_status, write

PROMETHEUS = shutil.which("prometheus")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="LOUD SKIP: Debian's prometheus is not installed (.ci/run does)"
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Serve, str]]:
    env = {**os.environ, "TRINITY_WORKSPACE": str(tmp_path / "ws"), "TRINITY_SANDBOX": "off"}
    env["TRINITY_API_ALLOW_SCRIPTED"] = "true"
    secret = admin_token(tmp_path, env)
    server = Serve(tmp_path, env)
    try:
        yield server, secret
    finally:
        server.stop()


@pytest.fixture
def prometheus(served: tuple[Serve, str], tmp_path: Path) -> Iterator[str]:
    server, secret = served
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: trinity\n"
        f"    authorization: {{credentials: {secret}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
    )
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < until, "prometheus did not get ready"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def query(prometheus: str, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
    """An instant query's result: {labels (without __name__, job, instance): value}."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=5)
    answer.raise_for_status()
    found = {}
    for series in answer.json()["data"]["result"]:
        labels = {
            k: v for k, v in series["metric"].items() if k not in ("__name__", "job", "instance")
        }
        found[tuple(sorted(labels.items()))] = float(series["value"][1])
    return found


def eventually(prometheus: str, expression: str, expected: Any, timeout: float = 30) -> None:
    until = time.monotonic() + timeout
    while (got := query(prometheus, expression)) != expected:
        assert time.monotonic() < until, f"{expression}: {got}, expected {expected}"
        time.sleep(0.5)


async def test_prometheus_scrapes_the_runs_series(
    served: tuple[Serve, str], prometheus: str
) -> None:
    server, secret = served
    headers = {"Authorization": f"Bearer {secret}"}
    failing = {"id": "bad", "tool": "shell.run", "args": {"command": "exit 3"}}
    ask = {"id": "ask", "tool": "person.ask", "args": {"question": "go?"}}
    model = f"scripted:{EXAMPLES / 'scripted' / 'notes.yaml'}"
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as api:
        for body, status in [
            ({"plan": plan(write("a"))}, "succeeded"),
            ({"plan": plan(write("b"), failing)}, "failed"),
            ({"task": "Create notes.txt with three lines and count them", "model": model}, None),
            ({"plan": plan(ask)}, "awaiting_approval"),
        ]:
            created = await api.post("/v1/runs", json=body)
            assert created.status_code == 201, created.text
            run_id = created.json()["run"]["id"]
            if status is None:
                until = time.monotonic() + 30
                while (run := await api.get(f"/v1/runs/{run_id}")).json()["status"] == "running":
                    assert time.monotonic() < until
                    time.sleep(0.1)
                assert run.json()["stop_reason"] == "completed", run.json()["stop_detail"]
            else:
                await wait_for_status(api, run_id, status)
        unauthorised = await api.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert unauthorised.status_code == 401

    eventually(
        prometheus,
        "trinity_runs_finished_total",
        {
            (("stop_reason", "completed"),): 2.0,
            (("stop_reason", "failed"),): 1.0,
            (("stop_reason", "awaiting_approval"),): 1.0,
        },
    )
    model_labels = (
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "scripted"),
        ("gen_ai_request_model", model),
    )
    tokens = query(prometheus, "gen_ai_client_token_usage_count")
    assert tokens[(*model_labels, ("gen_ai_token_type", "input"))] == 4  # plan, replan, 2 judges
    duration = query(prometheus, "gen_ai_client_operation_duration_seconds_count")
    assert duration == {model_labels: 4.0}  # error_type="" is no label to Prometheus
    tools = query(prometheus, 'trinity_tool_call_errors_total{tool="shell.run"}')
    assert tools == {(("server", "builtin"), ("tool", "shell.run")): 2.0}  # tried, then retried
    assert query(prometheus, "trinity_approvals_pending") == {(): 1.0}
    assert query(prometheus, 'trinity_runs{status="succeeded"}') == {
        (("status", "succeeded"),): 2.0
    }
    p95 = query(
        prometheus, "histogram_quantile(0.95, sum by (le) (trinity_run_duration_seconds_bucket))"
    )
    assert 0 < next(iter(p95.values())) < 60

    # every query of the shipped Grafana dashboard and alert rules runs on these series
    dashboard = json.loads((DEPLOY / "grafana" / "trinity.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    answered = {}
    for expression in exprs:
        reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=5)
        assert reply.status_code == 200 and reply.json()["status"] == "success", expression
        answered[expression] = reply.json()["data"]["result"]
    assert answered["trinity_runs_active"] and answered["trinity_approvals_pending"]
