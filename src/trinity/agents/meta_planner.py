"""The Meta-Planner: chooses the run's policy, watches progress and decides what runs next.

It is both a node (``meta``: choose the policy, review a new plan, decide after each verdict) and
the graph's router (:func:`route`), which only follows the decision the node recorded.
"""

from __future__ import annotations

from typing import Any

from trinity.agents.context import AgentContext
from trinity.agents.grisha import run_check
from trinity.agents.progress import ProgressMonitor
from trinity.engine import END
from trinity.events import DecisionMade, PolicyChosen, ProgressFound
from trinity.state import (
    Attempt,
    Decision,
    FailureAction,
    OnInterrupted,
    Policy,
    ProgressFinding,
    RunState,
    StepStatus,
    StopReason,
    ToolResult,
    VerificationLevel,
)


def choose_policy(state: RunState, has_llm: bool) -> Policy:
    """The policy for a run: the limits the runtime put in ``state.policy``, then choices from
    the task's shape, the model's presence and past lessons; anything the user fixed
    (``state.requested``) wins."""
    reasons: list[str] = []
    plan = state.plan
    if plan is not None and not has_llm:
        verification = VerificationLevel.CHECKS
        reasons.append("plan file without a model: deterministic checks only, no replanning")
    elif has_llm:
        verification = VerificationLevel.LLM_JUDGE
        reasons.append("model available: deterministic checks, then an LLM judge")
    else:
        verification = VerificationLevel.CHECKS
    max_replans = 2 if has_llm else 0
    failures = [lesson for lesson in state.lessons_used if lesson.outcome == "failure"]
    if has_llm and failures:
        max_replans += 1
        reasons.append(f"{len(failures)} past failure(s) on similar tasks: one more replan allowed")
    chosen: dict[str, Any] = {
        **state.policy.model_dump(exclude={"reasons"}),  # limits the runtime set from settings
        "verification": verification,
        "on_failure": FailureAction.RETRY,
        "max_step_retries": 1,
        "max_replans": max_replans,
    }
    fixed = {k: v for k, v in state.requested.items() if k in Policy.model_fields}
    if fixed:
        reasons.append("user fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    return Policy.model_validate({**chosen, **fixed, "reasons": reasons})


class MetaPlanner:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.progress = ProgressMonitor()

    async def __call__(self, state: RunState) -> dict[str, Any]:
        if state.decision is None:
            policy = choose_policy(state, has_llm=self.ctx.llm is not None)
            self.ctx.emit(PolicyChosen(policy=policy))
            return {"policy": policy, "decision": Decision.PLAN}
        if state.last_node == "atlas":
            return self._review_plan(state)
        if state.last_node == "grisha":
            return self._after_verdict(state)
        return {}

    def _review_plan(self, state: RunState) -> dict[str, Any]:
        """A new plan (Atlas's, a replan, or the user's): start on its first pending step,
        unless it repeats an earlier plan."""
        assert state.plan is not None
        if state.progress_mark is None:
            state.progress_mark = state.step  # the stall clock starts with the first plan
        finding = self.progress.check_plan(state)
        if finding is not None:
            return self._on_finding(state, finding, "at plan review")
        return {"decision": self._next_pending(state)}

    def _on_finding(self, state: RunState, finding: ProgressFinding, where: str) -> dict[str, Any]:
        """A loop or stall: the first of its kind changes strategy (a replan whose brief names
        the evidence); a second one, or one with no way to replan, stops the run. ``where`` it
        was found goes into the stop's detail (``at plan review``, ``after step 'x'``)."""
        strikes = sum(1 for earlier in state.progress_findings if earlier.kind == finding.kind)
        findings = [*state.progress_findings, finding]
        self.ctx.emit(ProgressFound(finding=finding))
        if finding.stop_reason == StopReason.STALLED:
            state.progress_mark = state.step  # a second stall needs as many steps again
        can_replan = self.ctx.llm is not None and state.counters.replans < state.policy.max_replans
        if strikes == 0 and can_replan:
            self.ctx.emit(DecisionMade(action="replan", because=finding.kind.value))
            return {"decision": Decision.REPLAN, "progress_findings": findings}
        if strikes:
            why = "again after a change of strategy"
        elif self.ctx.llm is None:
            why = "no model to change strategy with"
        else:
            why = "no replans left to change strategy"
        state.stop_reason = finding.stop_reason
        state.stop_detail = (
            f"{finding.kind.value.replace('_', ' ')} {where} ({why}, {finding.repetitions} "
            f"repetitions): {finding.evidence}"
        )
        return {"decision": Decision.FINISH, "progress_findings": findings}

    def _next_pending(self, state: RunState) -> Decision:
        assert state.plan is not None
        if state.current < len(state.plan.steps):
            return Decision.EXECUTE
        # Every step passed. The run completes only if the task's own criteria hold too: a
        # plan (or a replan steered by injected text) may pass every step and still not do
        # the task.
        count = len(state.plan.steps)
        done = f"all {count} step{'s' if count != 1 else ''} verified"
        criteria = state.plan.success
        unmet = [
            f"{result.check} ({result.evidence})"
            for result in (run_check(c, ToolResult(ok=True), self.ctx.workspace) for c in criteria)
            if not result.passed
        ]
        state.unmet_success = unmet
        if not unmet:
            state.stop_reason = StopReason.COMPLETED
            held = f"; the task's {len(criteria)} success criteria hold" if criteria else ""
            state.stop_detail = done + held
            return Decision.FINISH
        if state.counters.replans < state.policy.max_replans and self.ctx.llm is not None:
            self.ctx.emit(DecisionMade(action="replan", because="success criteria not met"))
            return Decision.REPLAN
        state.stop_reason = StopReason.FAILED
        why = "no replans left" if self.ctx.llm is not None else "no model to replan with"
        state.stop_detail = (
            f"{done}, but the task's success criteria do not hold ({why}): " + "; ".join(unmet)
        )
        return Decision.FINISH

    def _after_verdict(self, state: RunState) -> dict[str, Any]:
        step = state.current_step
        verdict = state.last_verdict
        assert step is not None and verdict is not None
        if step.status == StepStatus.SUCCEEDED:
            if self.progress.made_progress(state):
                state.progress_mark = state.step
            state.current += 1
            return {"decision": self._next_pending(state)}
        finding = self.progress.check_attempt(state)
        if finding is not None:
            return self._on_finding(state, finding, f"after step {step.id!r}")
        policy = state.policy
        attempt = step.attempts[-1]
        retry_ok = (
            policy.on_failure == FailureAction.RETRY
            and (not attempt.interrupted or _absent(attempt, policy))
            and not attempt.denied  # the same call would be refused again
            and len(step.attempts) <= policy.max_step_retries
        )
        if retry_ok:
            state.counters.retries += 1
            self.ctx.emit(DecisionMade(action="retry", step=step.id))
            return {"decision": Decision.EXECUTE}
        if state.counters.replans < policy.max_replans and self.ctx.llm is not None:
            self.ctx.emit(DecisionMade(action="replan", step=step.id))
            return {"decision": Decision.REPLAN}
        state.stop_reason = StopReason.FAILED
        why = "no replans left" if self.ctx.llm is not None else "no model to replan with"
        state.stop_detail = (
            f"step {step.id!r} failed verification after {len(step.attempts)} attempt(s) "
            f"({why}): {verdict.summary}"
        )
        return {"decision": Decision.FINISH}


def _absent(attempt: Attempt, policy: Policy) -> bool:
    """An interrupted call (it may or may not have happened) is repeated only on evidence that
    its outcome is not there: checks that could still run, and failed."""
    verdict = attempt.verdict
    if verdict is None or policy.on_interrupted == OnInterrupted.FAIL:
        return False
    known = [check for check in verdict.checks if not check.unknown]
    return bool(known) and not all(check.passed for check in known)


_FIXED = {"recall": "meta", "atlas": "meta", "tetyana": "grisha", "grisha": "meta", "learn": END}
_BY_DECISION = {
    Decision.PLAN: "atlas",
    Decision.REPLAN: "atlas",
    Decision.EXECUTE: "tetyana",
    Decision.FINISH: "learn",
}


def route(state: RunState, last: str) -> str:
    """The graph's router: fixed edges, and the Meta-Planner's decision after ``meta``."""
    if last == "meta":
        return _BY_DECISION[state.decision] if state.decision else "atlas"
    return _FIXED[last]
