"""A ``person.ask`` step: the run waits for a person's answer, which becomes the step's output;
through the Runtime, the CLI and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trinity.config import Settings
from trinity.errors import ApprovalPendingError, InputError
from trinity.runtime import Runtime
from trinity.state import RunState, StepStatus, StopReason
from trinity.store import Store

REGION = {
    "id": "region",
    "tool": "person.ask",
    "args": {"question": "Which region do we deploy to?", "choices": ["eu", "us"]},
    "checks": [{"output_matches": "^(eu|us)$"}],
}
WRITE = {
    "id": "note",
    "tool": "fs.write",
    "args": {"path": "deployed.txt", "content": "deployed\n"},
}


def plan_file(tmp_path: Path, *steps: dict[str, Any]) -> str:
    path = tmp_path / "ask.yaml"
    path.write_text(json.dumps({"task": "deploy", "steps": list(steps)}))
    return str(path)


async def call(settings: Settings, verb: str, *args: Any, **options: Any) -> RunState:
    runtime = Runtime(settings)  # a fresh runtime, as a later process would be
    try:
        if verb == "start":
            return await runtime.start(runtime.prepare(*args, **options))
        return await getattr(runtime, verb)(*args, **options)
    finally:
        runtime.close()


async def test_the_run_waits_for_the_answer_which_is_the_steps_output(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    state = await call(settings, "start", plan_file(tmp_path, REGION, WRITE))
    assert state.stop_reason == StopReason.AWAITING_APPROVAL, state.stop_detail
    pending = state.pending_approval
    assert (pending.question, pending.reason) == ("input", "Which region do we deploy to?")
    assert "a person's answer" in state.stop_detail
    assert not (workspace / "deployed.txt").exists()
    run = state.run_id

    with pytest.raises(ApprovalPendingError, match=f"trinity runs answer {run} TEXT"):
        await call(settings, "resume", run)
    with pytest.raises(InputError, match="asks a question, not to approve a call"):
        await call(settings, "approve", run)
    with pytest.raises(InputError, match="must be one of 'eu', 'us', got 'asia'"):
        await call(settings, "answer", run, "asia")
    with pytest.raises(InputError, match="the answer is empty"):
        await call(settings, "answer", run, "  ")

    done = await call(settings, "answer", run, "eu", actor="ops@example.com")
    assert done.stop_reason == StopReason.COMPLETED, done.stop_detail
    asked = done.plan.steps[0]
    assert asked.status == StepStatus.SUCCEEDED and len(asked.attempts) == 1
    assert asked.attempts[0].result.output == "eu"
    assert (workspace / "deployed.txt").read_text() == "deployed\n"
    store = Store.open(settings.database_url)
    try:
        rows = store.list_audit(run)
        events = [e["kind"] for e in store.list_events(run)]
    finally:
        store.close()
    assert [(r["decision"], r["actor"], r["reason"]) for r in rows] == [
        ("answer", "ops@example.com", "asked: Which region do we deploy to?; eu")
    ]
    assert events.count("approval_requested") == 1 and "tool_call" in events
    with pytest.raises(InputError, match="not awaiting approval"):
        await call(settings, "answer", run, "us")


async def test_a_declined_question_fails_its_step_and_a_call_cannot_be_answered(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    state = await call(settings, "start", plan_file(tmp_path, REGION, WRITE))
    done = await call(settings, "deny", state.run_id, "not today")
    assert done.stop_reason == StopReason.FAILED
    attempt = done.plan.steps[0].attempts[0]
    assert attempt.result.error.endswith("not today") and "declined by" in attempt.result.error
    assert not (workspace / "deployed.txt").exists()

    policy = tmp_path / "perms.yaml"
    policy.write_text("rules:\n  - {tool: fs.write, action: ask}\n")
    asked = await call(settings, "start", plan_file(tmp_path, WRITE), permissions_file=policy)
    assert asked.pending_approval.question == "permission"
    with pytest.raises(InputError, match="not an answer: approve or deny it"):
        await call(settings, "answer", asked.run_id, "yes")


def test_the_cli_shows_the_question_and_answers_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
    env["COLUMNS"] = "300"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "trinity", *args, "--db", str(tmp_path / "c.db")]
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    ran = cli("run", plan_file(tmp_path, REGION, WRITE), "-w", str(tmp_path / "ws"))
    assert ran.returncode == 3, ran.stderr
    run = json.loads(cli("runs", "list", "--json").stdout)[0]["id"]
    assert "awaiting an answer" in ran.stderr and "Which region do we deploy to?" in ran.stderr
    assert "one of: eu, us" in ran.stderr and f"trinity runs answer {run} TEXT" in ran.stderr
    wrong = cli("runs", "answer", run, "mars")
    assert wrong.returncode == 2 and "must be one of 'eu', 'us'" in wrong.stderr
    answered = cli("runs", "answer", run, "us")
    assert answered.returncode == 0, answered.stderr
    assert "answered by" in answered.stderr
    assert (tmp_path / "ws" / "deployed.txt").exists()


def test_the_builtin_mcp_server_does_not_offer_the_question_tool() -> None:
    """Nobody is there to answer it: the tool exists only inside a run."""
    from trinity.tools.builtin import ASK_TOOL, BUILTIN_SPECS, BuiltinTools

    assert ASK_TOOL in {spec.name for spec in BUILTIN_SPECS}  # Atlas may plan it
    tools = BuiltinTools(Path.cwd())
    import asyncio

    result = asyncio.run(tools.call(ASK_TOOL, {"question": "hello?"}))
    assert not result.ok and "answered by a person through a run" in (result.error or "")
