"""The performance report: what a run spent is kept with its row when it ends, and `trinity
report` sums, rates and ranks it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trinity.config import Settings
from trinity.performance import Percentiles
from trinity.runtime import Runtime
from trinity.state import StopReason

WRITE = {"id": "w", "tool": "fs.write", "args": {"path": "a.txt", "content": "a"}}
FAIL = {"id": "bad", "tool": "shell.run", "args": {"command": "exit 3"}}


def plan_file(folder: Path, name: str, *steps: dict[str, object]) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"task": name, "steps": list(steps)}))
    return str(path)


def test_nearest_rank_percentiles() -> None:
    assert Percentiles.of([float(n) for n in range(100, 0, -1)]) == Percentiles(
        p50=50.0, p95=95.0, p99=99.0
    )
    assert Percentiles.of([]) == Percentiles()
    assert Percentiles.of([2.5]) == Percentiles(p50=2.5, p95=2.5, p99=2.5)


async def test_a_runs_spend_is_kept_and_reported(tmp_path: Path, settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        for name, steps in [("one", [WRITE]), ("two", [WRITE]), ("three", [WRITE, FAIL])]:
            state = await runtime.start(runtime.prepare(plan_file(tmp_path, name, *steps)))
        assert state.stop_reason == StopReason.FAILED
        row = runtime.store.get_run(state.run_id)
        assert (row["tool_calls"], row["tool_errors"]) == (3, 2)  # write, then bad tried twice
        assert row["tool_seconds"] > 0 and row["llm_calls"] == 0
        made = runtime.performance()
        by_reason = runtime.performance(by="stop_reason")
        by_tool = runtime.performance(by="tool")
        later = runtime.performance(since=state.finished_at + 60)
    finally:
        runtime.close()
    total = made.total
    assert (total.runs, total.ended, total.completed, total.failed) == (3, 3, 2, 1)
    assert total.error_rate == pytest.approx(1 / 3)
    assert total.tool_calls == 5 and total.tool_errors == 2
    assert total.run_s.p50 is not None and total.run_s.p99 is not None
    assert total.run_s.p50 <= total.run_s.p99
    assert [t.tool for t in made.failing_tools] == ["shell.run"]
    shell = next(t for t in made.tools if t.tool == "shell.run")
    assert (shell.runs, shell.calls, shell.errors, shell.error_rate) == (1, 2, 2, 1.0)
    assert {g.key: g.runs for g in by_reason.groups} == {"completed": 2, "failed": 1}
    assert by_reason.total.runs == 3 and by_reason.total.failed == 1
    assert by_tool.groups == [] and {t.tool for t in by_tool.tools} == {"fs.write", "shell.run"}
    assert later.total.runs == 0 and later.tools == []


def test_the_command_prints_and_refuses_bad_options(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
    env |= {"TRINITY_SANDBOX": "off", "COLUMNS": "200"}
    db = str(tmp_path / "r.db")
    trinity = [sys.executable, "-m", "trinity"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*trinity, *args, "--db", db], env=env, capture_output=True, text=True, timeout=60
        )

    for name, steps in [("ok", [WRITE]), ("bad", [FAIL])]:
        cli("run", plan_file(tmp_path, name, *steps), "-w", str(tmp_path / "ws"))
    shown = cli("report", "--since", "1h")
    assert shown.returncode == 0, shown.stderr
    assert "2 — 1 completed, 1 failed (50.0% errors)" in shown.stdout
    assert "Most failing tools" in shown.stdout and "shell.run" in shown.stdout
    data = json.loads(cli("report", "--by", "model", "--json").stdout)
    assert [g["key"] for g in data["groups"]] == ["plan file (no model)"]
    assert data["total"]["tool_errors"] == 2
    wrong = cli("report", "--by", "colour")
    assert wrong.returncode == 2 and "--by must be one of model, tool, stop_reason" in wrong.stderr
    since = cli("report", "--since", "yesterday")
    assert since.returncode == 2 and "bad duration 'yesterday'" in since.stderr


async def test_runs_that_ended_before_spend_was_recorded_are_said_and_backfilled(
    tmp_path: Path, settings: Settings
) -> None:
    """A database from before schema 6 has zeros where a run's spend goes: after the migration
    the report says how many runs lack it, and `--backfill` reads it from their journals."""
    import sqlite3

    runtime = Runtime(settings)
    try:
        old = await runtime.start(runtime.prepare(plan_file(tmp_path, "old", WRITE, FAIL)))
        new = await runtime.start(runtime.prepare(plan_file(tmp_path, "new", WRITE)))
        before = runtime.performance()
    finally:
        runtime.close()
    assert before.unrecorded == 0 and before.total.tool_calls == 4
    # the database as schema 6 left it, with `old` ended before 6 (zeros, no tool rows)
    db = sqlite3.connect(settings.database_url)
    db.executescript(
        f"""
        UPDATE runs SET llm_calls=0, llm_errors=0, llm_seconds=0, cost_usd=0, tool_calls=0,
            tool_errors=0, tool_seconds=0 WHERE id='{old.run_id}';
        DELETE FROM run_tools WHERE run_id='{old.run_id}';
        DROP INDEX runs_spend_missing;
        ALTER TABLE runs DROP COLUMN spend_recorded;
        PRAGMA user_version=6;
        """
    )
    db.close()
    runtime = Runtime(settings)  # migrates to 7
    try:
        migrated = runtime.performance()
        recorded = {r: runtime.store.get_run(r)["spend_recorded"] for r in (old.run_id, new.run_id)}
    finally:
        runtime.close()
    assert recorded == {old.run_id: 0, new.run_id: 1}
    assert migrated.unrecorded == 1 and migrated.total.tool_calls == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")} | {"COLUMNS": "200"}
    trinity = [sys.executable, "-m", "trinity", "report", "--db", settings.database_url]
    said = subprocess.run(trinity, env=env, capture_output=True, text=True, timeout=60)
    assert "1 of these runs ended before Trinity recorded" in said.stdout, said.stdout
    done = subprocess.run(
        [*trinity, "--backfill"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Backfilled the spend of 1 runs" in done.stdout
    assert "ended before Trinity recorded" not in done.stdout
    again = json.loads(
        subprocess.run(
            [*trinity, "--backfill", "--json"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert again["unrecorded"] == 0
    assert again["total"]["tool_calls"] == before.total.tool_calls
    assert again["total"]["tool_errors"] == before.total.tool_errors == 2
    assert {t["tool"]: t["calls"] for t in again["tools"]} == {
        t.tool: t.calls for t in before.tools
    }
