"""The five agents end to end, with the scripted model and the real built-in tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trinity.config import Settings
from trinity.events import EventBase
from trinity.limits import RunLimits
from trinity.llm.scripted import ScriptedProvider
from trinity.runtime import Runtime
from trinity.state import StepStatus, StopReason, VerificationLevel
from trinity.store import Store
from trinity.store.journal import load_run

NOTES_PLAN = {
    "rationale": "write the notes, then count their lines",
    "steps": [
        {
            "id": "write-notes",
            "title": "Write the notes",
            "tool": "fs.write",
            "args": {"path": "notes.txt", "content": "alpha\nbeta\ngamma\n"},
            "expected": "notes.txt has three lines",
            "checks": [{"file_contains": {"path": "notes.txt", "text": "beta"}}],
        },
        {
            "id": "count",
            "tool": "shell.run",
            "args": {"command": "wc -l < notes.txt"},
            "expected": "the output is 3",
            "checks": [{"exit_code": 0}, {"output_matches": "^\\s*3\\s*$"}],
        },
    ],
}


def judge(passed: bool, reason: str) -> dict[str, object]:
    return {
        "match": {"purpose": "grisha.judge"},
        "text": json.dumps({"passed": passed, "reason": reason}),
    }


def fenced(value: object) -> str:
    """What real models tend to send: prose and a fenced block."""
    return f"Here is the plan:\n```json\n{json.dumps(value, indent=2)}\n```\nLet me know!"


async def run_task(settings: Settings, llm: ScriptedProvider, task: str):
    runtime = Runtime(settings, llm=llm)
    try:
        request = runtime.prepare(task, model="scripted:test")
        return await runtime.start(request)
    finally:
        runtime.close()


async def test_task_in_words_is_planned_executed_verified_and_learned(
    settings: Settings, workspace: Path
) -> None:
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": fenced(NOTES_PLAN)},
            judge(True, "notes.txt holds the three words"),
            judge(True, "wc printed 3"),
        ]
    )
    state = await run_task(
        settings, llm, "Write three Greek letters to notes.txt and count the lines"
    )

    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert (workspace / "notes.txt").read_text() == "alpha\nbeta\ngamma\n"
    assert [s.status for s in state.plan.steps] == [StepStatus.SUCCEEDED] * 2
    count = state.plan.steps[1].attempts[-1]
    assert count.result.output.strip() == "3"
    assert count.verdict.judge == "wc printed 3"
    assert state.policy.verification == "llm-judge"
    assert state.usage.llm_calls == 3 and state.usage.total_tokens > 0
    assert [r.purpose for r in llm.requests] == ["atlas.plan", "grisha.judge", "grisha.judge"]
    # the judge saw the tool output, fenced as untrusted data
    assert "<<<" in llm.requests[2].messages[-1].content
    assert "untrusted" in llm.requests[2].messages[-1].content

    store = Store.open(settings.database_url)
    try:
        row = store.get_run(state.run_id)
        assert row["status"] == "succeeded" and row["stop_reason"] == "completed"
        kinds = [e["kind"] for e in store.list_events(state.run_id)]
        for kind in ("policy", "plan", "tool_call", "verdict", "lessons_stored", "run_finished"):
            assert kind in kinds
        lessons = store.search_lessons("count lines of notes")
        assert lessons and lessons[0].outcome == "success"
        assert "fs.write(write-notes)" in lessons[0].text
    finally:
        store.close()

    # a later, similar task gets the lesson in Atlas's prompt
    again = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(NOTES_PLAN)},
            judge(True, "ok"),
            judge(True, "ok"),
        ]
    )
    second = await run_task(settings, again, "Count the lines of the notes file")
    assert second.stop_reason == StopReason.COMPLETED
    assert second.lessons_used and second.lessons_used[0].run_id == state.run_id
    assert "A plan that worked" in again.requests[0].messages[0].content


async def test_failed_verification_leads_to_a_replan_that_succeeds(
    settings: Settings, workspace: Path
) -> None:
    bad = {
        "steps": [
            {
                "id": "greet",
                "tool": "fs.write",
                "args": {"path": "greeting.txt", "content": "helo world"},
                "checks": [{"file_contains": {"path": "greeting.txt", "text": "hello"}}],
            }
        ]
    }
    fixed = {
        "rationale": "spell it right",
        "steps": [
            {
                "id": "greet-2",
                "tool": "fs.write",
                "args": {"path": "greeting.txt", "content": "hello world"},
                "checks": [{"file_contains": {"path": "greeting.txt", "text": "hello"}}],
            }
        ],
    }
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(bad)},
            {"match": {"purpose": "atlas.replan"}, "text": json.dumps(fixed)},
            judge(True, "greeting is right"),
        ]
    )
    state = await run_task(settings, llm, "Write hello world to greeting.txt")

    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert (workspace / "greeting.txt").read_text() == "hello world"
    assert state.counters.replans == 1 and state.counters.retries == 1
    assert len(state.plan_history) == 1
    failed = state.plan_history[0].steps[0]
    assert failed.status == StepStatus.FAILED and len(failed.attempts) == 2
    assert [s.id for s in state.plan.steps] == ["greet-2"]
    # the judge is not asked when a deterministic check already failed
    assert [r.purpose for r in llm.requests] == ["atlas.plan", "atlas.replan", "grisha.judge"]
    replan_brief = llm.requests[1].messages[-1].content
    assert "greet" in replan_brief and "file_contains greeting.txt 'hello'" in replan_brief
    assert "greet" in llm.requests[1].messages[0].content  # used ids are named

    store = Store.open(settings.database_url)
    try:
        lessons = store.search_lessons("write hello world greeting")
        failures = [lesson for lesson in lessons if lesson.outcome == "failure"]
        assert failures and "Replanned with" in failures[0].text
        journaled, _ = load_run(store, state.run_id)  # the run as its journal has it
        plans = [*journaled.plan_history, journaled.plan]
        assert [[s.id for s in plan.steps] for plan in plans if plan] == [["greet"], ["greet-2"]]
        assert journaled == state
    finally:
        store.close()


async def test_plan_file_runs_without_any_model(settings: Settings, workspace: Path) -> None:
    runtime = Runtime(settings)
    try:
        request = runtime.prepare(str(Path(__file__).parent.parent / "examples" / "hello.yaml"))
        assert request.model is None
        state = await runtime.start(request)
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert state.usage.llm_calls == 0
    assert (workspace / "report.md").read_text().strip().endswith("The greeting has 4 words.")
    assert all(s.status == StepStatus.SUCCEEDED for s in state.plan.steps)


async def test_a_model_that_never_plans_validly_fails_clearly(settings: Settings) -> None:
    llm = ScriptedProvider(
        [{"match": {"purpose": "atlas"}, "text": "I'd rather chat.", "repeat": True}]
    )
    state = await run_task(settings, llm, "Do something useful")
    assert state.stop_reason == StopReason.FAILED
    assert "Atlas could not produce a valid plan after 3 attempt(s)" in state.stop_detail
    assert len(llm.requests) == 3  # first try plus two repairs, then a clean stop
    assert state.lessons_stored == 1  # the failure is remembered


async def test_plan_with_an_unknown_tool_is_sent_back_to_the_model(settings: Settings) -> None:
    wrong = {"steps": [{"id": "a", "tool": "fs.delete", "args": {"path": "x"}}]}
    right = {"steps": [{"id": "a", "tool": "fs.write", "args": {"path": "x", "content": "1"}}]}
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(wrong)},
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(right)},
            judge(True, "written"),
        ]
    )
    state = await run_task(settings, llm, "Write 1 to x")
    assert state.stop_reason == StopReason.COMPLETED
    assert "unknown tool 'fs.delete'" in llm.requests[1].messages[-1].content


@pytest.mark.parametrize("budget", [3, 5])
async def test_step_budget_ends_the_run_with_a_report(settings: Settings, budget: int) -> None:
    runtime = Runtime(settings)
    try:
        request = runtime.prepare(
            str(Path(__file__).parent.parent / "examples" / "hello.yaml"),
            limits=RunLimits(max_steps=budget),
        )
        state = await runtime.start(request)
        row = runtime.store.get_run(state.run_id)
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.STEP_BUDGET
    assert state.step == budget
    assert row["status"] == "failed" and "--max-steps" in row["report"]


async def test_token_budget_stops_the_run(settings: Settings) -> None:
    llm = ScriptedProvider(
        [
            {
                "match": {"purpose": "atlas.plan"},
                "text": json.dumps(NOTES_PLAN),
                "usage": {"input_tokens": 900, "output_tokens": 200},
            },
            {
                "match": {"purpose": "grisha"},
                "text": '{"passed": true, "reason": "ok"}',
                "repeat": True,
            },
        ]
    )
    runtime = Runtime(settings, llm=llm)
    try:
        state = await runtime.start(
            runtime.prepare("Write notes", limits=RunLimits(token_budget=1000))
        )
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.TOKEN_BUDGET
    assert "token budget of 1000 used (1100 tokens)" in state.stop_detail
    assert state.counters.tool_calls == 0  # stopped before acting on the plan


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"error": {"kind": "server"}}, "LLMError: scripted: HTTP 500"),
        ({"delay_s": 5, "text": "{}"}, "LLMTimeoutError: scripted: no reply within 0.2s"),
    ],
)
async def test_a_failing_model_ends_the_run_with_the_reason(
    tmp_path: Path, workspace: Path, entry: dict[str, object], words: str
) -> None:
    settings = Settings(database_url=str(tmp_path / "t.db"), workspace=workspace, llm_timeout_s=0.2)
    llm = ScriptedProvider([{"match": {"purpose": "atlas"}, **entry}])
    state = await run_task(settings, llm, "Anything at all")
    assert state.stop_reason == StopReason.ERROR
    assert words in state.stop_detail
    store = Store.open(settings.database_url)
    try:
        row = store.get_run(state.run_id)
        assert row["status"] == "failed" and words in row["stop_detail"]
    finally:
        store.close()


async def test_a_recorded_run_replays_offline_to_the_same_result(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    from trinity.llm.scripted import RecordingProvider

    recording = tmp_path / "recorded.yaml"
    live = RecordingProvider(
        ScriptedProvider(
            [
                {"match": {"purpose": "atlas.plan"}, "text": fenced(NOTES_PLAN)},
                judge(True, "three lines"),
                judge(True, "wc printed 3"),
            ],
            model="pretend-real",
        ),
        recording,
    )
    first = await run_task(settings, live, "Write notes and count them")
    assert first.stop_reason == StopReason.COMPLETED
    assert recording.exists()

    replay = ScriptedProvider.from_file(recording)
    (workspace / "notes.txt").unlink()
    second = await run_task(settings, replay, "Write notes and count them")
    assert second.stop_reason == StopReason.COMPLETED
    assert [r.purpose for r in replay.requests] == ["atlas.plan", "grisha.judge", "grisha.judge"]
    assert second.plan.model_dump(
        exclude={"steps": {"__all__": {"attempts"}}}
    ) == first.plan.model_dump(exclude={"steps": {"__all__": {"attempts"}}})
    assert second.usage.total_tokens == first.usage.total_tokens
    assert replay.remaining == 0


async def test_a_whole_run_state_survives_json(settings: Settings) -> None:
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(NOTES_PLAN)},
            judge(True, "ok"),
            judge(False, "the count looks wrong"),
            judge(True, "ok now"),
        ]
    )
    state = await run_task(settings, llm, "Write notes and count them")
    document = state.model_dump_json()
    again = type(state).model_validate_json(document)
    assert again == state
    assert again.model_dump_json() == document


async def test_policy_records_what_the_user_fixed(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        request = runtime.prepare(
            str(Path(__file__).parent.parent / "examples" / "hello.yaml"),
            verification=VerificationLevel.NONE,
            max_replans=0,
        )
        state = await runtime.start(request)
    finally:
        runtime.close()
    assert state.policy.verification == VerificationLevel.NONE
    fixed = [r for r in state.policy.reasons if r.startswith("user fixed:")]
    assert fixed == ["user fixed: max_replans=0, verification=none"]  # defaults are not "fixed"
    assert state.policy.max_steps == settings.max_steps


async def test_verify_none_still_fails_a_failing_command(
    settings: Settings, tmp_path: Path
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "steps:\n  - id: boom\n    tool: shell.run\n    args: {command: 'exit 3'}\n"
        "    checks: [{exit_code: 0}]\n"
    )
    runtime = Runtime(settings)
    try:
        state = await runtime.start(runtime.prepare(str(plan), verification=VerificationLevel.NONE))
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.FAILED
    assert "tool call succeeded — not met (exit code 3)" in state.stop_detail


async def test_cancel_leaves_a_resumable_run_and_no_false_lesson(
    settings: Settings, tmp_path: Path, workspace: Path
) -> None:
    plan = tmp_path / "slow.yaml"
    plan.write_text(
        "steps:\n"
        "  - id: wait\n    tool: shell.run\n    args: {command: 'sleep 0.3; echo done > a.txt'}\n"
        "    checks: [{file_exists: a.txt}]\n"
        "  - id: after\n    tool: fs.write\n    args: {path: b.txt, content: b}\n"
    )
    runtime = Runtime(settings)
    try:
        request = runtime.prepare(str(plan))

        def on_event(event: EventBase) -> None:
            if event.kind == "tool_call":
                runtime.cancel(event.run_id)  # stop after the current node

        state = await runtime.start(request, subscribers=[on_event])
        assert state.stop_reason == StopReason.CANCELLED
        assert state.lessons_stored == 0  # a cancel teaches nothing
        row = runtime.store.get_run(state.run_id)
        assert row["status"] == "cancelled" and row["stop_reason"] == "cancelled"

        resumed = await runtime.resume(state.run_id)
        assert resumed.stop_reason == StopReason.COMPLETED, resumed.stop_detail
        assert (workspace / "b.txt").read_text() == "b"
        assert runtime.store.get_run(state.run_id)["status"] == "succeeded"
        assert [lesson.outcome for lesson in runtime.store.search_lessons("the slow plan")] == [
            "success"
        ]
    finally:
        runtime.close()


async def test_resume_can_switch_the_model(settings: Settings) -> None:
    llm = ScriptedProvider([{"match": {"purpose": "atlas"}, "error": {"kind": "server"}}])
    first = await run_task(settings, llm, "Write notes and count them")
    assert first.stop_reason == StopReason.ERROR  # resumable, once its cause is fixed
    script = Path(settings.database_url).parent / "script.yaml"
    script.write_text(
        "replies:\n"
        f"  - match: {{purpose: atlas.plan}}\n    text: '{json.dumps(NOTES_PLAN)}'\n"
        '  - match: {purpose: grisha}\n    text: \'{"passed": true, "reason": "ok"}\'\n'
        "    repeat: true\n"
    )
    runtime = Runtime(settings)
    try:
        with pytest.raises(Exception, match="scripted model file not found"):
            await runtime.resume(first.run_id)
        resumed = await runtime.resume(first.run_id, model=f"scripted:{script}")
    finally:
        runtime.close()
    assert resumed.stop_reason == StopReason.COMPLETED, resumed.stop_detail
    assert resumed.model == f"scripted:{script}"
    store = Store.open(settings.database_url)
    try:
        assert store.get_run(first.run_id)["model"] == f"scripted:{script}"
    finally:
        store.close()


async def test_a_failing_event_callback_does_not_end_the_run(settings: Settings) -> None:
    def broken(event: EventBase) -> None:
        raise KeyError("observer bug")

    runtime = Runtime(settings)
    try:
        request = runtime.prepare(str(Path(__file__).parent.parent / "examples" / "hello.yaml"))
        state = await runtime.start(request, subscribers=[broken])
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
