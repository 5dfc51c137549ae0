"""The progress monitor: pure functions that find loops and stalls in a run's history.

Ideas from OpenHands' stuck detector (compare action *and* observation, look for A-B-A-B) and
Magentic-One's progress ledger (is the run making progress? count stalls, replan, then stop),
with two changes: only *verified* progress counts (a step whose action was never verified before
passes Grisha's checks), and whole plans are compared too, so a model that answers a replan with
the plan that just failed is caught before any tool runs again.

Nothing here changes the state; the Meta-Planner decides what a finding means.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from trinity.state import Attempt, Plan, ProgressFinding, ProgressKind, RunState, Step

REPEAT_THRESHOLD = 3
"""Occurrences of one failing action+result (or one error) that make a loop: the policy's own
retry gives two, so a third is the first the model chose on its own."""
ALTERNATION_CYCLES = 2
"""A-B-A-B: two full cycles of two alternating failing actions."""
_SHOWN = 200


def canonical_args(args: dict[str, Any]) -> str:
    """Arguments as canonical JSON: key order and spacing do not make a call different."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def describe_action(tool: str, args: dict[str, Any]) -> str:
    text = f"{tool} {canonical_args(args)}"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def normalise_error(text: str) -> str:
    """An error with the noise taken out (numbers, hex ids, spacing, case), so the same failure
    with another pid, duration or line number reads the same."""
    text = re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "#", text.lower())
    return " ".join(text.split())[:500]


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One attempt of one step, reduced to what the detectors compare."""

    step_id: str
    tool: str
    action: str
    """Tool + canonical arguments."""
    outcome: str
    """A digest of what the call returned and whether it was verified."""
    error: str
    """The normalised tool error or failed-check summary; empty when the attempt passed."""
    passed: bool
    shown: str
    """The action for people."""
    summary: str
    """The verdict's summary (or the tool error), for people."""


def _record(step: Step, attempt: Attempt) -> ActionRecord:
    result, verdict = attempt.result, attempt.verdict
    assert verdict is not None
    raw = {
        "ok": result.ok if result else None,
        "exit_code": result.exit_code if result else None,
        "error": result.error if result else None,
        "output": result.output if result else None,
        "passed": verdict.passed,
    }
    outcome = hashlib.sha256(canonical_args(raw).encode()).hexdigest()[:16]
    summary = verdict.summary or (result.error if result else "") or ""
    return ActionRecord(
        step_id=step.id,
        tool=step.tool,
        action=f"{step.tool} {canonical_args(step.args)}",
        outcome=outcome,
        error="" if verdict.passed else normalise_error(summary),
        passed=verdict.passed,
        shown=describe_action(step.tool, step.args),
        summary=summary[:_SHOWN],
    )


def action_history(state: RunState) -> list[ActionRecord]:
    """Every judged attempt of the run, oldest first. Steps Atlas kept from an earlier plan
    appear in several plans; each attempt is counted once."""
    seen: set[tuple[str, int]] = set()
    records: list[ActionRecord] = []
    plans = [*state.plan_history, *([state.plan] if state.plan is not None else [])]
    for plan in plans:
        for step in plan.steps:
            for attempt in step.attempts:
                if (step.id, attempt.number) in seen or attempt.verdict is None:
                    continue
                seen.add((step.id, attempt.number))
                records.append(_record(step, attempt))
    return records


def since_progress(records: Sequence[ActionRecord]) -> list[ActionRecord]:
    """The records after the last verified progress: the last passed attempt whose action had
    never passed before. Re-running something that already worked is not progress."""
    verified: set[str] = set()
    start = 0
    for index, record in enumerate(records):
        if record.passed and record.action not in verified:
            verified.add(record.action)
            start = index + 1
    return list(records[start:])


def repeated_action(
    records: Sequence[ActionRecord], threshold: int = REPEAT_THRESHOLD
) -> ProgressFinding | None:
    """The latest attempt failed exactly as ``threshold - 1`` earlier ones did: same tool, same
    arguments, same result."""
    if not records or records[-1].passed:
        return None
    last = records[-1]
    same = [r for r in records if r.action == last.action and r.outcome == last.outcome]
    if len(same) < threshold:
        return None
    return ProgressFinding(
        kind=ProgressKind.REPEATED_ACTION,
        evidence=f"the same call `{last.shown}` failed {len(same)} times with the same result: "
        f"{last.summary}",
        repetitions=len(same),
    )


def repeated_error(
    records: Sequence[ActionRecord], threshold: int = REPEAT_THRESHOLD
) -> ProgressFinding | None:
    """The latest attempt failed with an error ``threshold - 1`` earlier attempts of *other*
    calls had too: changing the arguments does not reach the cause."""
    if not records or records[-1].passed or not records[-1].error:
        return None
    last = records[-1]
    same = [r for r in records if not r.passed and r.error == last.error]
    actions = list(dict.fromkeys(r.shown for r in same))
    if len(same) < threshold or len(actions) < 2:
        return None
    tried = "; ".join(f"`{a}`" for a in actions[-3:])
    return ProgressFinding(
        kind=ProgressKind.REPEATED_ERROR,
        evidence=f"{len(same)} failed attempts of {len(actions)} different calls ({tried}) "
        f"all ended with the same error: {last.summary}",
        repetitions=len(same),
    )


def alternating_tail(items: Sequence[Hashable]) -> int:
    """How many items at the end of ``items`` alternate between two values A != B (A-B-A-B…),
    once runs of equal neighbours are collapsed (a retry of A is still A); 0 for fewer than two
    distinct values."""
    runs: list[Hashable] = []
    for item in items:
        if not runs or runs[-1] != item:
            runs.append(item)
    if len(runs) < 2:
        return 0
    a, b = runs[-2], runs[-1]
    count = 0
    for distance, item in enumerate(reversed(runs)):
        if item != (b if distance % 2 == 0 else a):
            break
        count += 1
    return count


def alternation(items: Sequence[Hashable], cycles: int = ALTERNATION_CYCLES) -> int:
    """The full A-B cycles ending ``items`` (see :func:`alternating_tail`), or 0 when there
    are fewer than ``cycles``."""
    found = alternating_tail(items) // 2
    return found if found >= cycles else 0


def action_alternation(
    records: Sequence[ActionRecord], cycles: int = ALTERNATION_CYCLES
) -> ProgressFinding | None:
    """Two failing calls, each failing the same way every time, take turns."""
    if not records or records[-1].passed:
        return None
    tail: list[ActionRecord] = []
    for record in reversed(records):
        if record.passed:
            break
        tail.insert(0, record)
    found = alternation([(r.action, r.outcome) for r in tail], cycles)
    if not found:
        return None
    last = tail[-1]
    other = next(r for r in reversed(tail) if r.action != last.action)
    return ProgressFinding(
        kind=ProgressKind.ALTERNATION,
        evidence=f"two failing calls take turns ({found} cycles): `{other.shown}` "
        f"({other.summary}) and `{last.shown}` ({last.summary})",
        repetitions=found,
    )


def plan_signature(plan: Plan) -> str:
    """What a plan does: each step's tool, canonical arguments and checks; ids, titles,
    expectations and rationale do not change what runs."""
    steps = [
        [step.tool, canonical_args(step.args), [c.model_dump(mode="json") for c in step.checks]]
        for step in plan.steps
    ]
    return json.dumps(steps, sort_keys=True)


def describe_plan(plan: Plan) -> str:
    return "; ".join(describe_action(step.tool, step.args) for step in plan.steps)


def repeated_plan(
    plans: Sequence[Plan], signatures: Sequence[str] | None = None
) -> ProgressFinding | None:
    """The newest plan does what an earlier one already did. ``alternation`` when it brings
    back the plan before last (A-B-A), ``same_plan`` otherwise. ``signatures`` are the plans'
    :func:`plan_signature`, when the caller has them."""
    if len(plans) < 2:
        return None
    signatures = list(signatures) if signatures is not None else [plan_signature(p) for p in plans]
    latest = signatures[-1]
    pairs = zip(plans[:-1], signatures[:-1], strict=True)
    earlier = [plan.revision for plan, signature in pairs if signature == latest]
    if not earlier:
        return None
    steps = describe_plan(plans[-1])
    if len(signatures) >= 3 and signatures[-3] == latest and signatures[-2] != latest:
        return ProgressFinding(
            kind=ProgressKind.ALTERNATION,
            evidence=f"plans alternate: revision {plans[-1].revision} brings back revision "
            f"{plans[-3].revision} ({steps}), with revision {plans[-2].revision} "
            f"({describe_plan(plans[-2])}) in between",
            repetitions=alternating_tail(signatures),
        )
    return ProgressFinding(
        kind=ProgressKind.SAME_PLAN,
        evidence=f"the new plan (revision {plans[-1].revision}) is identical to revision(s) "
        f"{', '.join(map(str, earlier))}, which failed: {steps}",
        repetitions=len(earlier) + 1,
    )


def no_progress(steps_since: int, limit: int) -> ProgressFinding | None:
    """``limit`` graph steps or more passed without verified progress."""
    if steps_since < limit:
        return None
    return ProgressFinding(
        kind=ProgressKind.NO_PROGRESS,
        evidence=f"no step was newly verified in the last {steps_since} graph steps "
        f"(limit {limit})",
        repetitions=steps_since,
    )


class ProgressMonitor:
    """Running summaries of a run's judged attempts, so that each check costs the same however
    long the run has been going: the attempts since the last verified progress (the window the
    loop detectors look at), the actions verified so far, and each plan's signature.

    The Meta-Planner keeps one per run. It is filled from the state once (a run read back from
    its journal has history), then takes the newly judged attempts of the current step."""

    def __init__(self) -> None:
        self.window: list[ActionRecord] = []
        """The judged attempts after the last verified progress."""
        self._verified: set[str] = set()
        self._seen: set[tuple[str, int]] = set()
        self._loaded = False
        self._progress = False
        self._signatures: dict[int, str] = {}

    def update(self, state: RunState) -> None:
        """Take in the attempts judged since the last call."""
        if not self._loaded:
            self._loaded = True
            for record in action_history(state):
                self._add(record)
            self._seen.update(_judged(state))
            return
        step = state.current_step
        if step is None:
            return
        for attempt in step.attempts:
            key = (step.id, attempt.number)
            if attempt.verdict is not None and key not in self._seen:
                self._seen.add(key)
                self._add(_record(step, attempt))

    def _add(self, record: ActionRecord) -> None:
        self._progress = record.passed and record.action not in self._verified
        if self._progress:
            self._verified.add(record.action)
            self.window = []
        else:
            self.window.append(record)

    def made_progress(self, state: RunState) -> bool:
        """The latest attempt verified an action no earlier attempt had."""
        self.update(state)
        return self._progress

    def check_attempt(self, state: RunState) -> ProgressFinding | None:
        """After a failed verdict: the first loop or stall the history shows, most specific
        first."""
        self.update(state)
        window = self.window
        finding = (
            repeated_action(window)
            or action_alternation(window)
            or repeated_error(window)
            or no_progress(state.step - (state.progress_mark or 0), state.policy.stall_steps)
        )
        return _stamp(state, finding)

    def check_plan(self, state: RunState) -> ProgressFinding | None:
        """After a replan: does the new plan repeat an earlier one?"""
        if state.plan is None or not state.plan_history:
            return None
        plans = [*state.plan_history, state.plan]
        signatures = [self._signature(plan) for plan in plans]
        return _stamp(state, repeated_plan(plans, signatures))

    def _signature(self, plan: Plan) -> str:
        found = self._signatures.get(plan.revision)
        if found is None:
            found = self._signatures[plan.revision] = plan_signature(plan)
        return found


def _judged(state: RunState) -> set[tuple[str, int]]:
    plans = [*state.plan_history, *([state.plan] if state.plan is not None else [])]
    return {
        (step.id, attempt.number)
        for plan in plans
        for step in plan.steps
        for attempt in step.attempts
        if attempt.verdict is not None
    }


def made_progress(state: RunState) -> bool:
    """The latest attempt verified an action no earlier attempt had (from the whole history:
    the Meta-Planner uses a :class:`ProgressMonitor` instead)."""
    return ProgressMonitor().made_progress(state)


def check_attempt(state: RunState) -> ProgressFinding | None:
    """:meth:`ProgressMonitor.check_attempt` from the whole history."""
    return ProgressMonitor().check_attempt(state)


def check_plan(state: RunState) -> ProgressFinding | None:
    """:meth:`ProgressMonitor.check_plan` from the whole history."""
    return ProgressMonitor().check_plan(state)


def _stamp(state: RunState, finding: ProgressFinding | None) -> ProgressFinding | None:
    if finding is None:
        return None
    revision = state.plan.revision if state.plan is not None else 0
    return finding.model_copy(update={"at_step": state.step, "revision": revision})
