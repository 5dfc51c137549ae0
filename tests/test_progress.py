"""Loop and stall detection: the pure detectors, and whole runs with a scripted model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trinity.agents.atlas import _replan_brief
from trinity.agents.progress import (
    action_alternation,
    action_history,
    alternation,
    canonical_args,
    check_attempt,
    made_progress,
    no_progress,
    normalise_error,
    plan_signature,
    repeated_action,
    repeated_error,
    repeated_plan,
    since_progress,
)
from trinity.config import Settings
from trinity.llm.scripted import ScriptedProvider
from trinity.report import render_report
from trinity.runtime import Runtime
from trinity.state import (
    Attempt,
    Check,
    Plan,
    ProgressFinding,
    ProgressKind,
    RunState,
    Step,
    StepStatus,
    StopReason,
    Task,
    ToolResult,
    Verdict,
    VerificationLevel,
)

# -- helpers -------------------------------------------------------------------------------------

Call = tuple[str, dict[str, Any], bool, str]
"""(tool, args, passed, output or error)"""


def make_step(index: int, tool: str, args: dict[str, Any], passed: bool, text: str) -> Step:
    attempt = Attempt(
        number=1,
        started_at=float(index),
        result=ToolResult(ok=passed, output=text if passed else "", error=None if passed else text),
        verdict=Verdict(
            step_id=f"s{index}",
            passed=passed,
            level=VerificationLevel.CHECKS,
            summary="1 check(s) passed" if passed else f"tool call succeeded — not met ({text})",
        ),
    )
    return Step(
        id=f"s{index}",
        tool=tool,
        args=args,
        status=StepStatus.SUCCEEDED if passed else StepStatus.FAILED,
        attempts=[attempt],
    )


def state_of(*calls: Call, **fields: Any) -> RunState:
    steps = [make_step(i, *call) for i, call in enumerate(calls)]
    return RunState(
        task=Task(text="t", workspace="/tmp"),
        plan=Plan(steps=steps),
        current=len(steps) - 1,
        **fields,
    )


def history(*calls: Call):
    return action_history(state_of(*calls))


WRITE = ("fs.write", {"path": "a.txt", "content": "x"})
READ = ("fs.read", {"path": "a.txt"})
RUN = ("shell.run", {"command": "make"})


def fail(action: tuple[str, dict[str, Any]], error: str = "boom") -> Call:
    return (action[0], action[1], False, error)


def ok(action: tuple[str, dict[str, Any]], output: str = "done") -> Call:
    return (action[0], action[1], True, output)


def plan_of(*actions: tuple[str, dict[str, Any]], prefix: str = "p", revision: int = 0) -> Plan:
    return Plan(
        steps=[
            Step(id=f"{prefix}{i}", title=f"{prefix} title {i}", tool=tool, args=args)
            for i, (tool, args) in enumerate(actions)
        ],
        revision=revision,
    )


# -- canonical forms -----------------------------------------------------------------------------


def test_canonical_args_ignore_key_order_and_spacing() -> None:
    assert canonical_args({"b": 1, "a": [1, 2]}) == canonical_args({"a": [1, 2], "b": 1})
    assert canonical_args({"a": 1}) != canonical_args({"a": 2})


def test_normalised_errors_drop_numbers_case_and_spacing() -> None:
    assert normalise_error("Killed pid 123 after 1.5s") == normalise_error("killed  PID 9 after 2s")
    assert normalise_error("no such file: a.txt") != normalise_error("permission denied: a.txt")


# -- same action, same result ----------------------------------------------------------------------


def test_the_same_failing_call_three_times_is_a_loop() -> None:
    finding = repeated_action(history(fail(WRITE), fail(WRITE), fail(WRITE)))
    assert finding is not None and finding.kind == ProgressKind.REPEATED_ACTION
    assert finding.repetitions == 3
    assert 'fs.write {"content":"x","path":"a.txt"}' in finding.evidence
    assert "boom" in finding.evidence


def test_two_failures_are_only_the_policy_s_retry() -> None:
    assert repeated_action(history(fail(WRITE), fail(WRITE))) is None


def test_the_same_call_with_a_different_result_each_time_is_not_a_loop() -> None:
    calls = [fail(RUN, "error at step one"), fail(RUN, "error at step two"), fail(RUN, "other")]
    assert repeated_action(history(*calls)) is None


def test_retries_that_succeed_are_not_a_loop() -> None:
    records = history(fail(WRITE), fail(WRITE), ok(WRITE))
    assert repeated_action(records) is None
    assert check_attempt(state_of(fail(WRITE), fail(WRITE), ok(WRITE))) is None
    # and the success resets the window: one more failure of the same call is not a third
    records = history(fail(WRITE), fail(WRITE), ok(WRITE), fail(WRITE))
    assert repeated_action(since_progress(records)) is None


def test_only_a_newly_verified_action_counts_as_progress() -> None:
    records = history(ok(READ), fail(WRITE), ok(READ), fail(WRITE), ok(READ), fail(WRITE))
    window = since_progress(records)
    assert len(window) == 5  # re-reading the same file again is no progress
    finding = repeated_action(window)
    assert finding is not None and finding.repetitions == 3
    assert made_progress(state_of(fail(WRITE), ok(READ)))
    assert not made_progress(state_of(ok(READ), ok(READ)))


def test_kept_steps_are_counted_once() -> None:
    state = state_of(ok(READ), fail(WRITE))
    old = state.plan
    assert old is not None
    kept = old.steps[0].model_copy(deep=True)
    state.plan_history = [old]
    state.plan = Plan(steps=[kept, make_step(5, *fail(WRITE))], revision=1)
    assert [r.step_id for r in action_history(state)] == ["s0", "s1", "s5"]


# -- same error ------------------------------------------------------------------------------------


def test_different_calls_with_the_same_error_are_a_loop() -> None:
    calls = [
        fail(("shell.run", {"command": "make"}), "make: command not found (pid 12)"),
        fail(("shell.run", {"command": "make all"}), "make: command not found (pid 13)"),
        fail(("shell.run", {"command": "make -j4"}), "make: command not found (pid 14)"),
    ]
    finding = repeated_error(history(*calls))
    assert finding is not None and finding.kind == ProgressKind.REPEATED_ERROR
    assert finding.repetitions == 3 and "command not found" in finding.evidence
    assert "make -j4" in finding.evidence


def test_different_errors_or_one_call_are_not_a_repeated_error() -> None:
    different = [fail(RUN, "no such file"), fail(READ, "denied"), fail(WRITE, "disk full")]
    assert repeated_error(history(*different)) is None
    # one call failing the same way is the repeated-action detector's case
    assert repeated_error(history(fail(RUN), fail(RUN), fail(RUN))) is None
    # the latest attempt must be part of it
    assert repeated_error(history(fail(RUN), fail(READ), fail(WRITE), fail(RUN, "new"))) is None


# -- alternation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "cycles"),
    [
        ("ABAB", 2),
        ("AABBAABB", 2),  # a retry of A is still A
        ("CABABAB", 3),
        ("ABA", 0),
        ("AB", 0),
        ("ABCAB", 0),
        ("ABAC", 0),
        ("AAAA", 0),
        ("", 0),
    ],
)
def test_alternation_counts_full_cycles(items: str, cycles: int) -> None:
    assert alternation(list(items)) == cycles


def test_two_failing_calls_taking_turns_are_a_loop() -> None:
    finding = action_alternation(
        history(fail(WRITE, "e1"), fail(RUN, "e2"), fail(WRITE, "e1"), fail(RUN, "e2"))
    )
    assert finding is not None and finding.kind == ProgressKind.ALTERNATION
    assert finding.repetitions == 2
    assert "fs.write" in finding.evidence and "shell.run" in finding.evidence


def test_two_different_actions_are_not_alternation() -> None:
    assert action_alternation(history(fail(WRITE), fail(RUN))) is None
    assert action_alternation(history(fail(WRITE), fail(RUN), fail(WRITE))) is None


def test_turns_with_changing_results_are_not_alternation() -> None:
    calls = [fail(WRITE, "one"), fail(RUN), fail(WRITE, "two"), fail(RUN, "other")]
    assert action_alternation(history(*calls)) is None


def test_a_success_breaks_the_alternation() -> None:
    calls = [fail(WRITE), fail(RUN), ok(READ), fail(WRITE), fail(RUN)]
    assert action_alternation(history(*calls)) is None


# -- plans -----------------------------------------------------------------------------------------


def test_plan_signature_ignores_ids_titles_and_prose() -> None:
    first = plan_of(WRITE, RUN, prefix="a")
    second = plan_of(WRITE, RUN, prefix="b", revision=3)
    second.rationale = "a brand new idea"
    second.steps[0].expected = "it works now"
    assert plan_signature(first) == plan_signature(second)
    assert plan_signature(first) != plan_signature(plan_of(RUN, WRITE))
    assert plan_signature(first) != plan_signature(
        plan_of(("fs.write", {"path": "a.txt", "content": "y"}), RUN)
    )
    checked = plan_of(WRITE, RUN, prefix="c")
    checked.steps[1].checks = [Check.model_validate({"exit_code": 0})]
    assert plan_signature(first) != plan_signature(checked)


def test_a_replan_identical_to_an_earlier_plan_is_found() -> None:
    a0, a1 = plan_of(WRITE, prefix="a", revision=0), plan_of(WRITE, prefix="b", revision=1)
    finding = repeated_plan([a0, a1])
    assert finding is not None and finding.kind == ProgressKind.SAME_PLAN
    assert "revision 1" in finding.evidence and "fs.write" in finding.evidence
    assert finding.repetitions == 2
    b = plan_of(RUN, prefix="c", revision=1)
    c = plan_of(READ, prefix="d", revision=2)
    later = repeated_plan([a0, b, c, plan_of(WRITE, prefix="e", revision=3)])
    assert later is not None and later.kind == ProgressKind.SAME_PLAN


def test_plans_taking_turns_are_alternation() -> None:
    plans = [
        plan_of(WRITE, prefix="a", revision=0),
        plan_of(RUN, prefix="b", revision=1),
        plan_of(WRITE, prefix="c", revision=2),
    ]
    finding = repeated_plan(plans)
    assert finding is not None and finding.kind == ProgressKind.ALTERNATION
    assert finding.repetitions == 3
    plans.append(plan_of(RUN, prefix="d", revision=3))
    again = repeated_plan(plans)
    assert again is not None and again.kind == ProgressKind.ALTERNATION
    assert again.repetitions == 4


def test_new_plans_are_not_repeats() -> None:
    assert repeated_plan([plan_of(WRITE)]) is None
    assert repeated_plan([plan_of(WRITE), plan_of(RUN, prefix="b")]) is None


# -- stall -----------------------------------------------------------------------------------------


def test_no_progress_for_the_stall_window() -> None:
    assert no_progress(29, 30) is None
    finding = no_progress(30, 30)
    assert finding is not None and finding.kind == ProgressKind.NO_PROGRESS
    assert finding.stop_reason == StopReason.STALLED


def test_check_attempt_counts_the_stall_from_the_progress_mark() -> None:
    calls = [fail(WRITE, "a"), fail(RUN, "b")]
    state = state_of(*calls, step=40, progress_mark=20)
    state.policy.stall_steps = 30
    assert check_attempt(state) is None
    state.step = 50
    finding = check_attempt(state)
    assert finding is not None and finding.kind == ProgressKind.NO_PROGRESS
    assert finding.at_step == 50 and finding.repetitions == 30


def test_findings_are_checkpointed_and_named_in_the_replan_brief() -> None:
    state = state_of(fail(WRITE), fail(WRITE), fail(WRITE))
    finding = check_attempt(state)
    assert finding is not None and finding.stop_reason == StopReason.LOOP
    state.progress_findings.append(finding)
    again = RunState.model_validate_json(state.model_dump_json())
    assert again.progress_findings == [finding]
    assert state.plan is not None
    brief = _replan_brief(state, [], state.plan.steps[-1])
    assert "LOOP WARNING" in brief and "repeated_action (x3)" in brief
    assert 'fs.write {"content":"x","path":"a.txt"}' in brief


# -- whole runs ------------------------------------------------------------------------------------


def write_plan(step_id: str, content: str) -> str:
    """A one-step plan that writes ``content`` and checks for 'hello': fails unless it says so."""
    return json.dumps(
        {
            "rationale": f"attempt {step_id}",
            "steps": [
                {
                    "id": step_id,
                    "title": f"Write the greeting ({step_id})",
                    "tool": "fs.write",
                    "args": {"path": "greeting.txt", "content": content},
                    "checks": [{"file_contains": {"path": "greeting.txt", "text": "hello"}}],
                }
            ],
        }
    )


async def run(
    settings: Settings, llm: ScriptedProvider, **options: Any
) -> tuple[RunState, dict[str, Any]]:
    stall_steps = options.pop("stall_steps", None)
    runtime = Runtime(settings, llm=llm)
    try:
        request = runtime.prepare("Write hello world to greeting.txt", **options)
        if stall_steps is not None:
            request.requested["stall_steps"] = stall_steps
        state = await runtime.start(request)
        row = runtime.store.get_run(state.run_id)
    finally:
        runtime.close()
    return state, row


def replans(llm: ScriptedProvider) -> list[str]:
    return [r.messages[-1].content for r in llm.requests if r.purpose == "atlas.replan"]


async def test_a_model_that_returns_the_same_failing_plan_is_stopped_as_a_loop(
    settings: Settings,
) -> None:
    # new ids and titles every time (the planner refuses reused ids), the same calls
    entries = [{"match": {"purpose": "atlas.plan"}, "text": write_plan("greet", "helo world")}]
    entries += [
        {"match": {"purpose": "atlas.replan"}, "text": write_plan(f"greet-{n}", "helo world")}
        for n in range(1, 6)
    ]
    llm = ScriptedProvider(entries)
    state, row = await run(settings, llm, max_replans=5)

    assert state.stop_reason == StopReason.LOOP, state.stop_detail
    # plan 0 ran (attempt + retry); plan 1 repeats it: Atlas is told; plan 2 repeats it: stop
    assert state.counters.replans == 2 and state.counters.tool_calls == 2
    assert [f.kind for f in state.progress_findings] == [ProgressKind.SAME_PLAN] * 2
    assert state.progress_findings[-1].repetitions == 3
    assert (
        "same plan at plan review (again after a change of strategy, 3 repetitions)"
        in state.stop_detail
    )
    assert 'fs.write {"content":"helo world","path":"greeting.txt"}' in state.stop_detail
    briefs = replans(llm)
    assert "LOOP WARNING" not in briefs[0] and "LOOP WARNING" in briefs[1]
    assert "same_plan (x2)" in briefs[1] and "Rejected step 'greet-1' (not run)" in briefs[1]
    assert row["stop_reason"] == "loop" and "What to try: The run kept repeating" in row["report"]
    assert "What to try: The run kept repeating" in render_report(state)


async def test_alternating_failing_plans_are_caught_at_a_b_a_b(settings: Settings) -> None:
    contents = ["helo world", "hallo world", "helo world", "hallo world", "helo world"]
    entries = [{"match": {"purpose": "atlas.plan"}, "text": write_plan("w0", contents[0])}]
    entries += [
        {"match": {"purpose": "atlas.replan"}, "text": write_plan(f"w{n}", contents[n])}
        for n in range(1, 5)
    ]
    llm = ScriptedProvider(entries)
    state, _ = await run(settings, llm, max_replans=5)

    assert state.stop_reason == StopReason.LOOP, state.stop_detail
    # A and B each ran (attempt + retry); the second A is refused, the second B stops the run
    assert state.counters.replans == 3 and state.counters.tool_calls == 4
    assert [f.kind for f in state.progress_findings] == [ProgressKind.ALTERNATION] * 2
    assert "plans alternate" in state.stop_detail
    assert "hallo world" in state.stop_detail and "helo world" in state.stop_detail
    assert "alternation (x3)" in replans(llm)[2]


async def test_with_no_replans_left_the_first_repeat_stops_the_run(settings: Settings) -> None:
    contents = ["helo world", "hallo world", "helo world"]
    entries = [{"match": {"purpose": "atlas.plan"}, "text": write_plan("w0", contents[0])}]
    entries += [
        {"match": {"purpose": "atlas.replan"}, "text": write_plan(f"w{n}", contents[n])}
        for n in range(1, 3)
    ]
    state, _ = await run(settings, ScriptedProvider(entries))  # default: two replans
    assert state.stop_reason == StopReason.LOOP
    assert "no replans left to change strategy" in state.stop_detail
    assert state.counters.replans == 2 and state.counters.tool_calls == 4


async def test_plans_that_never_verify_stall_the_run(settings: Settings) -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    entries = [{"match": {"purpose": "atlas.plan"}, "text": write_plan("s0", words[0])}]
    entries += [
        {"match": {"purpose": "atlas.replan"}, "text": write_plan(f"s{n}", word)}
        for n, word in enumerate(words[1:], start=1)
    ]
    llm = ScriptedProvider(entries)
    state, row = await run(settings, llm, max_replans=10, stall_steps=12)

    assert state.stop_reason == StopReason.STALLED, state.stop_detail
    assert [f.kind for f in state.progress_findings] == [ProgressKind.NO_PROGRESS] * 2
    first, second = state.progress_findings
    assert second.at_step - first.at_step >= 12
    # plans 0 and 1 ran twice each, the stall replans to plan 2 (twice), plan 3 stalls again
    assert state.counters.replans == 3 and state.counters.tool_calls == 7
    assert "no step was newly verified in the last" in state.stop_detail
    assert "no_progress" in replans(llm)[1]
    assert row["stop_reason"] == "stalled" and "stall_steps" in row["report"]


async def test_a_run_that_recovers_has_no_findings(settings: Settings) -> None:
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": write_plan("a", "helo world")},
            {"match": {"purpose": "atlas.replan"}, "text": write_plan("b", "hello world")},
            {
                "match": {"purpose": "grisha.judge"},
                "text": json.dumps({"passed": True, "reason": "ok"}),
            },
        ]
    )
    state, _ = await run(settings, llm)
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert state.progress_findings == []
    assert state.progress_mark is not None and state.progress_mark > 0


def test_every_stop_reason_has_advice() -> None:
    from trinity.report import _ADVICE

    assert set(_ADVICE) | {StopReason.COMPLETED} == set(StopReason)
    finding = ProgressFinding(kind=ProgressKind.ALTERNATION, evidence="x", repetitions=2)
    assert finding.stop_reason == StopReason.LOOP
