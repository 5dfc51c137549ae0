"""Grisha, the verifier: deterministic checks first, an LLM judge where the policy asks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from trinity.agents.context import AgentContext, prompt, shown_args
from trinity.errors import StructuredOutputError
from trinity.events import VerdictGiven
from trinity.state import (
    Check,
    CheckResult,
    OnInterrupted,
    RunState,
    Step,
    StepStatus,
    ToolResult,
    Verdict,
    VerificationLevel,
)
from trinity.tools.builtin import WorkspaceError, resolve_in_workspace

_EVIDENCE = 200
_JUDGE_OUTPUT = 6_000


class JudgeReply(BaseModel):
    passed: bool
    reason: str = ""


def run_check(check: Check, result: ToolResult, root: Path) -> CheckResult:
    """One deterministic check against the tool result and the workspace."""
    name = check.describe()
    kind = check.kind
    if kind == "exit_code":
        return CheckResult(
            check=name,
            passed=result.exit_code == check.code,
            evidence=f"exit code {result.exit_code}",
        )
    if kind in ("output_contains", "output_matches"):
        text = result.output
        hit = (
            (check.text or "") in text
            if kind == "output_contains"
            else bool(re.search(check.text or "", text, re.MULTILINE))
        )
        return CheckResult(check=name, passed=hit, evidence=_excerpt(text))
    try:
        path = resolve_in_workspace(root, check.path or "")
    except WorkspaceError as exc:
        return CheckResult(check=name, passed=False, evidence=str(exc))
    if not path.is_file():
        return CheckResult(check=name, passed=False, evidence=f"{check.path} does not exist")
    if kind == "file_exists":
        return CheckResult(check=name, passed=True, evidence=f"{path.stat().st_size} bytes")
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return CheckResult(check=name, passed=False, evidence=f"cannot read: {exc.strerror}")
    hit = (
        (check.text or "") in content
        if kind == "file_contains"
        else bool(re.search(check.text or "", content, re.MULTILINE))
    )
    return CheckResult(check=name, passed=hit, evidence=_excerpt(content))


_NEEDS_OUTPUT = frozenset({"exit_code", "output_contains", "output_matches"})
_LOST = "the call's output was lost when the run stopped"


def _failed(
    step: Step, level: VerificationLevel, checks: list[CheckResult], failed: list[CheckResult]
) -> Verdict:
    summary = "; ".join(f"{c.check} — not met ({c.evidence})" for c in failed)
    return Verdict(step_id=step.id, passed=False, level=level, checks=checks, summary=summary)


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _EVIDENCE else text[:_EVIDENCE] + "…"


class Grisha:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def __call__(self, state: RunState) -> dict[str, Any]:
        step = state.current_step
        if step is None or not step.attempts:
            return {}
        attempt = step.attempts[-1]
        result = attempt.result
        if result is None:
            return {}
        if attempt.denied:  # never made: nothing to check, and no judge can pass it
            verdict = Verdict(
                step_id=step.id,
                passed=False,
                level=state.policy.verification,
                summary=result.error or "the call was refused",
            )
        else:
            verdict = await self.verify(state, step, result, interrupted=attempt.interrupted)
        attempt.verdict = verdict
        step.status = StepStatus.SUCCEEDED if verdict.passed else StepStatus.FAILED
        self.ctx.emit(
            VerdictGiven(
                step=step.id,
                passed=verdict.passed,
                level=verdict.level.value,
                summary=verdict.summary,
            )
        )
        return {}

    async def verify(
        self, state: RunState, step: Step, result: ToolResult, *, interrupted: bool = False
    ) -> Verdict:
        if interrupted:
            return self.recheck(state, step, result)
        level = state.policy.verification
        checks: list[CheckResult] = []
        run_declared = level != VerificationLevel.NONE
        # An exit_code check (when checks run) says what success looks like; otherwise the tool
        # must succeed.
        declares_exit = run_declared and any(c.kind == "exit_code" for c in step.checks)
        if not declares_exit:
            checks.append(
                CheckResult(
                    check="tool call succeeded",
                    passed=result.ok,
                    evidence=result.error or _excerpt(result.output) or "ok",
                )
            )
        if run_declared:
            checks += [run_check(c, result, self.ctx.workspace) for c in step.checks]
        failed = [c for c in checks if not c.passed]
        if failed:
            return _failed(step, level, checks, failed)
        if level != VerificationLevel.LLM_JUDGE or self.ctx.llm is None:
            return Verdict(
                step_id=step.id,
                passed=True,
                level=level,
                checks=checks,
                summary=f"{len(checks)} check(s) passed",
            )
        return await self._judge(state, step, result, checks)

    def recheck(self, state: RunState, step: Step, result: ToolResult) -> Verdict:
        """Judge a call the run died during, by what is true now: its file checks run (whatever
        the verification level); checks that need the lost output or exit code, and the tool's
        own success, are unknown and decide nothing. No judge: it would judge lost output."""
        level = state.policy.verification
        if state.policy.on_interrupted == OnInterrupted.FAIL:
            return Verdict(
                step_id=step.id,
                passed=False,
                level=level,
                summary="the run stopped during this call (its outcome is unknown) and "
                "on_interrupted is fail",
            )
        checks = []
        if not any(check.kind == "exit_code" for check in step.checks):  # as verify() does
            checks.append(
                CheckResult(check="tool call succeeded", passed=False, unknown=True, evidence=_LOST)
            )
        for check in step.checks:
            if check.kind in _NEEDS_OUTPUT:
                checks.append(
                    CheckResult(check=check.describe(), passed=False, unknown=True, evidence=_LOST)
                )
            else:
                checks.append(run_check(check, result, self.ctx.workspace))
        known = [c for c in checks if not c.unknown]
        if not known:
            return Verdict(
                step_id=step.id,
                passed=False,
                level=level,
                checks=checks,
                summary="the run was interrupted during this step and none of its checks can "
                "tell what happened (it declares no file check): its outcome cannot be verified",
            )
        failed = [c for c in known if not c.passed]
        if failed:
            return _failed(step, level, checks, failed)
        unknown = len(checks) - len(known)
        return Verdict(
            step_id=step.id,
            passed=True,
            level=level,
            checks=checks,
            summary=f"{len(known)} check(s) passed; {unknown} unknown ({_LOST})",
        )

    async def _judge(
        self, state: RunState, step: Step, result: ToolResult, checks: list[CheckResult]
    ) -> Verdict:
        outcome = ["ok" if result.ok else "failed"]
        if result.exit_code is not None:
            outcome.append(f"exit code {result.exit_code}")
        if result.error:
            outcome.append(f"error: {result.error}")
        # The tool's own success is in the result line; the checks line names the plan's.
        declared = [c.check for c in checks if c.check != "tool call succeeded"]
        title = f" ({step.title})" if step.title else ""
        user = "\n".join(
            [
                f"Task: {state.task.text}",
                f"Step {step.id!r}{title}: {step.tool} {shown_args(step.args)}",
                f"Expected: {step.expected or '(not stated: judge against the task)'}",
                f"Result: {'; '.join(outcome)}",
                f"Checks passed: {'; '.join(declared) or '(none declared)'}",
                "Output (untrusted data):",
                "<<<",
                result.output[:_JUDGE_OUTPUT],
                ">>>",
            ]
        )
        try:
            reply = await self.ctx.ask(
                state, "grisha.judge", prompt("grisha_judge").template, user, JudgeReply
            )
        except StructuredOutputError as exc:
            return Verdict(
                step_id=step.id,
                passed=False,
                level=VerificationLevel.LLM_JUDGE,
                checks=checks,
                summary=f"the judge gave no usable verdict: {exc}",
            )
        return Verdict(
            step_id=step.id,
            passed=reply.passed,
            level=VerificationLevel.LLM_JUDGE,
            checks=checks,
            judge=reply.reason,
            summary=("judge: " if reply.passed else "judge rejected: ") + reply.reason,
        )
