"""Typed run state. Data only: every field is JSON-serialisable, so a checkpoint is one document.

The engine owns the fields of :class:`EngineState` (step counter, next node, stop reason); the
agents own the rest of :class:`RunState`.
"""

from __future__ import annotations

import re
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trinity.limits import RunLimits, renamed
from trinity.security.inputs import MAX_DEPTH, depth_of


class StopReason(StrEnum):
    """Why a run ended. Every run that ends has exactly one."""

    COMPLETED = "completed"
    """Every step was executed and verified."""
    FAILED = "failed"
    """A step could not be made to pass within the retry/replan policy."""
    DEADLINE = "deadline"
    """The run's wall-clock deadline passed."""
    STEP_BUDGET = "step_budget"
    """The run used its budget of graph steps."""
    TOKEN_BUDGET = "token_budget"
    """The run used its budget of LLM tokens."""
    COST_BUDGET = "cost_budget"
    """The run's LLM calls cost more than its budget (``Policy.cost_budget_usd``)."""
    TIMEOUT = "timeout"
    """One node (an agent's turn) took longer than ``Policy.node_timeout_s``."""
    CANCELLED = "cancelled"
    """Somebody cancelled the run."""
    AWAITING_APPROVAL = "awaiting_approval"
    """The permission policy says a person must approve the next tool call
    (``RunState.pending_approval``); ``Runtime.approve`` / ``deny`` continue the run."""
    ERROR = "error"
    """An unexpected error (a bug, or a service that failed for good)."""
    LOOP = "loop"
    """The run repeated itself (same action and result, same error, A-B-A-B, or an identical
    plan) again after the Meta-Planner had already changed strategy once."""
    STALLED = "stalled"
    """No step was newly verified for ``Policy.stall_steps`` graph steps, twice."""


class RunStatus(StrEnum):
    RUNNING = "running"
    """Going, or its process died before it could record an end (``runs resume`` continues
    it; ``runs list`` shows it as ``interrupted`` once no live process holds its lease)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Stopped by Ctrl-C, SIGTERM / SIGHUP or ``runs cancel``: ``runs resume`` continues it."""
    AWAITING_APPROVAL = "awaiting_approval"


class VerificationLevel(StrEnum):
    NONE = "none"
    """Trust the tool: a step passes when its tool call succeeds."""
    CHECKS = "checks"
    """Deterministic checks declared in the plan (plus tool success)."""
    LLM_JUDGE = "llm-judge"
    """Deterministic checks first, then an LLM judge compares result and expected outcome."""


class OnInterrupted(StrEnum):
    """What a resumed run does about a tool call that was in flight when its process died: the
    call may or may not have happened."""

    RECHECK = "recheck"
    """Re-run it if the tool is idempotent (repeating it changes nothing more); otherwise judge
    it by the checks that can still run (file checks: what is true now). Checks that need the
    lost output or exit code are reported as unknown."""
    RERUN = "rerun"
    """Make the call again, whatever it does (accepts a possible duplicate)."""
    ASK = "ask"
    """Re-run an idempotent tool; for any other, ask a person (``runs approve`` re-runs it,
    ``runs deny`` judges it by its checks)."""
    FAIL = "fail"
    """The attempt fails (the Meta-Planner may then replan)."""


class FailureAction(StrEnum):
    RETRY = "retry"
    """Run the same step again (transient failures), then replan."""
    REPLAN = "replan"
    """Ask Atlas for a new plan from the failure straight away."""


class Decision(StrEnum):
    """What the Meta-Planner wants next."""

    PLAN = "plan"
    EXECUTE = "execute"
    REPLAN = "replan"
    FINISH = "finish"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


CheckKind = Literal[
    "file_exists", "file_contains", "file_matches", "exit_code", "output_contains", "output_matches"
]
_CHECK_KINDS: tuple[str, ...] = CheckKind.__args__  # type: ignore[attr-defined]


class Check(BaseModel):
    """A deterministic check Grisha runs after a step.

    Plan files may use the short form ``{file_exists: out.txt}``, ``{exit_code: 0}``,
    ``{output_contains: "ok"}``, ``{file_contains: {path: out.txt, text: hello}}``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: CheckKind
    path: str | None = None
    """File checked, relative to the workspace (file_* checks)."""
    text: str | None = None
    """Substring (``*_contains``) or regular expression (``*_matches``)."""
    code: int | None = None
    """Expected exit code (``exit_code``)."""

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "kind" in data or len(data) != 1:
            return data
        ((kind, value),) = data.items()
        if kind not in _CHECK_KINDS:
            if kind in cls.model_fields:
                return data  # a long form missing its kind: validation says so
            raise ValueError(
                f"unknown check kind {kind!r}; expected one of {', '.join(_CHECK_KINDS)}"
            )
        if isinstance(value, dict):
            value = dict(value)
            if "pattern" in value and "text" not in value:
                value["text"] = value.pop("pattern")
            return {"kind": kind, **value}
        if kind == "file_exists":
            return {"kind": kind, "path": value}
        if kind == "exit_code":
            return {"kind": kind, "code": value}
        return {"kind": kind, "text": value}

    @model_validator(mode="after")
    def _complete(self) -> Check:
        needs = {
            "file_exists": ("path",),
            "file_contains": ("path", "text"),
            "file_matches": ("path", "text"),
            "exit_code": ("code",),
            "output_contains": ("text",),
            "output_matches": ("text",),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"check '{self.kind}' needs {', '.join(missing)}")
        if self.kind.endswith("_matches"):
            try:
                re.compile(self.text or "")
            except re.error as exc:
                raise ValueError(f"check '{self.kind}': bad regular expression: {exc}") from None
        return self

    def describe(self) -> str:
        if self.kind == "file_exists":
            return f"file_exists {self.path}"
        if self.kind == "exit_code":
            return f"exit_code == {self.code}"
        if self.kind.startswith("file_"):
            return f"{self.kind} {self.path} {self.text!r}"
        return f"{self.kind} {self.text!r}"


class ToolResult(BaseModel):
    """What one tool call returned."""

    ok: bool
    output: str = ""
    """Text output (stdout for shell, content for reads), capped by the tool."""
    error: str | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    truncated: bool = False


class CheckResult(BaseModel):
    check: str
    passed: bool
    evidence: str = ""
    unknown: bool = False
    """The check could not be run (it needs a call's output or exit code, lost when the run
    stopped during the call); it decides nothing."""


class Verdict(BaseModel):
    """Grisha's judgement of one step attempt."""

    step_id: str
    passed: bool
    level: VerificationLevel
    checks: list[CheckResult] = Field(default_factory=list)
    judge: str | None = None
    """The LLM judge's reasoning, when a judge was asked."""
    summary: str = ""


class Attempt(BaseModel):
    number: int
    started_at: float
    finished_at: float | None = None
    interrupted: bool = False
    """The run died during this call: the action may or may not have happened."""
    denied: bool = False
    """The permission policy or a person refused the call; it was not made (and repeating the
    same call is pointless)."""
    result: ToolResult | None = None
    verdict: Verdict | None = None


class StepSpec(BaseModel):
    """One step as a plan file or the planner writes it: a tool call and what it should achieve."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = ""
    tool: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)
    expected: str = ""
    """Expected outcome in words; the LLM judge compares the result with it."""
    checks: list[Check] = Field(default_factory=list)

    @field_validator("args")
    @classmethod
    def _not_too_deep(cls, args: dict[str, Any]) -> dict[str, Any]:
        # Deeper arguments crash what reads them later (schema validation, JSON encoders).
        if depth_of(args) > MAX_DEPTH:
            raise ValueError(f"arguments nested deeper than {MAX_DEPTH} levels")
        return args


class Step(StepSpec):
    """A step of the run's plan, with its progress."""

    status: StepStatus = StepStatus.PENDING
    attempts: list[Attempt] = Field(default_factory=list)


Question = Literal["permission", "rerun", "input"]
"""What a run asks a person: may a call be made (``permission``), may a call cut off by a crash
be made again (``rerun``), or the answer to a ``person.ask`` step's question (``input``)."""


class PendingApproval(BaseModel):
    """What a run waits for a person on: a tool call the permission policy wants approved, or
    a question a ``person.ask`` step asks."""

    step_id: str
    attempt: int
    """The attempt number the call will be, once approved."""
    revision: int = 0
    """The plan revision the step belongs to."""
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    rule: int | None = None
    """The policy rule (numbered from 1) that asked; ``None`` for the policy's default."""
    reason: str = ""
    requested_at: float = Field(default_factory=time.time)
    question: Question = "permission"
    """``permission``: the policy asks before this call. ``rerun``: the run died during this
    call, and ``on_interrupted = ask`` wants a person to say whether to make it again.
    ``input``: a ``person.ask`` step waits for an answer (its question is ``reason``)."""


TASK_CHECK_KINDS = ("file_exists", "file_contains", "file_matches")
"""What a task's success criteria may check: files (outputs belong to steps)."""


def task_checks(checks: list[Check]) -> list[Check]:
    """``checks`` if every one looks at a file, else ``ValueError`` naming the first that does
    not."""
    for check in checks:
        if check.kind not in TASK_CHECK_KINDS:
            raise ValueError(
                f"success criteria check files ({', '.join(TASK_CHECK_KINDS)}), not "
                f"{check.kind}: put output and exit-code checks on the step that runs the tool"
            )
    return checks


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[Step] = Field(min_length=1)
    rationale: str = ""
    revision: int = 0
    source: Literal["llm", "file"] = "llm"
    success: list[Check] = Field(default_factory=list, max_length=20)
    """The task's own success criteria (file checks), stated with the first plan: the run
    completes only when they hold after the last step, and a replan cannot drop them."""

    @field_validator("success")
    @classmethod
    def _file_checks_only(cls, success: list[Check]) -> list[Check]:
        return task_checks(success)

    @field_validator("steps")
    @classmethod
    def _unique_ids(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise ValueError(f"duplicate step id '{step.id}'")
            seen.add(step.id)
        return steps


class ProgressKind(StrEnum):
    """A pattern the progress monitor (``trinity.agents.progress``) recognises."""

    REPEATED_ACTION = "repeated_action"
    """The same tool call (tool + canonical arguments) failed with the same result."""
    REPEATED_ERROR = "repeated_error"
    """Different calls failed with the same error or failed-check summary."""
    ALTERNATION = "alternation"
    """Two failing actions, or two plans, take turns: A-B-A-B."""
    SAME_PLAN = "same_plan"
    """A replan returned a plan identical to an earlier one (ids and titles aside)."""
    NO_PROGRESS = "no_progress"
    """No step was newly verified for ``Policy.stall_steps`` graph steps."""


class ProgressFinding(BaseModel):
    """One detection of a loop or stall."""

    kind: ProgressKind
    evidence: str
    """What repeated, in words a person (and Atlas) can act on."""
    repetitions: int
    """How many times the pattern occurred (plans, attempts, or graph steps for a stall)."""
    at_step: int = 0
    """The graph step it was found at."""
    revision: int = 0
    """The plan revision it was found in."""

    @property
    def stop_reason(self) -> StopReason:
        """How the run stops when this pattern comes back."""
        return StopReason.STALLED if self.kind == ProgressKind.NO_PROGRESS else StopReason.LOOP


class Policy(RunLimits):
    """The Meta-Planner's knobs for one run: the run's limits (:class:`RunLimits`) and its
    strategy."""

    model_config = ConfigDict(extra="ignore")

    verification: VerificationLevel = VerificationLevel.CHECKS
    on_failure: FailureAction = FailureAction.RETRY
    max_step_retries: int = Field(default=1, ge=0)
    """Extra attempts of the same step before replanning (with ``on_failure=retry``)."""
    max_replans: int = Field(default=2, ge=0)
    on_interrupted: OnInterrupted = OnInterrupted.RECHECK
    """What a resumed run does about a tool call its process died during."""
    stall_steps: int = Field(default=30, ge=3)
    """Graph steps without a newly verified step before the run counts as stalled (an attempt
    is three: tetyana, grisha, meta)."""
    reasons: list[str] = Field(default_factory=list)
    """Why the Meta-Planner chose these values, for the report."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed(data)


class Lesson(BaseModel):
    id: int | None = None
    run_id: str | None = None
    task: str
    outcome: Literal["success", "failure"]
    text: str
    tags: list[str] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)


class Task(BaseModel):
    text: str
    plan_file: str | None = None
    workspace: str


class Usage(BaseModel):
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """What the calls cost, from the price table; 0 when the model has no price."""
    priced: bool = True
    """False once a call was made to a model with no price (``cost_usd`` is then a floor)."""
    estimated_calls: int = 0
    """Calls whose token counts the server did not give usably (missing, negative, absurd):
    their tokens are estimates from the text (:mod:`trinity.llm.replies`)."""
    llm_seconds: float = 0.0
    """Time spent in the calls that answered (their retries included)."""
    llm_errors: int = 0
    """Calls that failed for good (counted in ``llm_calls`` too)."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Counters(BaseModel):
    tool_calls: int = 0
    retries: int = 0
    replans: int = 0


class EngineState(BaseModel):
    """Fields the graph engine reads and writes. Agent state models extend it."""

    run_id: str = ""
    step: int = 0
    """Graph steps taken so far (one per node execution)."""
    next_node: str | None = None
    """The node to run next; ``None`` once the run has ended."""
    stop_reason: StopReason | None = None
    stop_detail: str = ""
    started_at: float = 0.0
    finished_at: float | None = None
    last_node: str | None = None
    """The node that ran most recently."""
    in_flight: str | None = None
    """A side-effect node that had started when this checkpoint was written."""
    interrupted: bool = False
    """Set on resume when the run died while ``in_flight`` was running: its action may or may
    not have happened, and the node must find out rather than blindly repeat it."""
    node_seconds: dict[str, float] = Field(default_factory=dict)
    """Wall time spent in each node, summed."""


class RunState(EngineState):
    """The whole state of one Trinity run."""

    task: Task
    model: str | None = None
    """Model string (``scripted:…``, ``openai:…``); ``None`` for a plan run with no LLM."""
    policy: Policy = Field(default_factory=Policy)
    plan: Plan | None = None
    plan_history: list[Plan] = Field(default_factory=list)
    """Earlier plans, oldest first, kept when Atlas replans."""
    current: int = 0
    """Index of the step being worked on."""
    decision: Decision | None = None
    """The Meta-Planner's latest decision; the router follows it."""
    mcp_servers_file: str | None = None
    """The MCP servers file the run was started with (resume uses it again). Only the path is
    kept: the file may hold credentials that do not belong in checkpoints."""
    mcp_servers: list[str] | None = None
    """The servers of that file the run may use, by name (``None``: all)."""
    requested: dict[str, Any] = Field(default_factory=dict)
    """Policy values the user fixed (``verification``, ``max_steps``…); they win over choices."""

    @field_validator("requested", mode="before")
    @classmethod
    def _requested_renamed(cls, value: Any) -> Any:
        return renamed(value)

    lessons_used: list[Lesson] = Field(default_factory=list)
    lessons_stored: int = 0
    usage: Usage = Field(default_factory=Usage)
    counters: Counters = Field(default_factory=Counters)
    permissions: dict[str, Any] | None = None
    """The tool permission policy the run started with, as data
    (``trinity.tools.permissions.PermissionPolicy.to_data``); a resumed run keeps it."""
    pending_approval: PendingApproval | None = None
    """The call waiting for a person's decision while the run is ``awaiting_approval``."""
    progress_findings: list[ProgressFinding] = Field(default_factory=list)
    """Loops and stalls the Meta-Planner found, oldest first; a second finding of one kind
    stops the run."""
    progress_mark: int | None = None
    """The graph step of the last verified progress (or of the first plan, or of the last
    stall finding): the stall detector counts from here."""
    unmet_success: list[str] = Field(default_factory=list)
    """The task's success criteria that did not hold once every step of the plan had passed
    (what the next replan must achieve); empty otherwise."""

    @property
    def current_step(self) -> Step | None:
        if self.plan is None or self.current >= len(self.plan.steps):
            return None
        return self.plan.steps[self.current]

    @property
    def last_verdict(self) -> Verdict | None:
        """Grisha's verdict on the current step's latest attempt (what the Meta-Planner decides
        on next)."""
        step = self.current_step
        return step.attempts[-1].verdict if step is not None and step.attempts else None

    @property
    def status(self) -> RunStatus:
        if self.stop_reason is None:
            return RunStatus.RUNNING
        if self.stop_reason == StopReason.COMPLETED:
            return RunStatus.SUCCEEDED
        if self.stop_reason == StopReason.AWAITING_APPROVAL:
            return RunStatus.AWAITING_APPROVAL
        if self.stop_reason == StopReason.CANCELLED:
            return RunStatus.CANCELLED
        return RunStatus.FAILED
