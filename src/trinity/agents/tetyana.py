"""Tetyana, the executor: runs the current step through the tool interface.

With a permission policy (``AgentContext.permissions``) every call is checked first and the
decision audited: ``allow`` calls the tool, ``deny`` fails the attempt without calling it, and
``ask`` pauses the run (``StopReason.AWAITING_APPROVAL``) until a person's decision for this very
call is in the store; then the call is made (approve) or refused (deny), once.
"""

from __future__ import annotations

import time
from typing import Any

from trinity.agents.context import AgentContext
from trinity.engine import StopRun
from trinity.state import (
    Attempt,
    PendingApproval,
    RunState,
    Step,
    StepStatus,
    StopReason,
    ToolResult,
)
from trinity.tools.permissions import Action, audit_args

_PREVIEW = 300
POLICY_ACTOR = "policy"
"""The audit log's actor for decisions the policy made on its own."""


class Tetyana:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def __call__(self, state: RunState) -> dict[str, Any]:
        step = state.current_step
        if step is None:
            return {}
        number = len(step.attempts) + 1
        refusal = None
        if not state.interrupted and self.ctx.permissions is not None:
            refusal = self._permit(state, step, number)  # raises StopRun to wait for a person
        attempt = Attempt(number=number, started_at=time.time())
        step.attempts.append(attempt)
        step.status = StepStatus.RUNNING
        if refusal is not None:
            attempt.denied = True
            attempt.result = ToolResult(ok=False, error=refusal)
        elif state.interrupted:
            # The run died while this step's tool call was in flight: it may have acted. Do not
            # repeat it blindly; Grisha checks what is actually true now.
            attempt.interrupted = True
            attempt.result = ToolResult(
                ok=False, error="the run stopped during this call; its outcome is unknown"
            )
        else:
            self.ctx.emit(
                "tool_call",
                "tetyana",
                {"step": step.id, "tool": step.tool, "attempt": attempt.number},
            )
            state.counters.tool_calls += 1  # counted even if the deadline cuts the call
            # No timeout here: the provider applies each tool's own (a server's timeout_s,
            # else the tool timeout setting); the run deadline bounds everything anyway.
            attempt.result = await self.ctx.tools.call(step.tool, step.args)
        attempt.finished_at = time.time()
        result = attempt.result
        self.ctx.emit(
            "tool_result",
            "tetyana",
            {
                "step": step.id,
                "ok": result.ok,
                "exit_code": result.exit_code,
                "error": result.error,
                "output": result.output[:_PREVIEW],
                "seconds": round(result.duration_s, 4),
            },
        )
        return {}

    def _permit(self, state: RunState, step: Step, number: int) -> str | None:
        """Check the call against the policy: ``None`` to make it, a refusal to fail it, or
        :class:`StopRun` to wait for a person."""
        policy = self.ctx.permissions
        assert policy is not None
        decision = policy.check(step.tool, step.args, workspace=self.ctx.workspace)
        store, run_id = self.ctx.store, state.run_id
        revision = state.plan.revision if state.plan else 0

        def audit(what: str) -> None:
            store.add_audit(
                run_id,
                step.id,
                step.tool,
                audit_args(step.args),
                what,
                decision.rule,
                decision.reason,
                POLICY_ACTOR,
            )

        if decision.action == Action.ALLOW:
            audit("allow")
            return None
        if decision.action == Action.DENY:
            audit("deny")
            self.ctx.emit(
                "permission", "tetyana", {"step": step.id, "tool": step.tool, "action": "deny"}
            )
            return f"denied by policy: {decision.reason}"
        answer = store.get_approval(run_id, step.id, number, revision=revision)
        if answer is None:
            audit("ask")
            state.pending_approval = PendingApproval(
                step_id=step.id,
                attempt=number,
                revision=revision,
                tool=step.tool,
                args=step.args,
                rule=decision.rule,
                reason=decision.reason,
            )
            self.ctx.emit(
                "approval_requested",
                "tetyana",
                {
                    "step": step.id,
                    "tool": step.tool,
                    "rule": decision.rule,
                    "reason": decision.reason,
                },
            )
            # Nothing was called: a resumed run must not take this for an interrupted call.
            state.in_flight = None
            raise StopRun(
                StopReason.AWAITING_APPROVAL,
                f"step {step.id!r} ({step.tool}) waits for a person's approval: {decision.reason}",
            )
        state.pending_approval = None  # this decision covers this one call only
        self.ctx.emit(
            "permission",
            "tetyana",
            {
                "step": step.id,
                "tool": step.tool,
                "action": answer["decision"],
                "by": answer["actor"],
            },
        )
        if answer["decision"] == "approve":
            return None
        note = f": {answer['note']}" if answer["note"] else ""
        return f"denied by {answer['actor']}{note}"
