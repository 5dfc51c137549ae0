"""Crashes, kills and signals, through the real CLI: a run is executed once, never left stuck,
and a resume finishes what was left without repeating a side effect.

Each test drives ``python -m trinity`` in subprocesses, kills them the way a crash, an OOM
killer or an operator would (SIGKILL, SIGTERM, SIGHUP), and reads the ledger the plan's steps
append to: every line must be there exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


class Trinity:
    """The CLI against one database and workspace."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ws = tmp / "ws"
        self.db = tmp / "t.db"
        self.env = {
            **os.environ,
            "TRINITY_DATABASE_URL": str(self.db),
            "TRINITY_WORKSPACE": str(self.ws),
        }

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trinity", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def start(self, *args: str, script: str | None = None) -> subprocess.Popen[str]:
        """``trinity ARGS`` in the background (or a Python ``script`` that runs the CLI), in
        its own process group."""
        argv = [sys.executable, "-c", script, *args] if script else [
            sys.executable, "-m", "trinity", *args
        ]  # fmt: skip
        return subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def plan(self, steps: list[dict[str, object]], name: str = "plan.yaml", **extra: object) -> str:
        path = self.tmp / name
        path.write_text(yaml.safe_dump({"task": f"ledger {name}", **extra, "steps": steps}))
        return str(path)

    def ledger(self, name: str = "ledger.txt") -> list[str]:
        path = self.ws / name
        return path.read_text().splitlines() if path.exists() else []

    def runs(self) -> list[dict[str, object]]:
        listed = self("runs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        return list(json.loads(listed.stdout))

    def finish(self, run_id: str, attempts: int = 3) -> subprocess.CompletedProcess[str]:
        """Resume until the run completes (each resume is one process)."""
        for _ in range(attempts):
            done = self("runs", "resume", run_id)
            assert "Traceback" not in done.stderr, done.stderr
            if done.returncode == 0:
                return done
        raise AssertionError(f"run {run_id} did not complete: {done.stderr[-2000:]}")


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "it") -> None:
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """What a crash does: the run's process and its process group die at once (its tool
    processes are in their own groups: the reaper must take care of them)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.communicate(timeout=60)


def ledger_steps(count: int) -> list[dict[str, object]]:
    """Steps that each append their own line: shell commands (with an exit_code check, whose
    output a crash loses) and fs.write appends, neither of them safe to repeat."""
    steps: list[dict[str, object]] = []
    for i in range(count):
        line = f"step-{i}"
        check = {"file_contains": {"path": "ledger.txt", "text": line}}
        if i % 2 == 0:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "shell.run",
                    "args": {"command": f"echo {line} >> ledger.txt; sleep 0.05"},
                    "checks": [{"exit_code": 0}, check],
                }
            )
        else:
            steps.append(
                {
                    "id": f"s{i}",
                    "tool": "fs.write",
                    "args": {"path": "ledger.txt", "content": f"{line}\n", "append": True},
                    "checks": [check],
                }
            )
    return steps


@pytest.mark.parametrize("trial", range(20))
def test_a_run_killed_at_a_random_point_resumes_with_every_side_effect_once(
    trial: int, tmp_path: Path
) -> None:
    cli = Trinity(tmp_path)
    plan = cli.plan(ledger_steps(8))
    proc = cli.start("run", plan)
    time.sleep(random.Random(trial).uniform(0.3, 1.4))  # start-up takes ~0.5 s of it
    kill_group(proc)
    runs = cli.runs()
    if not runs:  # killed before the run was stored: nothing ran, start it again
        assert cli.ledger() == []
        assert cli("run", plan).returncode == 0
    elif runs[0]["status"] != "succeeded":
        assert runs[0]["shown_status"] == "interrupted"  # its process is gone, and it says so
        cli.finish(str(runs[0]["id"]))
    assert cli.ledger() == [f"step-{i}" for i in range(8)]
    (row,) = cli.runs()
    assert row["status"] == "succeeded" and row["lease_owner"] is None


def test_two_concurrent_resumes_execute_the_run_once(tmp_path: Path) -> None:
    cli = Trinity(tmp_path)
    steps = [
        *ledger_steps(2),
        {
            "id": "slow",
            "tool": "shell.run",
            "args": {"command": "sleep 1.5; echo slow >> ledger.txt"},
            "checks": [{"file_contains": {"path": "ledger.txt", "text": "slow"}}],
        },
    ]
    plan = cli.plan(steps)
    refused = 0
    for trial in range(10):
        for leftover in (cli.ws / "ledger.txt", cli.db):
            leftover.unlink(missing_ok=True)
        proc = cli.start("run", plan)
        wait_for(lambda: len(cli.ledger()) == 2, what="the first two steps")
        kill_group(proc)
        (row,) = cli.runs()
        both = [cli.start("runs", "resume", str(row["id"])) for _ in range(2)]
        outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in both]
        codes = sorted(code for code, _ in outcomes)
        assert codes[0] == 0, outcomes
        assert all("Traceback" not in stderr for _, stderr in outcomes)
        if codes[1] == 2:
            refused += 1
            loser = next(stderr for code, stderr in outcomes if code == 2)
            assert "is being executed elsewhere" in loser or "was just taken" in loser, loser
        trace = cli("runs", "trace", str(row["id"]), "--json").stdout.splitlines()
        starts = [json.loads(line) for line in trace if '"run_started"' in line]
        assert len(starts) == 2, f"trial {trial}: {len(starts) - 1} executions of the resume"
        assert cli.ledger() == ["step-0", "step-1", "slow"], f"trial {trial}"
    assert refused >= 8  # they overlap (the slow step holds the run 1.5 s): one is refused


def test_a_live_run_refuses_a_resume_and_says_who_holds_it(tmp_path: Path) -> None:
    cli = Trinity(tmp_path)
    plan = cli.plan(
        [{"id": "slow", "tool": "shell.run", "args": {"command": "touch started; sleep 60"}}]
    )
    proc = cli.start("run", plan)
    try:
        wait_for(lambda: (cli.ws / "started").exists(), what="the slow step")
        (row,) = cli.runs()
        assert row["status"] == "running" and row["shown_status"] == "running"
        again = cli("runs", "resume", str(row["id"]))
        assert again.returncode == 2
        assert f"pid {proc.pid} on" in again.stderr and "is executing it" in again.stderr
        cancelled = cli("runs", "cancel", str(row["id"]), "--grace", "0.5")
        assert cancelled.returncode == 0, cancelled.stderr
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    assert cli.runs()[0]["status"] == "cancelled"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_end_the_run_like_ctrl_c(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    cli = Trinity(tmp_path)
    steps = [
        {  # slow the first time; once resumed, done at once
            "id": "wait",
            "tool": "shell.run",
            "args": {
                "command": "if [ -f started ]; then echo done > done.txt; "
                "else touch started; sleep 60; echo late >> late.txt; fi"
            },
            "checks": [{"file_exists": "done.txt"}],
        },
        {"id": "after", "tool": "fs.write", "args": {"path": "after.txt", "content": "x"}},
    ]
    proc = cli.start("run", cli.plan(steps))
    wait_for(lambda: (cli.ws / "started").exists(), what="the slow step")
    proc.send_signal(sig)  # the process only, as `kill` or systemd would
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert f"terminated by {sig.name}" in stderr and "Traceback" not in stderr
    (row,) = cli.runs()
    assert row["status"] == "cancelled" and row["stop_reason"] == "cancelled"
    assert f"trinity runs resume {row['id']}" in stderr
    time.sleep(0.3)
    assert not (cli.ws / "late.txt").exists()  # the step's shell died with the run
    done = cli.finish(str(row["id"]))
    assert done.returncode == 0
    assert (cli.ws / "after.txt").read_text() == "x"


def test_tool_processes_die_with_a_killed_trinity(tmp_path: Path) -> None:
    cli = Trinity(tmp_path)
    steps = [
        {
            "id": "later",
            "tool": "shell.run",
            "args": {"command": "touch started; sleep 2; echo late >> late.txt"},
            "checks": [{"file_exists": "late.txt"}],
        }
    ]
    proc = cli.start("run", cli.plan(steps))
    wait_for(lambda: (cli.ws / "started").exists(), what="the step")
    proc.kill()  # trinity alone: its tool's shell is in a session of its own
    proc.communicate(timeout=30)
    time.sleep(2.5)
    assert not (cli.ws / "late.txt").exists(), "the step's command outlived trinity"
    leftover = subprocess.run(["pgrep", "-f", "sleep 2; echo late"], capture_output=True)
    assert leftover.stdout == b""


# -- kills injected at chosen points ----------------------------------------------------------

KILL_AT = """
import os, signal, sys
import {module} as target
holder = getattr(target, "{owner}") if "{owner}" else target
original = getattr(holder, "{name}")
def wrapper(*args, **kwargs):
    {before}
    result = original(*args, **kwargs)
    {after}
    return result
async def async_wrapper(*args, **kwargs):
    {before}
    result = await original(*args, **kwargs)
    {after}
    return result
import inspect
chosen = async_wrapper if inspect.iscoroutinefunction(original) else wrapper
setattr(holder, "{name}", chosen)
{also}
from trinity.cli import main
sys.argv = ["trinity", *sys.argv[1:]]
main()
"""
DIE = "os.kill(os.getpid(), signal.SIGKILL)"


def killed_at(module: str, owner: str, name: str, *, before: bool, also: str = "") -> str:
    """A script that runs the CLI and SIGKILLs itself at the start (``before``) or the end of
    ``module.owner.name``."""
    return KILL_AT.format(
        module=module,
        owner=owner,
        name=name,
        before=DIE if before else "pass",
        after="pass" if before else DIE,
        also=also,
    )


def test_killed_before_the_first_node_the_run_resumes_from_its_first_snapshot(
    tmp_path: Path,
) -> None:
    cli = Trinity(tmp_path)
    plan = cli.plan(ledger_steps(2))
    proc = cli.start("run", plan, script=killed_at("trinity.runtime", "", "execute", before=True))
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (row,) = cli.runs()
    assert row["status"] == "running" and row["shown_status"] == "interrupted"
    cli.finish(str(row["id"]))
    assert cli.ledger() == ["step-0", "step-1"]


def test_killed_as_the_first_tool_call_starts_it_is_made_once(tmp_path: Path) -> None:
    cli = Trinity(tmp_path)
    plan = cli.plan(ledger_steps(2))
    script = killed_at("trinity.agents.tetyana", "Tetyana", "_call", before=True)
    proc = cli.start("run", plan, script=script)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (row,) = cli.runs()
    cli.finish(str(row["id"]))
    assert cli.ledger() == ["step-0", "step-1"]
    shown = json.loads(cli("runs", "show", str(row["id"]), "--json").stdout)
    first = shown["state"]["plan"]["steps"][0]["attempts"]
    # the interrupted attempt, judged by its file check (absent), then one real call
    assert [a.get("interrupted", False) for a in first] == [True, False]


def test_killed_after_the_run_ended_but_before_its_row_the_resume_records_it(
    tmp_path: Path,
) -> None:
    cli = Trinity(tmp_path)
    plan = cli.plan(ledger_steps(2))
    script = killed_at("trinity.execution", "", "close_books", before=True)
    proc = cli.start("run", plan, script=script)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (row,) = cli.runs()
    shown = json.loads(cli("runs", "show", str(row["id"]), "--json").stdout)["run"]
    assert shown["status"] == "running" and shown["report"] == ""
    done = cli("runs", "resume", str(row["id"]))
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stderr
    shown = json.loads(cli("runs", "show", str(row["id"]), "--json").stdout)["run"]
    assert shown["status"] == "succeeded" and "all 2 steps verified" in shown["report"]
    assert cli.ledger() == ["step-0", "step-1"]


def test_killed_right_after_an_approval_is_stored_the_call_is_made_once(tmp_path: Path) -> None:
    cli = Trinity(tmp_path)
    policy = tmp_path / "perms.yaml"
    policy.write_text("rules:\n  - {tool: shell.run, action: ask, reason: a person checks}\n")
    plan = cli.plan(ledger_steps(2))
    first = cli("run", plan, "--permissions", str(policy))
    assert first.returncode == 3, first.stderr
    (row,) = cli.runs()
    run_id = str(row["id"])
    script = killed_at("trinity.store.records", "Records", "set_approval", before=False)
    proc = cli.start("runs", "approve", run_id, "--note", "ok", script=script)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    audit = json.loads(cli("runs", "audit", run_id, "--json").stdout)
    assert [(a["decision"], a["actor"] != "policy") for a in audit][-1] == ("approve", True)
    again = cli("runs", "approve", run_id)
    assert again.returncode == 2 and "already decided" in again.stderr
    cli.finish(run_id)
    assert cli.ledger() == ["step-0", "step-1"]
    assert cli.runs()[0]["status"] == "succeeded"


def test_a_thousand_step_run_killed_half_way_matches_one_never_killed(tmp_path: Path) -> None:
    count = 1000
    steps = [
        {
            "id": f"s{i}",
            "tool": "fs.write",
            "args": {"path": "ledger.txt", "content": f"line-{i}\n", "append": True},
            "checks": [{"file_contains": {"path": "ledger.txt", "text": f"line-{i}\n"}}],
        }
        for i in range(count)
    ]
    killed, whole = Trinity(tmp_path / "killed"), Trinity(tmp_path / "whole")
    for cli in (killed, whole):
        cli.tmp.mkdir()
    plan = killed.plan(steps)
    proc = killed.start("run", plan, "--max-steps", "10000")
    wait_for(lambda: len(killed.ledger()) >= count // 2, timeout=120, what="half the plan")
    kill_group(proc)
    (row,) = killed.runs()
    killed.finish(str(row["id"]))
    assert whole("run", plan, "--max-steps", "10000").returncode == 0
    assert killed.ledger() == whole.ledger() == [f"line-{i}" for i in range(count)]

    def shown(cli: Trinity) -> list[tuple[str, str]]:
        (run,) = cli.runs()
        state = json.loads(cli("runs", "show", str(run["id"]), "--json").stdout)["state"]
        return [(s["id"], s["status"]) for s in state["plan"]["steps"]]

    assert shown(killed) == shown(whole)
    assert all(status == "succeeded" for _, status in shown(killed))


def test_cancelling_a_run_whose_process_died_records_it_as_cancelled(tmp_path: Path) -> None:
    cli = Trinity(tmp_path)
    plan = cli.plan(ledger_steps(4))
    proc = cli.start("run", plan)
    wait_for(lambda: len(cli.ledger()) >= 2, what="two steps")
    kill_group(proc)
    (row,) = cli.runs()
    assert row["shown_status"] == "interrupted"
    cancelled = cli("runs", "cancel", str(row["id"]))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "had no live process" in cancelled.stderr
    (row,) = cli.runs()
    assert row["status"] == "cancelled" and row["lease_owner"] is None
    assert "while no process was running it" in str(row["stop_detail"])
    done = cli.finish(str(row["id"]))  # and it can still be resumed
    assert done.returncode == 0
    assert cli.ledger() == [f"step-{i}" for i in range(4)]
