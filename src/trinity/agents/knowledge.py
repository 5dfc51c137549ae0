"""Knowledge, the learner: hands relevant lessons to a run, stores lessons when it ends."""

from __future__ import annotations

from typing import Any

from trinity.agents.context import AgentContext
from trinity.events import EventSink, LessonsRecalled, LessonsStored
from trinity.state import Lesson, RunState, StepStatus, StopReason
from trinity.store import Store

RECALL_LIMIT = 5


class Knowledge:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def recall(self, state: RunState) -> dict[str, Any]:
        lessons = self.ctx.store.search_lessons(state.task.text, limit=RECALL_LIMIT)
        self.ctx.emit(LessonsRecalled(count=len(lessons)))
        return {"lessons_used": lessons}

    async def learn(self, state: RunState) -> dict[str, Any]:
        return {"lessons_stored": await store_lessons(state, self.ctx.store, self.ctx.emit)}


async def store_lessons(state: RunState, store: Store, emit: EventSink) -> int:
    """Draw a run's lessons, store them, and say how many."""
    lessons = derive_lessons(state)
    await store.add_lessons(lessons)
    emit(LessonsStored(count=len(lessons)))
    return len(lessons)


MAX_LESSON_CHARS = 2000
_NOT_ENDED = frozenset({StopReason.CANCELLED, StopReason.ERROR, StopReason.AWAITING_APPROVAL})


def derive_lessons(state: RunState) -> list[Lesson]:
    """What worked, what failed and why — from the run's own record, without an LLM.

    A run that was cancelled, stopped by an error, or waits for an approval yields none: it
    has not ended, and can be resumed (its lessons are drawn when it really ends)."""
    lessons: list[Lesson] = []
    if state.stop_reason in _NOT_ENDED:
        return lessons

    def lesson(outcome: str, text: str, tags: list[str]) -> None:
        lessons.append(
            Lesson(
                run_id=state.run_id,
                task=state.task.text,
                outcome=outcome,
                text=text[:MAX_LESSON_CHARS],
                tags=tags,
            )
        )

    succeeded = state.stop_reason == StopReason.COMPLETED
    plan = state.plan
    tools = sorted({s.tool for s in plan.steps}) if plan else []
    if succeeded and plan is not None:
        sequence = " -> ".join(f"{s.tool}({s.id})" for s in plan.steps)
        lesson("success", f"A plan that worked: {sequence}.", tools)
    for old in state.plan_history:
        old_ids = {x.id for x in old.steps}
        for step in old.steps:
            if step.status != StepStatus.FAILED or not step.attempts:
                continue
            verdict = step.attempts[-1].verdict
            why = verdict.summary if verdict else "no verdict"
            fix = ""
            if succeeded and plan is not None:
                new_steps = [s for s in plan.steps if s.id not in old_ids]
                fix = " Replanned with: " + ", ".join(f"{s.tool} {s.args}" for s in new_steps)
            lesson(
                "failure",
                f"Step {step.id!r} ({step.tool} {step.args}) failed: {why}.{fix}",
                [step.tool],
            )
    if not succeeded:
        reason = state.stop_reason.value if state.stop_reason else "unknown"
        lesson("failure", f"Run stopped ({reason}): {state.stop_detail}", tools)
    return lessons
