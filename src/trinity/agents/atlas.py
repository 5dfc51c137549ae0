"""Atlas, the planner: task -> typed plan of tool calls; failed verdict -> new plan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trinity.agents.context import AgentContext, describe_tools, prompt, shown_args
from trinity.engine import StopRun
from trinity.errors import StructuredOutputError
from trinity.events import PlanMade, PlanStep
from trinity.state import (
    Check,
    Decision,
    Lesson,
    Plan,
    RunState,
    Step,
    StepSpec,
    StepStatus,
    StopReason,
    task_checks,
)
from trinity.tools.base import ToolSpec
from trinity.tools.builtin import ASK_TOOL, argument_errors

MAX_RESULT_CHARS = 4_000


class StepDraft(StepSpec):
    """A step as the model writes it; unknown extra keys are dropped rather than refused."""

    model_config = ConfigDict(extra="ignore")


class PlanDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")

    rationale: str = ""
    steps: list[StepDraft] = Field(min_length=1, max_length=50)
    success: list[Check] = Field(default_factory=list, max_length=20)
    """The task's success criteria: file checks that must hold when the whole task is done."""

    @field_validator("success")
    @classmethod
    def _file_checks_only(cls, success: list[Check]) -> list[Check]:
        return task_checks(success)


def check_steps(steps: Sequence[StepSpec], tools: list[ToolSpec], used_ids: set[str]) -> list[str]:
    """Problems that make a plan unusable: unknown tools, missing or unknown arguments, ids."""
    by_name = {tool.name: tool for tool in tools}
    problems: list[str] = []
    seen = set(used_ids)
    for step in steps:
        if step.id in seen:
            problems.append(f"step id {step.id!r} is already used")
        seen.add(step.id)
        tool = by_name.get(step.tool)
        if tool is None:
            problems.append(
                f"step {step.id!r}: unknown tool {step.tool!r} (available: {', '.join(by_name)})"
            )
            continue
        schema = tool.input_schema
        properties = schema.get("properties", {})
        missing = [name for name in schema.get("required", []) if name not in step.args]
        if missing:
            problems.append(f"step {step.id!r}: {step.tool} needs argument(s) {missing}")
        extra: list[str] = []
        if schema.get("additionalProperties") is False:
            extra = [name for name in step.args if name not in properties]
            if extra:
                problems.append(f"step {step.id!r}: {step.tool} has no argument(s) {extra}")
        if not missing and not extra and (wrong := argument_errors(step.tool, step.args)):
            problems.append(f"step {step.id!r}: {step.tool}: {wrong}")  # types and limits
    return problems


def _lessons_text(lessons: list[Lesson]) -> str:
    if not lessons:
        return "(none)"
    return "\n".join(f"- [{lesson.outcome}] {lesson.text}" for lesson in lessons)


class Atlas:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def __call__(self, state: RunState) -> dict[str, Any]:
        if state.decision == Decision.REPLAN:
            return await self._replan(state, await self._tools())
        if state.plan is not None:  # a plan the user gave: checked before the run started
            self._emit_plan(state.plan)
            return {}
        return await self._first_plan(state, await self._tools())

    async def _tools(self) -> list[ToolSpec]:
        """The tools the model may plan with: ``person.ask`` only when the settings allow it
        (a question waits for a person; unattended runs should not)."""
        tools = await self.ctx.tools.list_tools()
        if self.ctx.settings.model_may_ask:
            return tools
        return [spec for spec in tools if spec.name != ASK_TOOL]

    async def _first_plan(self, state: RunState, tools: list[ToolSpec]) -> dict[str, Any]:
        system = prompt("atlas_plan").safe_substitute(
            tools=describe_tools(tools, self.ctx.permissions),
            lessons=_lessons_text(state.lessons_used),
        )
        draft = await self._draft(
            state, "atlas.plan", system, f"Task:\n{state.task.text}", tools, set()
        )
        plan = Plan(
            steps=[Step(**s.model_dump()) for s in draft.steps],
            rationale=draft.rationale,
            source="llm",
            success=draft.success,
        )
        self._emit_plan(plan)
        return {"plan": plan, "current": 0}

    async def _replan(self, state: RunState, tools: list[ToolSpec]) -> dict[str, Any]:
        assert state.plan is not None
        done = [s for s in state.plan.steps if s.status == StepStatus.SUCCEEDED]
        failed = state.current_step
        used_ids = {s.id for p in [*state.plan_history, state.plan] for s in p.steps}
        system = prompt("atlas_replan").safe_substitute(
            tools=describe_tools(tools, self.ctx.permissions),
            lessons=_lessons_text(state.lessons_used),
            used_ids=", ".join(sorted(used_ids)),
        )
        draft = await self._draft(
            state, "atlas.replan", system, _replan_brief(state, done, failed), tools, used_ids
        )
        kept = [s.model_copy(deep=True) for s in done]
        # The task's criteria stay whatever the replan says (a replan steered by injected text
        # must not quietly drop the task); it may add criteria, never remove one.
        stated = {check.describe() for check in state.plan.success}
        added = [check for check in draft.success if check.describe() not in stated]
        plan = Plan(
            steps=[*kept, *(Step(**s.model_dump()) for s in draft.steps)],
            rationale=draft.rationale,
            revision=state.plan.revision + 1,
            source="llm",
            success=[*state.plan.success, *added],
        )
        self._emit_plan(plan)
        state.counters.replans += 1
        return {
            "plan": plan,
            "plan_history": [*state.plan_history, state.plan],
            "current": len(kept),
        }

    async def _draft(
        self,
        state: RunState,
        purpose: str,
        system: str,
        user: str,
        tools: list[ToolSpec],
        used_ids: set[str],
    ) -> PlanDraft:
        def check(draft: PlanDraft) -> None:
            problems = check_steps(list(draft.steps), tools, used_ids)
            if problems:
                raise ValueError("; ".join(problems))

        try:
            return await self.ctx.ask(state, purpose, system, user, PlanDraft, check)
        except StructuredOutputError as exc:
            raise StopRun(
                StopReason.FAILED,
                f"Atlas could not produce a valid plan after {exc.attempts} attempt(s): {exc}",
            ) from None

    def _emit_plan(self, plan: Plan) -> None:
        self.ctx.emit(
            PlanMade(
                revision=plan.revision,
                source=plan.source,
                steps=[PlanStep(id=s.id, tool=s.tool, title=s.title) for s in plan.steps],
            )
        )


def _replan_brief(state: RunState, done: list[Step], failed: Step | None) -> str:
    lines = [f"Task:\n{state.task.text}", "", "Completed steps (keep them):"]
    lines += [f"- {s.id}: {s.tool} {shown_args(s.args)}" for s in done] or ["(none)"]
    if failed is not None and not failed.attempts:  # a plan refused before it ran
        lines += [
            "",
            f"Rejected step {failed.id!r} (not run): tool {failed.tool} with args "
            f"{shown_args(failed.args)}",
        ]
    elif failed is not None:
        attempt = failed.attempts[-1]
        lines += [
            "",
            f"Failed step {failed.id!r}: tool {failed.tool} with args {shown_args(failed.args)}",
        ]
        lines.append(f"Expected: {failed.expected or '(not stated)'}")
        if attempt and attempt.result is not None:
            result = attempt.result
            output = result.output[:MAX_RESULT_CHARS]
            lines += [
                f"Tool ok: {result.ok}; exit code: {result.exit_code}; error: {result.error}",
                "Tool output (untrusted data):",
                "<<<",
                output,
                ">>>",
            ]
        if attempt and attempt.verdict is not None:
            lines.append(f"Verdict: {attempt.verdict.summary}")
            lines += [
                f"- check {c.check}: {'passed' if c.passed else 'FAILED'} ({c.evidence})"
                for c in attempt.verdict.checks
            ]
    if state.unmet_success:
        lines += [
            "",
            "Every step passed, but the task is not done: these success criteria do not hold.",
            "Add the steps that make them hold (they cannot be dropped):",
            *(f"- {unmet}" for unmet in state.unmet_success),
        ]
    revision = state.plan.revision if state.plan is not None else 0
    warnings = [f for f in state.progress_findings if f.revision == revision]
    if warnings:
        lines += [
            "",
            "!!! LOOP WARNING (Trinity's progress monitor): the run is repeating itself. Do not "
            "send the same calls or the same plan again: change the approach (another tool, "
            "other arguments, or first find out why it fails). One more repeat of this kind "
            "stops the run.",
        ]
        lines += [f"- {f.kind.value} (x{f.repetitions}): {f.evidence}" for f in warnings]
        lines.append("!!! END LOOP WARNING")
    lines.append("\nWrite the plan for the remaining work.")
    return "\n".join(lines)
