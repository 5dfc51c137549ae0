"""What a graph step changed in a run's state, and how to apply it again.

:class:`StateTracker` remembers the state as last journaled and, after each node, gives the
difference as a :class:`~trinity.events.Checkpoint`'s fields: top-level fields that changed
(``set``), items appended to growing lists (``append``), and the steps of the current plan that
changed (``steps``). Its cost does not depend on how long the run has been going: small fields
are compared whole, a new plan is written once, and of the plan's steps only the one the node
worked on (the current step when it started, and when it ended) is looked at.

That rests on one rule the agents keep, and ``tests/test_journal.py`` checks on every scenario:
**a node changes only the step that is current when it starts** (Tetyana and Grisha work on it,
the Meta-Planner moves ``current`` on, Atlas makes a new plan). :func:`apply_checkpoint` replays
a checkpoint on a state's JSON document.
"""

from __future__ import annotations

from typing import Any

from trinity.state import EngineState, RunState

_MISSING = object()

_SPECIAL = frozenset({"step", "next_node", "plan", "plan_history"})
"""Fields a checkpoint carries in its own way (``step``, ``next``) or tracks by hand."""
_FIXED = frozenset({"run_id", "task", "requested", "permissions", "mcp_servers_file", "started_at"})
"""RunState fields that are set when a run starts and never change afterwards."""


class StateTracker:
    """The state as last journaled, for one run."""

    def __init__(self, state: EngineState) -> None:
        fields = set(type(state).model_fields)
        fixed = _FIXED if isinstance(state, RunState) else frozenset()
        self._small = frozenset(fields - _SPECIAL - fixed)
        self._plans = isinstance(state, RunState)
        self._last: dict[str, Any] = {}
        self._plan: object = _MISSING
        self._history = 0
        self._steps: dict[int, Any] = {}
        self._started_at: int | None = None
        self.reset(state)

    def reset(self, state: EngineState) -> None:
        """Take ``state`` as what is journaled (after a snapshot, or when a run is loaded)."""
        self._last = state.model_dump(mode="json", include=set(self._small))
        if isinstance(state, RunState):
            self._plan = state.plan
            self._history = len(state.plan_history)
        self._steps = {}
        self._started_at = None

    def begin(self, state: EngineState) -> None:
        """A node starts: remember the step it may change."""
        if not isinstance(state, RunState) or state.plan is None:
            return
        index = state.current
        self._started_at = index
        if index not in self._steps and index < len(state.plan.steps):
            self._steps[index] = state.plan.steps[index].model_dump(mode="json")

    def delta(self, state: EngineState) -> dict[str, Any]:
        """``set``, ``append`` and ``steps`` since the last call (or :meth:`reset`)."""
        now = state.model_dump(mode="json", include=set(self._small))
        changed = {key: value for key, value in now.items() if self._last.get(key) != value}
        self._last.update(changed)
        out: dict[str, Any] = {"set": changed, "append": {}, "steps": {}}
        if isinstance(state, RunState):
            self._plan_delta(state, out)
        return out

    def _plan_delta(self, state: RunState, out: dict[str, Any]) -> None:
        history = state.plan_history
        if len(history) > self._history:
            out["append"]["plan_history"] = [
                plan.model_dump(mode="json") for plan in history[self._history :]
            ]
        elif len(history) < self._history:
            out["set"]["plan_history"] = [plan.model_dump(mode="json") for plan in history]
        self._history = len(history)
        plan = state.plan
        if plan is not self._plan:
            self._plan = plan
            self._steps = {}
            out["set"]["plan"] = plan.model_dump(mode="json") if plan is not None else None
            return
        if plan is None:
            return
        ended_at = state.current
        for index in {self._started_at, ended_at}:
            if index is None or index >= len(plan.steps):
                continue
            dumped = plan.steps[index].model_dump(mode="json")
            before = self._steps.get(index, _MISSING)
            if before is not _MISSING and before != dumped:
                out["steps"][index] = dumped
            self._steps[index] = dumped  # a step first seen at a node's end is its baseline
        self._started_at = None
        # Steps behind the current one are done with; keep memory flat on long runs.
        if len(self._steps) > 8:
            for index in [i for i in self._steps if i < ended_at - 1]:
                del self._steps[index]


def apply_checkpoint(doc: dict[str, Any], checkpoint: dict[str, Any]) -> None:
    """Replay a checkpoint's data (``step``, ``next``, ``set``, ``append``, ``steps``) on a
    state's JSON document, in place."""
    doc["step"] = checkpoint["step"]
    doc["next_node"] = checkpoint.get("next")
    doc.update(checkpoint.get("set") or {})
    for name, items in (checkpoint.get("append") or {}).items():
        doc[name] = [*(doc.get(name) or []), *items]
    steps = checkpoint.get("steps") or {}
    if steps:
        plan_steps = doc["plan"]["steps"]
        for index, step in steps.items():
            plan_steps[int(index)] = step
