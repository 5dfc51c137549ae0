"""The short report every run ends with: what happened, and for a stopped run what to try."""

from __future__ import annotations

import json

from trinity.state import RunState, StepStatus, StopReason

_ADVICE = {
    StopReason.FAILED: "Read the failing step's evidence above; fix the plan or the tool, or give "
    "the task more detail. With a model, --max-replans gives Atlas more tries.",
    StopReason.DEADLINE: "Raise the deadline (--timeout / TRINITY_TIMEOUT_S) or find the slow step "
    "in `trinity runs trace ID`.",
    StopReason.STEP_BUDGET: "Raise the step budget (--max-steps / TRINITY_MAX_STEPS), or split the "
    "task.",
    StopReason.TOKEN_BUDGET: "Raise the token budget or use a smaller plan.",
    StopReason.CANCELLED: "The run was cancelled; `trinity runs resume ID` continues it.",
    StopReason.AWAITING_APPROVAL: "A person decides: `trinity runs approve ID` makes the call and "
    "continues the run; `trinity runs deny ID` refuses it (the step fails). Add --note to say why.",
    StopReason.LOOP: "The run kept repeating itself (the evidence above names what), even after "
    "Atlas was told to change approach. Fix the cause by hand (a missing file, tool or "
    "permission), give the task more detail, or try a stronger model.",
    StopReason.STALLED: "No step was newly verified for a long stretch, twice. Split the task "
    "into smaller steps with clear checks, or give it more detail; a larger stall window "
    "(policy stall_steps) only helps when progress is slow rather than absent.",
    StopReason.ERROR: "A service failed for good (the reason is above) or a bug: "
    "`trinity runs trace ID --json` has the details and any traceback.",
}


def render_report(state: RunState) -> str:
    reason = state.stop_reason
    elapsed = (state.finished_at or state.started_at) - state.started_at
    head = (
        f"Run {state.run_id} {reason.value if reason else 'running'} after {state.step} steps "
        f"in {elapsed:.2f}s: {state.stop_detail or '-'}"
    )
    lines = [head]
    usage, counters = state.usage, state.counters
    lines.append(
        f"Tool calls {counters.tool_calls}, retries {counters.retries}, replans "
        f"{counters.replans}, LLM calls {usage.llm_calls}, tokens {usage.total_tokens}."
    )
    if reason is None or reason == StopReason.COMPLETED:
        return "\n".join(lines)
    if state.plan is not None:
        tried = [s for s in state.plan.steps if s.status != StepStatus.PENDING][-3:]
        for step in tried:
            verdict = step.attempts[-1].verdict if step.attempts else None
            lines.append(
                f"- step {step.id} ({step.tool}): {step.status.value}"
                + (f" — {verdict.summary}" if verdict else "")
            )
    advice = _ADVICE[reason]
    pending = state.pending_approval
    if reason == StopReason.AWAITING_APPROVAL and pending is not None:
        args = json.dumps(pending.args, ensure_ascii=False, default=str)
        rule = f"rule {pending.rule}" if pending.rule is not None else "the default"
        lines.append(
            f"- waiting: step {pending.step_id} ({pending.tool} {args[:300]}) — {rule}: "
            f"{pending.reason}"
        )
        advice = advice.replace(" ID", f" {state.run_id}")
    lines.append(f"What to try: {advice}")
    return "\n".join(lines)
