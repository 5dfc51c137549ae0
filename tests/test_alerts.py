"""Alerting: a forced error burst fires one alert and its end resolves it, told once each to
real local webhook receivers (JSON and Slack bodies), never twice within the cool-down, even
with two evaluators on one database; a receiver that is down is retried, then given up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trinity.config import AlertRule, AlertWebhook, Settings
from trinity.observability import alerts as alerting
from trinity.observability.alerts import AlertEvaluator
from trinity.runtime import Runtime
from trinity.store import Store

FAIL = {"steps": [{"id": "bad", "tool": "shell.run", "args": {"command": "exit 3"}}]}


class Receiver:
    """A webhook endpoint: keeps what it is sent; ``refuse`` first answers with 503s."""

    def __init__(self, refuse: int = 0) -> None:
        self.got: list[dict[str, Any]] = []
        self.attempts = 0
        this = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                this.attempts += 1
                if this.attempts <= refuse:
                    self.send_response(503)
                else:
                    this.got.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerting, "RETRY_DELAYS_S", (0.05, 0.05, 0.05))


async def failing_runs(settings: Settings, tmp_path: Path, n: int) -> None:
    plan = tmp_path / "fail.json"
    plan.write_text(json.dumps(FAIL))
    runtime = Runtime(settings)
    try:
        for _ in range(n):
            await runtime.start(runtime.prepare(str(plan)))
    finally:
        runtime.close()


def evaluator(settings: Settings, at: list[float]) -> tuple[AlertEvaluator, Store]:
    store = Store.open(settings.database_url)
    return AlertEvaluator(settings, lambda: store, clock=lambda: at[0]), store


async def test_an_error_burst_fires_once_and_resolves_once(
    tmp_path: Path, settings: Settings, receivers: list[Receiver]
) -> None:
    plain, slack = Receiver(), Receiver()
    receivers += [plain, slack]
    tuned = settings.model_copy(
        update={
            "alerts": [AlertRule(name="errors", kind="error_rate", threshold=0.5, min_runs=3)],
            "alert_webhooks": [
                AlertWebhook(url=plain.url),
                AlertWebhook(url=slack.url, format="slack"),
            ],
            "alert_cooldown_s": 600,
        }
    )
    await failing_runs(tuned, tmp_path, 2)
    now = [time.time() + 1]
    check, store = evaluator(tuned, now)
    try:
        assert await check.evaluate() == []  # 2 runs ended: fewer than min_runs
        await failing_runs(tuned, tmp_path, 1)
        [fired] = await check.evaluate()
        assert fired.status == "firing" and fired.measure.value == 1.0
        now[0] += 5
        assert await check.evaluate() == []  # still firing: told already
        now[0] += 700  # the burst left the 10-minute window: too few runs to judge
        [resolved] = await check.evaluate()
        assert resolved.status == "resolved"
        now[0] += 5
        assert await check.evaluate() == []
        assert store.alert_states()["errors"]["state"] == "ok"
    finally:
        store.close()
    assert [(b["alert"], b["status"], b["value"]) for b in plain.got] == [
        ("errors", "firing", 1.0),
        ("errors", "resolved", None),
    ]
    assert plain.got[0]["summary"] == "3 of 3 runs failed in 10 min (100%)"
    assert plain.got[0]["severity"] == "warning" and plain.got[0]["threshold"] == 0.5
    assert [b["text"] for b in slack.got] == [
        ":rotating_light: [FIRING] errors: 3 of 3 runs failed in 10 min (100%)",
        ":white_check_mark: [RESOLVED] errors: 0 run(s) ended in 10 min: too few",
    ]


async def test_a_firing_alert_is_told_again_only_after_the_cool_down(
    tmp_path: Path, settings: Settings, receivers: list[Receiver]
) -> None:
    hook = Receiver()
    receivers.append(hook)
    rule = AlertRule(name="slow", kind="budget_stops", threshold=0, window_s=86400)
    tuned = settings.model_copy(
        update={"alerts": [rule], "alert_webhooks": [AlertWebhook(url=hook.url)]}
    )
    await failing_runs(tuned.model_copy(update={"max_steps": 3}), tmp_path, 1)  # step budget
    now = [time.time() + 1]
    first, store_a = evaluator(tuned.model_copy(update={"alert_cooldown_s": 60}), now)
    second, store_b = evaluator(tuned.model_copy(update={"alert_cooldown_s": 60}), now)
    try:
        # two evaluators at once (two servers on one database): told once
        together = await asyncio.gather(first.evaluate(), second.evaluate())
        assert sorted(len(told) for told in together) == [0, 1]
        fired_at = next(told[0].sent_at for told in together if told)
        now[0] = fired_at + 59  # within the cool-down: nothing
        assert await first.evaluate() == [] and await second.evaluate() == []
        now[0] = fired_at + 61  # past it: told again, by one of them
        again = await first.evaluate() + await second.evaluate()
        assert [n.status for n in again] == ["firing"]
    finally:
        store_a.close()
        store_b.close()
    assert [b["status"] for b in hook.got] == ["firing", "firing"]
    assert hook.got[0]["summary"] == "1 run(s) stopped on a budget in 1440 min"


async def test_a_receiver_that_is_down_is_retried_then_given_up(
    tmp_path: Path,
    settings: Settings,
    receivers: list[Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky, healthy = Receiver(refuse=2), Receiver()
    gone = Receiver()
    gone.close()  # nothing listens there any more
    receivers += [flaky, healthy]
    tuned = settings.model_copy(
        update={
            "alerts": [AlertRule(name="errors", kind="error_rate", threshold=0.1)],
            "alert_webhooks": [AlertWebhook(url=u) for u in (flaky.url, gone.url, healthy.url)],
        }
    )
    await failing_runs(tuned, tmp_path, 1)
    check, store = evaluator(tuned, [time.time() + 1])
    try:
        with caplog.at_level(logging.WARNING, logger="trinity.alerts"):
            told = await check.evaluate()
    finally:
        store.close()
    assert flaky.attempts == 3 and [b["status"] for b in flaky.got] == ["firing"]
    assert [b["status"] for b in healthy.got] == ["firing"]
    assert [n.status for n in told] == ["firing"]
    host = gone.url.split("/")[2]
    assert f"webhook to {host} failed after 4 attempt(s): ConnectError" in caplog.text
    assert "alert errors firing (warning): 1 of 1 runs failed" in caplog.text


def test_trinity_alerts_check_from_cron(tmp_path: Path, receivers: list[Receiver]) -> None:
    hook = Receiver()
    receivers.append(hook)
    (tmp_path / "trinity.toml").write_text(
        '[[alerts]]\nname = "errors"\nkind = "error_rate"\nthreshold = 0.2\n\n'
        f'[[alert_webhooks]]\nurl = "{hook.url}"\n'
    )
    (tmp_path / "fail.json").write_text(json.dumps(FAIL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
    env |= {"TRINITY_SANDBOX": "off", "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trinity", *args, "--db", "t.db"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    cli("run", "fail.json", "-w", "ws")
    first = cli("alerts", "check")
    assert first.returncode == 0, first.stderr
    assert "told: errors firing" in first.stderr and "firing" in first.stdout
    second = cli("alerts", "check", "--json")
    assert json.loads(second.stdout)["told"] == []  # no duplicate from the next cron run
    assert [b["status"] for b in hook.got] == ["firing"]
