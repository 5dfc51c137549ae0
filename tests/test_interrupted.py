"""A tool call in flight when its process was killed (SIGKILL): what the resumed run does.

Every scenario runs real processes: ``trinity run`` (or a small driver for a call that cannot be
caught in the act from outside) is killed with its whole process group while a step's call is
under way, after its side effect is observable, and ``trinity runs resume`` then continues the
run under the run's ``on_interrupted`` policy (recheck, rerun, ask or fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trinity.tools.builtin import BUILTIN_SPECS

PAID = "paid"
EXIT_OK, EXIT_STOPPED, EXIT_AWAITING = 0, 1, 3
CLI_TIMEOUT_S = 60
WAIT_S = 30

# The ledger line is written, then the call sleeps: killed in the sleep, the payment happened.
PAY_THEN_SLEEP = f"echo {PAID} >> ledger.txt; sleep 30"
# The same, but a call made again does not sleep (a re-run must not wait 30 s).
PAY_THEN_SLEEP_ONCE = (
    f"echo {PAID} >> ledger.txt; if [ ! -f started ]; then touch started; sleep 30; fi"
)
# The first call only sleeps (killed in the sleep, nothing was paid); a second one pays at once.
SLEEP_THEN_PAY = (
    f"if [ -f started ]; then echo {PAID} >> ledger.txt; else touch started; sleep 30; fi"
)

EXIT_CHECK: dict[str, Any] = {"exit_code": 0}
LEDGER_CHECK: dict[str, Any] = {"file_contains": {"path": "ledger.txt", "text": PAID}}


@dataclass
class Sandbox:
    """A database, a workspace and the environment every ``trinity`` process of a test gets."""

    root: Path
    workspace: Path
    env: dict[str, str]

    def trinity(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trinity", *args],
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=CLI_TIMEOUT_S,
        )

    def plan(self, *, tool: str, args: dict[str, Any], checks: list[dict[str, Any]]) -> Path:
        path = self.root / "plan.json"
        step = {"id": "pay", "tool": tool, "args": args, "checks": checks}
        path.write_text(json.dumps({"task": "Pay once into the ledger", "steps": [step]}))
        return path

    def shell_plan(self, command: str, checks: list[dict[str, Any]]) -> Path:
        return self.plan(
            tool="shell.run", args={"command": command, "timeout_s": 60}, checks=checks
        )

    def kill_mid_call(self, argv: list[str], ready: Callable[[], bool]) -> str:
        """Start ``argv``, wait until ``ready()`` (the call's side effect is observable), kill its
        whole process group with SIGKILL, and return the id of the run it left behind."""
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            reached = ready()
        finally:
            with contextlib.suppress(ProcessLookupError):  # the run and its children, together
                os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
        assert reached, f"the run never reached its side effect (exit {proc.returncode}): {stderr}"
        listed = self.trinity("runs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert len(rows) == 1, rows
        assert rows[0]["status"] == "running", rows[0]  # it died: no end was recorded
        return str(rows[0]["id"])

    def crash_run(self, plan: Path, ready: Callable[[], bool], *options: str) -> str:
        argv = [sys.executable, "-m", "trinity", "run", str(plan), *options]
        return self.kill_mid_call(argv, ready)

    def resume(self, run_id: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """``runs resume ID --json``, and the run's state as ``runs show`` reads it back."""
        resumed = self.trinity("runs", "resume", run_id, "--json")
        return resumed, self.state(run_id)

    def state(self, run_id: str) -> dict[str, Any]:
        shown = self.trinity("runs", "show", run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        state: dict[str, Any] = json.loads(shown.stdout)["state"]
        return state

    def events(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        traced = self.trinity("runs", "trace", run_id, "--json")
        assert traced.returncode == 0, traced.stderr
        rows = [json.loads(line) for line in traced.stdout.splitlines() if line.strip()]
        return [row["data"] for row in rows if row["kind"] == kind]

    def audit(self, run_id: str) -> list[dict[str, Any]]:
        audited = self.trinity("runs", "audit", run_id, "--json")
        assert audited.returncode == 0, audited.stderr
        rows: list[dict[str, Any]] = json.loads(audited.stdout)
        return rows

    def ledger_lines(self) -> list[str]:
        ledger = self.workspace / "ledger.txt"
        return ledger.read_text().splitlines() if ledger.exists() else []

    def paid(self) -> bool:
        return PAID in self.ledger_lines()

    def started(self) -> bool:
        return (self.workspace / "started").exists()


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = {
        **os.environ,
        "TRINITY_DATABASE_URL": str(tmp_path / "t.db"),
        "TRINITY_WORKSPACE": str(workspace),
    }
    return Sandbox(tmp_path, workspace, env)


def the_step(state: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = state["plan"]["steps"]
    assert len(steps) == 1
    return steps[0]


def checks_by_name(attempt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["check"]: check for check in attempt["verdict"]["checks"]}


def interrupted_actions(sandbox: Sandbox, run_id: str) -> list[str]:
    return [event["action"] for event in sandbox.events(run_id, "interrupted_call")]


def says(process: subprocess.CompletedProcess[str]) -> str:
    return f"exit {process.returncode}\nstdout: {process.stdout[-3000:]}\nstderr: {process.stderr}"


# -- recheck (the default) ---------------------------------------------------------------------


def test_recheck_judges_a_call_that_happened_by_its_file_check(sandbox: Sandbox) -> None:
    plan = sandbox.shell_plan(PAY_THEN_SLEEP, [EXIT_CHECK, LEDGER_CHECK])
    run_id = sandbox.crash_run(plan, sandbox.paid)

    resumed, state = sandbox.resume(run_id)

    assert resumed.returncode == EXIT_OK, says(resumed)
    assert state["stop_reason"] == "completed"
    assert state["policy"]["on_interrupted"] == "recheck"
    step = the_step(state)
    assert step["status"] == "succeeded"
    assert len(step["attempts"]) == 1  # judged as it was: not made again
    attempt = step["attempts"][0]
    assert attempt["interrupted"] is True
    assert attempt["verdict"]["passed"] is True
    checks = checks_by_name(attempt)
    assert checks["exit_code == 0"]["unknown"] is True  # the exit code was lost with the process
    assert checks["exit_code == 0"]["passed"] is False  # ... and decides nothing
    assert "tool call succeeded" not in checks  # an exit_code check says what success is
    ledger_check = checks["file_contains ledger.txt 'paid'"]
    assert ledger_check["passed"] is True and ledger_check["unknown"] is False
    assert sandbox.ledger_lines() == [PAID]  # paid once
    assert interrupted_actions(sandbox, run_id) == ["recheck"]


def test_recheck_retries_a_call_whose_outcome_is_absent(sandbox: Sandbox) -> None:
    plan = sandbox.shell_plan(SLEEP_THEN_PAY, [EXIT_CHECK, LEDGER_CHECK])
    run_id = sandbox.crash_run(plan, sandbox.started)  # killed in the sleep: nothing paid
    assert sandbox.ledger_lines() == []

    resumed, state = sandbox.resume(run_id)

    assert resumed.returncode == EXIT_OK, says(resumed)
    assert state["stop_reason"] == "completed"
    step = the_step(state)
    assert step["status"] == "succeeded"
    lost, retry = step["attempts"]
    assert lost["interrupted"] is True and lost["verdict"]["passed"] is False
    ledger_check = checks_by_name(lost)["file_contains ledger.txt 'paid'"]
    assert ledger_check["unknown"] is False and ledger_check["passed"] is False  # the evidence
    assert retry["interrupted"] is False
    assert retry["result"]["exit_code"] == 0
    assert retry["verdict"]["passed"] is True
    assert not any(check["unknown"] for check in retry["verdict"]["checks"])
    assert sandbox.ledger_lines() == [PAID]  # paid exactly once
    assert interrupted_actions(sandbox, run_id) == ["recheck"]
    assert [d["action"] for d in sandbox.events(run_id, "decision")].count("retry") == 1


def test_recheck_fails_a_step_that_cannot_be_verified(sandbox: Sandbox) -> None:
    plan = sandbox.shell_plan(PAY_THEN_SLEEP, [EXIT_CHECK])  # no file check
    run_id = sandbox.crash_run(plan, sandbox.paid)

    resumed, state = sandbox.resume(run_id)

    assert resumed.returncode == EXIT_STOPPED, says(resumed)
    assert state["stop_reason"] == "failed"
    assert "cannot be verified" in state["stop_detail"], state["stop_detail"]
    step = the_step(state)
    assert step["status"] == "failed"
    assert len(step["attempts"]) == 1  # not retried: it may well have happened
    attempt = step["attempts"][0]
    assert attempt["interrupted"] is True
    assert "cannot be verified" in attempt["verdict"]["summary"]
    assert all(check["unknown"] for check in attempt["verdict"]["checks"])
    assert sandbox.ledger_lines() == [PAID]  # nothing ran twice
    assert interrupted_actions(sandbox, run_id) == ["recheck"]
    shown = sandbox.trinity("runs", "show", run_id, "--json")
    assert json.loads(shown.stdout)["run"]["status"] == "failed"


# -- rerun, fail -------------------------------------------------------------------------------


def test_rerun_makes_the_call_again_accepting_a_duplicate(sandbox: Sandbox) -> None:
    plan = sandbox.shell_plan(PAY_THEN_SLEEP_ONCE, [EXIT_CHECK, LEDGER_CHECK])
    run_id = sandbox.crash_run(plan, sandbox.started, "--on-interrupted", "rerun")
    assert sandbox.ledger_lines() == [PAID]

    resumed, state = sandbox.resume(run_id)  # no option here: the run keeps its policy

    assert resumed.returncode == EXIT_OK, says(resumed)
    assert state["stop_reason"] == "completed"
    assert state["policy"]["on_interrupted"] == "rerun"
    step = the_step(state)
    assert step["status"] == "succeeded"
    lost, again = step["attempts"]
    assert lost["interrupted"] is True
    assert again["interrupted"] is False
    assert again["result"]["exit_code"] == 0
    assert again["verdict"]["passed"] is True
    assert sandbox.ledger_lines() == [PAID, PAID]  # rerun accepts the duplicate: documented
    assert interrupted_actions(sandbox, run_id) == ["rerun"]


def test_fail_fails_the_step_without_making_the_call_again(sandbox: Sandbox) -> None:
    plan = sandbox.shell_plan(PAY_THEN_SLEEP, [EXIT_CHECK, LEDGER_CHECK])
    sandbox.env["TRINITY_ON_INTERRUPTED"] = "fail"  # the setting, this time
    run_id = sandbox.crash_run(plan, sandbox.paid)

    # The run keeps the policy it started with, whatever the resuming process's settings say.
    resumed = sandbox.trinity(
        "runs", "resume", run_id, "--json", env={**sandbox.env, "TRINITY_ON_INTERRUPTED": "rerun"}
    )
    state = sandbox.state(run_id)

    assert resumed.returncode == EXIT_STOPPED, says(resumed)
    assert state["stop_reason"] == "failed"
    assert state["policy"]["on_interrupted"] == "fail"
    step = the_step(state)
    assert step["status"] == "failed"
    assert len(step["attempts"]) == 1  # no retry either, though the file check would pass
    attempt = step["attempts"][0]
    assert attempt["interrupted"] is True
    assert attempt["verdict"]["passed"] is False
    assert "on_interrupted is fail" in attempt["verdict"]["summary"]
    assert sandbox.ledger_lines() == [PAID]
    assert interrupted_actions(sandbox, run_id) == ["fail"]


# -- ask ---------------------------------------------------------------------------------------


def asked_to_rerun(sandbox: Sandbox) -> str:
    """Crash a paying call under ``ask``; resume: the run waits for a person. Its id."""
    plan = sandbox.shell_plan(PAY_THEN_SLEEP_ONCE, [EXIT_CHECK, LEDGER_CHECK])
    run_id = sandbox.crash_run(plan, sandbox.started, "--on-interrupted", "ask")

    resumed = sandbox.trinity("runs", "resume", run_id)  # not --json: the question is on stderr

    assert resumed.returncode == EXIT_AWAITING, says(resumed)
    assert "awaiting approval" in resumed.stderr
    assert "the run stopped during this call" in resumed.stderr
    assert "approve (make it again)" in resumed.stderr
    assert f"trinity runs approve {run_id}" in resumed.stderr
    state = sandbox.state(run_id)
    assert state["stop_reason"] == "awaiting_approval"
    pending = state["pending_approval"]
    assert pending["question"] == "rerun" and pending["step_id"] == "pay"
    assert sandbox.ledger_lines() == [PAID]  # nothing made again while waiting
    assert interrupted_actions(sandbox, run_id) == ["ask"]
    return run_id


def person_decision(sandbox: Sandbox, run_id: str) -> dict[str, Any]:
    people = [row for row in sandbox.audit(run_id) if row["actor"] != "policy"]
    assert len(people) == 1, people
    return people[0]


def test_ask_then_approve_makes_the_call_again(sandbox: Sandbox) -> None:
    run_id = asked_to_rerun(sandbox)
    again = sandbox.trinity("runs", "resume", run_id, "--json")  # no decision yet: still waits
    assert again.returncode == EXIT_AWAITING, says(again)
    assert sandbox.ledger_lines() == [PAID]

    approved = sandbox.trinity("runs", "approve", run_id, "--note", "pay again", "--json")

    assert approved.returncode == EXIT_OK, says(approved)
    state = sandbox.state(run_id)
    assert state["stop_reason"] == "completed"
    assert state["pending_approval"] is None
    lost, made = the_step(state)["attempts"]
    assert lost["interrupted"] is True
    assert made["interrupted"] is False and made["result"]["exit_code"] == 0
    assert made["verdict"]["passed"] is True
    assert sandbox.ledger_lines() == [PAID, PAID]  # the person chose to make it again
    decision = person_decision(sandbox, run_id)
    assert decision["decision"] == "approve"
    assert decision["step_id"] == "pay" and decision["tool"] == "shell.run"


def test_ask_then_deny_judges_the_call_by_its_checks(sandbox: Sandbox) -> None:
    run_id = asked_to_rerun(sandbox)

    denied = sandbox.trinity("runs", "deny", run_id, "--note", "it was paid", "--json")

    assert denied.returncode == EXIT_OK, says(denied)
    state = sandbox.state(run_id)
    assert state["stop_reason"] == "completed"
    step = the_step(state)
    assert step["status"] == "succeeded"
    assert len(step["attempts"]) == 1
    attempt = step["attempts"][0]
    assert attempt["interrupted"] is True and attempt["denied"] is False
    checks = checks_by_name(attempt)
    assert checks["exit_code == 0"]["unknown"] is True
    assert checks["file_contains ledger.txt 'paid'"]["passed"] is True
    assert sandbox.ledger_lines() == [PAID]  # not made again
    decision = person_decision(sandbox, run_id)
    assert decision["decision"] == "deny"
    assert decision["step_id"] == "pay" and decision["tool"] == "shell.run"


# -- idempotent calls --------------------------------------------------------------------------


def test_builtin_idempotence() -> None:
    specs = {spec.name: spec for spec in BUILTIN_SPECS}
    for name in ("fs.read", "fs.list", "fs.glob", "fs.search", "http.fetch"):
        assert specs[name].repeatable({}), name
    assert specs["fs.write"].repeatable({"path": "a", "content": "b"})
    assert specs["fs.write"].repeatable({"path": "a", "content": "b", "append": False})
    assert not specs["fs.write"].repeatable({"path": "a", "content": "b", "append": True})
    for name in ("shell.run", "python.run", "fs.edit"):
        assert not specs[name].repeatable({}), name


# A run driven in-process with the built-in tools, except that its fs.write call writes part of
# its content (or, appending, all of it) and the process then kills itself with SIGKILL: the
# call's effect is on disk, its result never comes back. The resume is the real CLI.
CRASH_DRIVER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from trinity.config import Settings
    from trinity.runtime import Runtime
    from trinity.tools.builtin import BuiltinTools

    class CrashInWrite:
        def __init__(self, inner):
            self.inner = inner

        async def list_tools(self):
            return await self.inner.list_tools()

        def spec(self, name):
            return self.inner.spec(name)

        async def call(self, name, args, *, timeout_s=None):
            if name == "fs.write":
                target = self.inner.resolve(args["path"])
                append = bool(args.get("append"))
                content = args["content"] if append else args["content"][:7]
                with target.open("a" if append else "w") as handle:
                    handle.write(content)
                os.kill(os.getpid(), signal.SIGKILL)
            return await self.inner.call(name, args, timeout_s=timeout_s)

        async def aclose(self):
            await self.inner.aclose()

    async def main():
        settings = Settings()
        runtime = Runtime(settings, tools=CrashInWrite(BuiltinTools(settings.workspace)))
        await runtime.start(runtime.prepare(sys.argv[1]))

    asyncio.run(main())
    """
)

RECEIPT = "receipt: paid in full\n"


def crash_in_write(sandbox: Sandbox, policy: str, args: dict[str, Any], check: Any) -> str:
    plan = sandbox.plan(tool="fs.write", args=args, checks=[check])
    driver = sandbox.root / "crash_driver.py"
    driver.write_text(CRASH_DRIVER)
    sandbox.env["TRINITY_ON_INTERRUPTED"] = policy
    target = sandbox.workspace / args["path"]
    return sandbox.kill_mid_call(
        [sys.executable, str(driver), str(plan)],
        lambda: target.exists() and target.stat().st_size > 0,
    )


@pytest.mark.parametrize("policy", ["recheck", "ask"])
def test_an_idempotent_call_is_made_again(sandbox: Sandbox, policy: str) -> None:
    args = {"path": "receipt.txt", "content": RECEIPT}
    run_id = crash_in_write(sandbox, policy, args, {"file_exists": "receipt.txt"})
    receipt = sandbox.workspace / "receipt.txt"
    assert receipt.read_text() == RECEIPT[:7]  # torn: a judge of its checks would pass it

    resumed, state = sandbox.resume(run_id)

    assert resumed.returncode == EXIT_OK, says(resumed)  # no question asked, even under ask
    assert state["stop_reason"] == "completed"
    assert state["policy"]["on_interrupted"] == policy
    assert state["pending_approval"] is None
    lost, made = the_step(state)["attempts"]
    assert lost["interrupted"] is True
    assert made["interrupted"] is False
    assert made["result"]["ok"] is True
    assert made["verdict"]["passed"] is True
    assert receipt.read_text() == RECEIPT  # made again: whole
    assert interrupted_actions(sandbox, run_id) == ["rerun"]


def test_an_appending_write_is_not_made_again_under_recheck(sandbox: Sandbox) -> None:
    args = {"path": "ledger.txt", "content": f"{PAID}\n", "append": True}
    run_id = crash_in_write(sandbox, "recheck", args, LEDGER_CHECK)
    assert sandbox.ledger_lines() == [PAID]

    resumed, state = sandbox.resume(run_id)

    assert resumed.returncode == EXIT_OK, says(resumed)
    assert state["stop_reason"] == "completed"
    step = the_step(state)
    assert len(step["attempts"]) == 1
    assert step["attempts"][0]["interrupted"] is True
    assert step["attempts"][0]["verdict"]["passed"] is True
    assert sandbox.ledger_lines() == [PAID]  # appended once
    assert interrupted_actions(sandbox, run_id) == ["recheck"]


def test_an_appending_write_is_asked_about_under_ask(sandbox: Sandbox) -> None:
    args = {"path": "ledger.txt", "content": f"{PAID}\n", "append": True}
    run_id = crash_in_write(sandbox, "ask", args, LEDGER_CHECK)

    resumed, state = sandbox.resume(run_id)

    assert resumed.returncode == EXIT_AWAITING, says(resumed)
    assert state["pending_approval"]["question"] == "rerun"
    assert state["pending_approval"]["tool"] == "fs.write"
    assert sandbox.ledger_lines() == [PAID]
    assert interrupted_actions(sandbox, run_id) == ["ask"]
