"""Tetyana, the executor: runs the current step through the tool interface."""

from __future__ import annotations

import time
from typing import Any

from trinity.agents.context import AgentContext
from trinity.state import Attempt, RunState, StepStatus, ToolResult

_PREVIEW = 300


class Tetyana:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def __call__(self, state: RunState) -> dict[str, Any]:
        step = state.current_step
        if step is None:
            return {}
        attempt = Attempt(number=len(step.attempts) + 1, started_at=time.time())
        step.attempts.append(attempt)
        step.status = StepStatus.RUNNING
        if state.interrupted:
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
            attempt.result = await self.ctx.tools.call(
                step.tool, step.args, timeout_s=self.ctx.settings.tool_timeout_s
            )
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
