"""A run killed in the middle of a side effect resumes without repeating it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PLAN = """
task: Append to a ledger once, then write a receipt
steps:
  - id: ledger
    tool: shell.run
    args:
      command: "echo paid >> ledger.txt; sleep 30"
      timeout_s: 60
    checks:
      - file_contains: {path: ledger.txt, text: paid}
  - id: receipt
    tool: fs.write
    args: {path: receipt.txt, content: done}
    checks:
      - file_exists: receipt.txt
"""


def trinity(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trinity", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_killed_run_resumes_without_repeating_the_side_effect(tmp_path: Path) -> None:
    plan = tmp_path / "pay.yaml"
    plan.write_text(PLAN)
    workspace = tmp_path / "ws"
    db = str(tmp_path / "t.db")
    env = {**os.environ, "TRINITY_DATABASE_URL": db, "TRINITY_WORKSPACE": str(workspace)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trinity", "run", str(plan)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ledger = workspace / "ledger.txt"
    try:
        deadline = time.monotonic() + 30
        while not ledger.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ledger.exists(), "the run never reached its side effect"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its shell die together: a crash
        proc.wait()

    listed = json.loads(trinity("runs", "list", "--json", env=env).stdout)
    assert len(listed) == 1 and listed[0]["status"] == "running"
    run_id = listed[0]["id"]

    resumed = trinity("runs", "resume", run_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    state = json.loads(resumed.stdout)
    assert state["stop_reason"] == "completed"
    ledger_step = state["plan"]["steps"][0]
    assert ledger_step["attempts"][-1]["interrupted"] is True
    assert ledger_step["status"] == "succeeded"
    assert ledger.read_text() == "paid\n"  # not paid twice
    assert (workspace / "receipt.txt").read_text() == "done"

    shown = json.loads(trinity("runs", "show", run_id, "--json", env=env).stdout)
    assert shown["run"]["status"] == "succeeded"


SLOW_PLAN = """
task: A step that takes far too long
steps:
  - id: slow
    tool: shell.run
    args:
      command: "sleep 60"
      timeout_s: 120
"""


def test_runs_cancel_stops_a_run_in_another_process(tmp_path: Path) -> None:
    plan = tmp_path / "slow.yaml"
    plan.write_text(SLOW_PLAN)
    workspace = tmp_path / "ws"
    env = {
        **os.environ,
        "TRINITY_DATABASE_URL": str(tmp_path / "t.db"),
        "TRINITY_WORKSPACE": str(workspace),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "trinity", "run", str(plan)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        run_id = None
        deadline = time.monotonic() + 30
        while run_id is None and time.monotonic() < deadline:
            listed = trinity("runs", "list", "--json", env=env)
            rows = json.loads(listed.stdout) if listed.returncode == 0 else []
            events = trinity("runs", "trace", rows[0]["id"], "--json", env=env) if rows else None
            if events and '"tool_call"' in events.stdout:
                run_id = rows[0]["id"]
            else:
                time.sleep(0.1)
        assert run_id, "the run never started its slow step"

        asked = time.monotonic()
        cancelled = trinity("runs", "cancel", run_id, "--grace", "1", env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        proc.wait(timeout=20)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode == 1  # stopped without completing
    assert took < 5  # the 1 s grace, then forced, not the 60 s sleep
    shown = json.loads(trinity("runs", "show", run_id, "--json", env=env).stdout)
    assert shown["run"]["stop_reason"] == "cancelled"
    assert "forced" in shown["run"]["stop_detail"]
    leftover = subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the step's process outlived the cancel"
    again = trinity("runs", "cancel", run_id, env=env)
    assert again.returncode == 2 and "is not running" in again.stderr
