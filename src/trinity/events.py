"""Events: everything that happens in a run, as typed records, and the bus that hands them out.

Each kind of event is a pydantic model with a ``kind`` literal; :data:`Event` is their union,
keyed on ``kind``. Events are the run's journal: the store writes every one of them in order,
and the events that mark a step's boundaries (:class:`JournalEntry`: a run starting, a
side-effect node starting, a node finishing, a run finishing) carry what changed in the state,
so a run can be rebuilt from them. The same events feed the CLI's progress lines and any other
subscriber.

A subscriber is an :data:`EventSink`: a plain function that takes an event. It is called on the
event loop, synchronously, in the order the events happen, and must not block. An
:class:`EventBus` belongs to one run: it numbers the run's events (``seq``), stamps them, and
hands each to every subscriber; a subscriber that raises is logged and skipped, never allowed
to end the run it observes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from trinity.state import Policy, ProgressFinding, Question

log = logging.getLogger(__name__)


class EventBase(BaseModel):
    """What every event has. The bus fills in ``run_id``, ``seq`` and ``ts``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built when first used

    kind: str
    run_id: str = ""
    seq: int = 0
    """The event's number within its run: 1, 2, 3…, never reused, also across resumes."""
    ts: float = 0.0
    """When it happened (seconds since the epoch)."""
    node: str | None = None
    """The graph node it happened in, if any."""

    def data(self) -> dict[str, Any]:
        """The kind's own fields, as JSON-compatible values (what ``runs trace`` shows)."""
        return self.model_dump(mode="json", exclude=set(ENVELOPE))


ENVELOPE = frozenset({"kind", "run_id", "seq", "ts", "node"})
"""The fields every event has; the rest are the kind's own data."""


class JournalEntry(EventBase):
    """An event that carries what changed in the run's state since the previous entry
    (:mod:`trinity.store.delta`): the journal a resume rebuilds the state from."""

    changes: list[list[Any]] = Field(default_factory=list)
    """``[path, value]`` (set) or ``[path]`` (remove), paths into the state's JSON."""


# -- the engine ----------------------------------------------------------------------------------


class RunStarted(JournalEntry):
    kind: Literal["run_started"] = "run_started"
    start_node: str
    """The node the run starts (or resumes) at."""
    step: int
    """Graph steps already taken (0 for a new run)."""
    resumed: bool = False


class NodeStarted(JournalEntry):
    """A node that acts on the world (a tool call) starts: journaled, durably, before it does;
    its ``changes`` set ``in_flight``. (Other nodes start when the previous ``node_finished``
    names them in ``next``; no event is emitted for them.)"""

    kind: Literal["node_started"] = "node_started"
    step: int


class NodeFinished(JournalEntry):
    kind: Literal["node_finished"] = "node_finished"
    step: int
    """Graph steps taken, this one included."""
    seconds: float
    next: str
    """The next node, or ``__end__``."""


class Checkpoint(JournalEntry):
    """Changes made outside any node: when a run's books are closed (steps cut off, lessons
    stored) and when a resumed run starts."""

    kind: Literal["checkpoint"] = "checkpoint"
    step: int


class NodeAbandoned(EventBase):
    kind: Literal["node_abandoned"] = "node_abandoned"
    after_s: float


class RunError(EventBase):
    kind: Literal["error"] = "error"
    traceback: str


class RunFinished(JournalEntry):
    kind: Literal["run_finished"] = "run_finished"
    stop_reason: str
    detail: str = ""


# -- the agents ----------------------------------------------------------------------------------


class LessonsRecalled(EventBase):
    kind: Literal["lessons_recalled"] = "lessons_recalled"
    node: str | None = "knowledge"
    count: int


class LessonsStored(EventBase):
    kind: Literal["lessons_stored"] = "lessons_stored"
    node: str | None = "knowledge"
    count: int


class PolicyChosen(EventBase):
    kind: Literal["policy"] = "policy"
    node: str | None = "meta"
    policy: Policy


class PlanStep(BaseModel):
    id: str
    tool: str
    title: str = ""


class PlanMade(EventBase):
    kind: Literal["plan"] = "plan"
    node: str | None = "atlas"
    revision: int
    source: str
    steps: list[PlanStep]


class LLMCall(EventBase):
    kind: Literal["llm_call"] = "llm_call"
    purpose: str
    """``atlas.plan``, ``atlas.replan``, ``grisha.judge``."""
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    attempts: int
    cost_usd: float | None = None
    """``None`` when the model has no price."""
    finish_reason: str = "stop"
    """``stop``, or ``length`` for a reply cut off at its token limit."""


class LLMFailed(EventBase):
    """An LLM call failed for good (the server never answered, refused, or sent nonsense),
    after ``attempts`` HTTP requests."""

    kind: Literal["llm_failed"] = "llm_failed"
    purpose: str
    model: str
    attempts: int
    error: str


class LLMRetry(EventBase):
    """An LLM attempt failed in a way worth retrying (a timeout, a 429, a 5xx, a reset): the
    provider waits ``wait_s`` and tries again."""

    kind: Literal["llm_retry"] = "llm_retry"
    purpose: str
    attempt: int
    """The attempt that failed (1 = the first)."""
    reason: str
    wait_s: float


class LLMStreaming(EventBase):
    """A streamed reply is arriving: told when its text starts, then every few seconds, so a
    long reply shows progress and a stalled one shows where it stopped."""

    kind: Literal["llm_streaming"] = "llm_streaming"
    purpose: str
    chars: int
    """Characters of the reply received so far."""
    elapsed_s: float
    """Seconds since the reply began."""


class RateLimited(EventBase):
    """An LLM call waits for its turn under a rate limit (``rate_limits`` in the settings)."""

    kind: Literal["rate_limited"] = "rate_limited"
    model: str
    limit: str
    """The limit that is full: ``60 requests per 1 minute``, ``100000 tokens per 1 minute``."""
    wait_s: float


class ToolCalled(EventBase):
    kind: Literal["tool_call"] = "tool_call"
    node: str | None = "tetyana"
    step: str
    tool: str
    attempt: int


class ToolReturned(EventBase):
    kind: Literal["tool_result"] = "tool_result"
    node: str | None = "tetyana"
    step: str
    ok: bool
    exit_code: int | None = None
    error: str | None = None
    output: str = ""
    """The first 300 characters (the whole output is in the run state)."""
    seconds: float = 0.0


class InterruptedCall(EventBase):
    """A resumed run found a tool call that was in flight when its process died."""

    kind: Literal["interrupted_call"] = "interrupted_call"
    node: str | None = "tetyana"
    step: str
    tool: str
    attempt: int
    action: Literal["recheck", "rerun", "ask", "fail"]
    """What is done about it (``Policy.on_interrupted``, and whether the tool is idempotent)."""


class ApprovalRequested(EventBase):
    kind: Literal["approval_requested"] = "approval_requested"
    node: str | None = "tetyana"
    step: str
    tool: str
    rule: int | None = None
    reason: str = ""
    question: Question = "permission"


class PermissionApplied(EventBase):
    kind: Literal["permission"] = "permission"
    node: str | None = "tetyana"
    step: str
    tool: str
    action: str
    """``deny`` by the policy, or a person's ``approve`` / ``deny``."""
    by: str | None = None
    """The person, for a person's decision."""
    question: Question = "permission"
    """What the person was asked: may the call be made, made again after a crash, or a
    ``person.ask`` step's question (``action`` is then ``answer`` or ``deny``)."""


class ToolServerProblem(EventBase):
    kind: Literal["tool_server_problem"] = "tool_server_problem"
    server: str
    problem: str


class VerdictGiven(EventBase):
    kind: Literal["verdict"] = "verdict"
    node: str | None = "grisha"
    step: str
    passed: bool
    level: str
    summary: str = ""


class DecisionMade(EventBase):
    kind: Literal["decision"] = "decision"
    node: str | None = "meta"
    action: Literal["retry", "replan"]
    step: str | None = None
    because: str | None = None
    """The loop or stall finding that made the Meta-Planner change strategy."""


class ProgressFound(EventBase):
    kind: Literal["progress"] = "progress"
    node: str | None = "meta"
    finding: ProgressFinding


# -- the runtime ---------------------------------------------------------------------------------


class CancelRequested(EventBase):
    kind: Literal["cancel_requested"] = "cancel_requested"
    grace_s: float


class CancelForced(EventBase):
    kind: Literal["cancel_forced"] = "cancel_forced"
    after_s: float


Event = Annotated[
    RunStarted
    | NodeStarted
    | NodeFinished
    | Checkpoint
    | NodeAbandoned
    | RunError
    | RunFinished
    | LessonsRecalled
    | LessonsStored
    | PolicyChosen
    | PlanMade
    | LLMCall
    | LLMFailed
    | LLMRetry
    | LLMStreaming
    | RateLimited
    | ToolCalled
    | ToolReturned
    | InterruptedCall
    | ApprovalRequested
    | PermissionApplied
    | ToolServerProblem
    | VerdictGiven
    | DecisionMade
    | ProgressFound
    | CancelRequested
    | CancelForced,
    Field(discriminator="kind"),
]
"""Any event, told apart by ``kind``."""

EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["kind"].default: cls for cls in get_args(get_args(Event)[0])
}
"""``kind -> model``."""
JOURNAL_KINDS = frozenset(
    kind for kind, cls in EVENT_TYPES.items() if issubclass(cls, JournalEntry)
)
"""The kinds that carry state changes."""

_ADAPTER: TypeAdapter[Event] | None = None
"""Built on first use: building it builds every event model (tens of milliseconds at start-up)."""

EventSink = Callable[[EventBase], None]
"""A subscriber: called with each event, on the event loop; must not block."""


def parse_event(row: dict[str, Any]) -> EventBase:
    """An event from its stored form (``kind``, ``seq``, ``ts``, ``node``, ``data``, …)."""
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(Event)
    fields = {key: row[key] for key in ENVELOPE if key in row and row[key] is not None}
    return _ADAPTER.validate_python({**row.get("data", {}), **fields})


class EventBus:
    """One run's events: numbered, stamped and handed to every subscriber in order."""

    def __init__(self, run_id: str, *, seq: int = 0, subscribers: Iterable[EventSink] = ()):
        self.run_id = run_id
        self.seq = seq
        """The number of the last event emitted (a resumed run goes on from its journal's)."""
        self._subscribers: list[EventSink] = list(subscribers)
        self._closed = False

    def subscribe(self, subscriber: EventSink) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: EventBase) -> None:
        if self._closed:
            # A node the engine abandoned, carrying on after the run ended: its events would
            # land after `run_finished` (or, after a resume, among the new run's).
            return
        self.seq += 1
        # Plain attribute writes: the bus owns these fields and they need no validation.
        fields = event.__dict__
        fields["run_id"] = self.run_id
        fields["seq"] = self.seq
        fields["ts"] = time.time()
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # an observer's bug must not end the run it observes
                log.warning(
                    "event subscriber %r failed on %s", subscriber, event.kind, exc_info=True
                )

    def close(self) -> None:
        """Drop every later event (the run's books are closed)."""
        self._closed = True
