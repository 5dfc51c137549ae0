"""Tetyana, the executor: runs the current step through the tool interface.

With a permission policy (``AgentContext.permissions``) every call is checked first and the
decision audited (on disk before the call is made): ``allow`` calls the tool, ``deny`` fails the
attempt without calling it, and ``ask`` pauses the run (``StopReason.AWAITING_APPROVAL``) until a
person's decision for this very call is in the store; then the call is made (approve) or
refused (deny), once.

After a crash during a call (``state.interrupted``), the call may or may not have happened. The
lost attempt is recorded as interrupted, and ``Policy.on_interrupted`` says what follows: make
the call again (``rerun``, or ``recheck`` / ``ask`` for a tool whose calls are idempotent), let
Grisha judge the step by what is true now (``recheck``), ask a person (``ask``), or fail it
(``fail``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from trinity.agents.context import AgentContext
from trinity.engine import StopRun
from trinity.events import (
    ApprovalRequested,
    InterruptedCall,
    PermissionApplied,
    ToolCalled,
    ToolReturned,
)
from trinity.security.secrets import redact_result
from trinity.state import (
    Attempt,
    OnInterrupted,
    PendingApproval,
    RunState,
    Step,
    StepStatus,
    StopReason,
    ToolResult,
)
from trinity.tools.builtin import ASK_TOOL
from trinity.tools.permissions import Action, audit_args

_PREVIEW = 300
POLICY_ACTOR = "policy"
"""The audit log's actor for decisions the policy made on its own."""
LOST = "the run stopped during this call; its outcome is unknown"


class Tetyana:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def __call__(self, state: RunState) -> dict[str, Any]:
        step = state.current_step
        if step is None:
            return {}
        if state.interrupted:
            await self._after_crash(state, step)
            return {}
        pending = state.pending_approval
        if pending is not None and pending.question == "rerun" and pending.step_id == step.id:
            await self._rerun_decided(state, step, pending)
            return {}
        number = len(step.attempts) + 1
        if step.tool == ASK_TOOL:  # a person answers it, not a tool
            await self._ask_person(state, step, number)
            return {}
        refusal = None
        if self.ctx.permissions is not None:
            refusal = await self._permit(state, step, number)  # StopRun to wait for a person
        await self._call(state, step, number, refusal)
        return {}

    async def _call(
        self,
        state: RunState,
        step: Step,
        number: int,
        refusal: str | None,
        answered: ToolResult | None = None,
    ) -> None:
        """Make attempt ``number`` (or record it as refused, or as ``answered`` by a person)."""
        attempt = Attempt(number=number, started_at=time.time())
        step.attempts.append(attempt)
        step.status = StepStatus.RUNNING
        if refusal is not None:
            attempt.denied = True
            attempt.result = ToolResult(ok=False, error=refusal)
        elif answered is not None:
            self.ctx.emit(ToolCalled(step=step.id, tool=step.tool, attempt=number))
            attempt.result = redact_result(answered)
            attempt.denied = not answered.ok  # declined: asking again gets the same no
        else:
            self.ctx.emit(ToolCalled(step=step.id, tool=step.tool, attempt=number))
            state.counters.tool_calls += 1  # counted even if the deadline cuts the call
            # No timeout here: the provider applies each tool's own (a server's timeout_s,
            # else the tool timeout setting); the run deadline bounds everything anyway.
            attempt.result = redact_result(await self.ctx.tools.call(step.tool, step.args))
        attempt.finished_at = time.time()
        result = attempt.result
        self.ctx.emit(
            ToolReturned(
                step=step.id,
                ok=result.ok,
                exit_code=result.exit_code,
                error=result.error,
                output=result.output[:_PREVIEW],
                seconds=round(result.duration_s, 4),
            )
        )

    # -- after a crash -------------------------------------------------------------------------

    async def _after_crash(self, state: RunState, step: Step) -> None:
        last = step.attempts[-1] if step.attempts else None
        if last is not None and last.result is None and last.verdict is None:
            lost = last  # cut off by a cancel or a deadline: journaled, with no result
        else:  # a crash: the attempt never reached the journal, nor did its count
            lost = Attempt(number=len(step.attempts) + 1, started_at=time.time())
            step.attempts.append(lost)
            state.counters.tool_calls += 1
        number = lost.number
        action = await self._interrupted_action(state, step)
        self.ctx.emit(
            InterruptedCall(step=step.id, tool=step.tool, attempt=number, action=action.value)
        )
        lost.interrupted = True
        lost.finished_at = lost.finished_at or time.time()
        lost.result = ToolResult(ok=False, error=LOST)
        step.status = StepStatus.RUNNING
        state.interrupted = False
        if action == OnInterrupted.RERUN:
            await self._call(state, step, number + 1, None)
        elif action == OnInterrupted.ASK:
            self._ask(
                state,
                PendingApproval(
                    step_id=step.id,
                    attempt=number + 1,
                    revision=state.plan.revision if state.plan else 0,
                    tool=step.tool,
                    args=step.args,
                    reason="the run stopped during this call, which may or may not have happened: "
                    "approve to make it again, deny to judge the step by its checks",
                    question="rerun",
                ),
            )
        # recheck and fail: Grisha judges the interrupted attempt

    async def _interrupted_action(self, state: RunState, step: Step) -> OnInterrupted:
        policy = state.policy.on_interrupted
        if policy in (OnInterrupted.FAIL, OnInterrupted.RERUN):
            return policy
        await self.ctx.tools.list_tools()  # servers listed: their tools' hints are known
        if self.ctx.repeatable(step):
            return OnInterrupted.RERUN  # making it again changes nothing more
        return policy

    async def _rerun_decided(self, state: RunState, step: Step, pending: PendingApproval) -> None:
        """A person answered whether to make an interrupted call again."""
        answer = await self._decision(state, step, pending)  # resumed without one: ask again
        if answer["decision"] == "approve":
            await self._call(state, step, pending.attempt, None)
        # denied: Grisha judges the interrupted attempt by its checks

    # -- a question for a person ---------------------------------------------------------------

    async def _ask_person(self, state: RunState, step: Step, number: int) -> None:
        """A ``person.ask`` step: the answer in the store is its output; without one, the run
        waits for it (``Runtime.answer``; ``Runtime.deny`` declines, failing the attempt)."""
        question = str(step.args.get("question", ""))
        pending = PendingApproval(
            step_id=step.id,
            attempt=number,
            revision=state.plan.revision if state.plan else 0,
            tool=step.tool,
            args=step.args,
            reason=question,
            question="input",
        )
        answer = await self._decision(state, step, pending)
        if answer["decision"] == "answer":
            result = ToolResult(ok=True, output=answer["note"] or "")
        else:
            note = f": {answer['note']}" if answer["note"] else ""
            result = ToolResult(ok=False, error=f"declined by {answer['actor']}{note}")
        await self._call(state, step, number, None, answered=result)

    # -- permissions ---------------------------------------------------------------------------

    async def _permit(self, state: RunState, step: Step, number: int) -> str | None:
        """Check the call against the policy: ``None`` to make it, a refusal to fail it, or
        :class:`StopRun` to wait for a person."""
        policy = self.ctx.permissions
        assert policy is not None
        spec = self.ctx.spec(step.tool)
        decision = policy.check(
            step.tool,
            step.args,
            workspace=self.ctx.workspace,
            schema=spec.input_schema if spec is not None else None,
        )
        revision = state.plan.revision if state.plan else 0

        async def audit(what: str) -> None:
            landed = self.ctx.store.add_audit(
                state.run_id,
                step.id,
                step.tool,
                audit_args(step.args),
                what,
                decision.rule,
                decision.reason,
                POLICY_ACTOR,
            )
            if landed is not None:
                await landed

        if decision.action == Action.ALLOW:
            await audit("allow")  # on disk before the call it allows
            return None
        if decision.action == Action.DENY:
            await audit("deny")
            self.ctx.emit(PermissionApplied(step=step.id, tool=step.tool, action="deny"))
            return f"denied by policy: {decision.reason}"
        pending = PendingApproval(
            step_id=step.id,
            attempt=number,
            revision=revision,
            tool=step.tool,
            args=step.args,
            rule=decision.rule,
            reason=decision.reason,
        )
        answer = await self._decision(state, step, pending, on_ask=lambda: audit("ask"))
        if answer["decision"] == "approve":
            return None
        note = f": {answer['note']}" if answer["note"] else ""
        return f"denied by {answer['actor']}{note}"

    async def _decision(
        self,
        state: RunState,
        step: Step,
        pending: PendingApproval,
        *,
        on_ask: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """A person's decision on ``pending`` (a call, a re-run, a question), told as an event;
        without one in the store the run waits for it (``on_ask`` first: the ask's audit row).
        The decision covers this one call only."""
        answer = self._answer(state, pending)
        if answer is None:
            if on_ask is not None:
                await on_ask()
            self._ask(state, pending)
        state.pending_approval = None
        self.ctx.emit(
            PermissionApplied(
                step=step.id,
                tool=step.tool,
                action=answer["decision"],
                by=answer["actor"],
                question=pending.question,
            )
        )
        return answer

    def _answer(self, state: RunState, pending: PendingApproval) -> dict[str, Any] | None:
        return self.ctx.store.get_approval(
            state.run_id, pending.step_id, pending.attempt, revision=pending.revision
        )

    def _ask(self, state: RunState, pending: PendingApproval) -> NoReturn:
        """Stop the run until a person decides ``pending``."""
        state.pending_approval = pending
        self.ctx.emit(
            ApprovalRequested(
                step=pending.step_id,
                tool=pending.tool,
                rule=pending.rule,
                reason=pending.reason,
                question=pending.question,
            )
        )
        # Nothing was called: a resumed run must not take this for an interrupted call.
        state.in_flight = None
        what = {
            "permission": "a person's approval",
            "rerun": "a person's word",
            "input": "a person's answer",
        }[pending.question]
        raise StopRun(
            StopReason.AWAITING_APPROVAL,
            f"step {pending.step_id!r} ({pending.tool}) waits for {what}: {pending.reason}",
        )
