"""The shipped monitoring files: Prometheus alerting rules that promtool accepts and whose unit
tests fire each alert, and a Grafana dashboard over metrics Trinity exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from trinity.observability.metrics import RunMetrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="LOUD SKIP: promtool (Debian's prometheus) is not installed"
)
GAUGES = {"trinity_runs", "trinity_runs_active", "trinity_approvals_pending",
          "trinity_oldest_run_age_seconds"}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_promtool_accepts_the_rules_and_their_tests_fire_every_alert() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, checked
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = (DEPLOY / "prometheus" / "alerts.test.yml").read_text()
    assert {name for name in names if f"alertname: {name}\n" in tests} == names


def test_the_rules_and_the_dashboard_use_only_metrics_trinity_exports() -> None:
    registry = CollectorRegistry()
    RunMetrics(registry)
    exported = set(GAUGES)
    labels: set[str] = set()
    for family in registry.collect():
        exported |= {sample.name for sample in family.samples} | {family.name}
        labels |= {label for sample in family.samples for label in sample.labels}
    text = generate_latest(registry).decode()
    exported |= set(re.findall(r"^# TYPE (\S+)", text, re.M))
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        exported |= {name + suffix for name in list(exported)}
    dashboard = json.loads((DEPLOY / "grafana" / "trinity.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    found = {name for expr in exprs for name in re.findall(r"\b((?:trinity|gen_ai)_\w+)", expr)}
    used = found - labels - {"gen_ai_operation_name", "gen_ai_provider_name",
                             "gen_ai_request_model", "gen_ai_token_type"}  # fmt: skip
    assert used and used <= exported, used - exported
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
