"""The short report every run ends with: what happened, and for a stopped run why it stopped,
its last steps, the evidence (repeated actions, budgets used) and what to try.

The runtime stores it with the run (``runs.report``); the CLI prints it after every run and in
``trinity runs show``."""

from __future__ import annotations

import json

from trinity.state import RunState, Step, StepStatus, StopReason

_ADVICE = {
    StopReason.FAILED: "Read the failing step's evidence above; fix the plan or the tool, or give "
    "the task more detail. With a model, --max-replans gives Atlas more tries.",
    StopReason.DEADLINE: "Raise the deadline (--timeout / TRINITY_TIMEOUT_S) or find the slow step "
    "in `trinity runs trace ID`.",
    StopReason.STEP_BUDGET: "Raise the step budget (--max-steps / TRINITY_MAX_STEPS), or split the "
    "task.",
    StopReason.TOKEN_BUDGET: "Raise the token budget (--token-budget / TRINITY_TOKEN_BUDGET), "
    "give the task more detail so fewer replans are needed, or use a smaller plan.",
    StopReason.COST_BUDGET: "Raise the cost budget (--cost-budget / TRINITY_COST_BUDGET_USD), use "
    "a cheaper model, or give the task more detail so fewer LLM calls are needed. Check the "
    "model's price (the prices setting) if the cost looks wrong.",
    StopReason.TIMEOUT: "One agent's turn took longer than the node timeout: raise it "
    "(--node-timeout / TRINITY_NODE_TIMEOUT_S), or find the slow tool or LLM call in "
    "`trinity runs trace ID` and give it its own, shorter timeout (--tool-timeout, "
    "--llm-timeout) so the run can retry or replan instead.",
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
    lines = [head, _usage_line(state, elapsed)]
    if reason is None or reason == StopReason.COMPLETED:
        return "\n".join(lines)
    evidence = [
        f"- {finding.kind.value} x{finding.repetitions} (step {finding.at_step}): "
        f"{_clip(finding.evidence, 300)}"
        for finding in state.progress_findings[-3:]
    ]
    slowest = _slowest_node(state)
    if reason in (StopReason.DEADLINE, StopReason.TIMEOUT) and slowest:
        evidence.append(f"- time went mostly to {slowest}")
    if evidence:
        lines += ["Evidence:", *evidence]
    # From every plan, not only the current one: a run stopped at the review of a new plan
    # has tried nothing of it, and the cause is in the plan before (a judge's rejection…).
    plans = [*state.plan_history, *([state.plan] if state.plan is not None else [])]
    tried = [
        (plan.revision, step)
        for plan in plans
        for step in plan.steps
        if step.status != StepStatus.PENDING
    ][-3:]
    if tried:
        lines.append("Last steps:")
    for revision, step in tried:
        label = f" [replan #{revision}]" if revision else ""
        lines.append(f"- {_describe_step(step)}{label}")
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


def _usage_line(state: RunState, elapsed: float) -> str:
    """What the run used, against its limits where it has them."""
    policy, usage, counters = state.policy, state.usage, state.counters

    def of(used: str, limit: object) -> str:
        return used if limit is None else f"{used}/{limit}"

    parts = [
        f"steps {of(str(state.step), policy.max_steps)}",
        f"time {of(f'{elapsed:.2f}s', f'{policy.timeout_s:g}s')}",
        f"tool calls {counters.tool_calls}",
        f"retries {counters.retries}",
        f"replans {of(str(counters.replans), policy.max_replans)}",
        f"LLM calls {usage.llm_calls}",
        f"tokens {of(str(usage.total_tokens), policy.token_budget)}"
        + (f" ({usage.estimated_calls} call(s) estimated)" if usage.estimated_calls else ""),
    ]
    if (usage.llm_calls and usage.priced) or policy.cost_budget_usd is not None:
        cost = f"${usage.cost_usd:.4f}" + ("" if usage.priced else " (model unpriced)")
        budget = None if policy.cost_budget_usd is None else f"${policy.cost_budget_usd:g}"
        parts.append(f"cost {of(cost, budget)}")
    return "Used: " + ", ".join(parts) + "."


def _describe_step(step: Step) -> str:
    text = f"step {step.id} ({step.tool}): {step.status.value}"
    if not step.attempts:
        return text
    last = step.attempts[-1]
    text += f" after {len(step.attempts)} attempt(s)"
    if last.verdict is not None and last.verdict.summary:
        return f"{text} — {_clip(last.verdict.summary, 200)}"
    if last.result is not None and last.result.error:
        return f"{text} — {_clip(last.result.error, 200)}"
    if last.result is None:
        return f"{text} — cut off during the call"
    return text


def _slowest_node(state: RunState) -> str | None:
    if not state.node_seconds:
        return None
    node, seconds = max(state.node_seconds.items(), key=lambda item: item[1])
    return f"node {node!r} ({seconds:.2f}s in total)"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
