"""What a graph step changed in a run's state, as a short list of changes, and how to apply it.

A change is ``[path, value]`` (set what ``path`` leads to; a list index one past the end
appends) or ``[path]`` (remove that key); a path is a list of keys and list indexes into the
state's JSON document: ``[["node_seconds", "grisha"], 0.0036]``, ``[["plan", "steps", 22,
"status"], "succeeded"]``. The journal's entries carry them (:mod:`trinity.store.journal`).

:class:`StateTracker` remembers the state as last journaled and gives the changes since. Its
cost does not depend on how long the run has been going: small fields are compared whole (and
only their differences written), a new plan is written once, and of the plan's steps only the
one the node worked on (the current step when it started, and when it ended) is looked at.

That rests on one rule the agents keep, and the tests check on every run they drive (a journal
that rebuilds the state at each entry, ``tests/conftest.py``): **a node changes only the step
that is current when it starts** (Tetyana and Grisha work on it, the Meta-Planner moves
``current`` on, Atlas makes a new plan).
"""

from __future__ import annotations

import itertools
import operator
from enum import Enum
from typing import Any

from pydantic import BaseModel

from trinity.state import EngineState, RunState

Change = list[Any]
"""``[path, value]`` or ``[path]``."""

_MISSING = object()
_TRACKED_BY_HAND = frozenset({"plan", "plan_history"})
_FIXED = frozenset(
    {"run_id", "task", "requested", "permissions", "mcp_servers_file", "mcp_servers", "started_at"}
)
"""RunState fields that are set when a run starts and never change afterwards."""
_REPLACED = frozenset({"policy", "lessons_used", "progress_findings", "pending_approval"})
"""RunState fields the agents replace, never change in place: the same object is unchanged."""
_PLAIN = frozenset({str, int, float, bool, type(None)})


class StateTracker:
    """The state as last journaled, for one run."""

    def __init__(self, state: EngineState) -> None:
        fields = set(type(state).model_fields)
        fixed = _FIXED if isinstance(state, RunState) else frozenset()
        self._small = fields - _TRACKED_BY_HAND - fixed
        self._names = tuple(sorted(self._small))
        self._values = operator.itemgetter(*self._names)
        self._raw: tuple[Any, ...] = ()
        """The small fields' values as last seen: a scalar that is the very same object has not
        changed (the cheap test that most fields pass at every step)."""
        self._replaced = _REPLACED & self._small if isinstance(state, RunState) else frozenset()
        self._last: dict[str, Any] = {}
        self._objects: dict[str, Any] = {}
        self._plan: object = _MISSING
        self._history = 0
        self._steps: dict[int, Any] = {}
        self._started_at: int | None = None
        self.reset(state)

    def reset(self, state: EngineState) -> None:
        """Take ``state`` as what is journaled (a run loaded back, or just started)."""
        self._last = state.model_dump(mode="json", include=self._small)
        self._raw = (_MISSING,) * len(self._names)
        self._objects = {name: getattr(state, name) for name in self._replaced}
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
            self._steps[index] = _dump(state.plan.steps[index])

    def changes(self, state: EngineState) -> list[Change]:
        """What changed since the last call (or :meth:`reset`)."""
        out: list[Change] = []
        last = self._last
        models = []
        now = self._values(state.__dict__)
        for name, value, seen in zip(self._names, now, self._raw, strict=True):
            kind = type(value)
            if value is seen and (kind in _PLAIN or isinstance(value, Enum)):
                continue
            if kind in _PLAIN:  # the common case, kept cheap: most fields are scalars
                if last.get(name, _MISSING) != value:
                    out.append([[name], value])
                    last[name] = value
            elif isinstance(value, Enum):
                if last.get(name, _MISSING) != value.value:
                    out.append([[name], value.value])
                    last[name] = value.value
            elif kind is dict and (before := last.get(name, _MISSING)) == value:
                continue  # (a dict of models compares equal to its dump only when empty)
            elif kind is dict and all(type(v) in _PLAIN for v in value.values()):
                diff(before, value, [name], out)  # node_seconds: the keys that changed
                last[name] = dict(value)
            elif name not in self._replaced or value is not self._objects.get(name, _MISSING):
                models.append(name)
        if models:
            dumped = state.model_dump(mode="json", include=set(models))
            for name in models:
                self._set(state, name, dumped[name], out)
        self._raw = now
        if isinstance(state, RunState):
            self._plan_changes(state, out)
        return out

    def _set(self, state: EngineState, name: str, dumped: Any, out: list[Change]) -> None:
        """Journal field ``name`` (now ``dumped``) if it changed: only what changed in it."""
        before = self._last.get(name, _MISSING)
        if dumped == before:
            return
        diff(before, dumped, [name], out)
        self._last[name] = dumped
        if name in self._replaced:
            self._objects[name] = getattr(state, name)

    def _plan_changes(self, state: RunState, out: list[Change]) -> None:
        history = state.plan_history
        if len(history) != self._history:
            if len(history) > self._history:
                for index in range(self._history, len(history)):
                    out.append([["plan_history", index], _dump(history[index])])
            else:
                out.append([["plan_history"], [_dump(plan) for plan in history]])
            self._history = len(history)
        plan = state.plan
        if plan is not self._plan:
            self._plan = plan
            self._steps = {}
            out.append([["plan"], _dump(plan) if plan is not None else None])
            return
        if plan is None:
            return
        ended_at = state.current
        for candidate in {self._started_at, ended_at}:
            if candidate is None or candidate >= len(plan.steps):
                continue
            index = candidate
            dumped = _dump(plan.steps[index])
            before = self._steps.get(index, _MISSING)
            if before is not _MISSING:
                diff(before, dumped, ["plan", "steps", index], out)
            self._steps[index] = dumped  # a step first seen at a node's end is its baseline
        self._started_at = None
        # Steps behind the current one are done with; keep memory flat on long runs.
        if len(self._steps) > 8:
            for index in [i for i in self._steps if i < ended_at - 1]:
                del self._steps[index]


def _dump(model: BaseModel, include: set[str] | None = None) -> dict[str, Any]:
    """A model as the journal writes it: JSON values, fields at their defaults left out
    (validation puts them back when the state is read)."""
    return model.model_dump(mode="json", include=include, exclude_defaults=True)


def diff(before: Any, after: Any, path: list[Any], out: list[Change]) -> None:
    """Append to ``out`` the changes that turn ``before`` into ``after`` (JSON values). A key
    that is gone becomes a removal: for a state dumped without its defaults, the field went
    back to its default."""
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in after.items():
            old = before.get(key, _MISSING)
            if old is _MISSING:
                out.append([[*path, key], value])
            elif old != value:
                diff(old, value, [*path, key], out)
        for key in before.keys() - after.keys():
            out.append([[*path, key]])
        return
    if isinstance(before, list) and isinstance(after, list) and len(after) >= len(before):
        for index, old in enumerate(before):
            if old != after[index]:
                diff(old, after[index], [*path, index], out)
        for index in range(len(before), len(after)):
            out.append([[*path, index], after[index]])
        return
    out.append([path, after])


def apply_changes(doc: dict[str, Any], changes: list[Change]) -> None:
    """Replay changes on a state's JSON document, in place."""
    for change in changes:
        path = change[0]
        target: Any = doc
        for key, then in itertools.pairwise(path):
            if isinstance(target, dict) and key not in target:
                # a container left out at its default (empty): make it again
                target[key] = [] if isinstance(then, int) else {}
            target = target[key]
        last = path[-1]
        if len(change) == 1:
            del target[last]
        elif isinstance(target, list) and last == len(target):
            target.append(change[1])
        else:
            target[last] = change[1]
