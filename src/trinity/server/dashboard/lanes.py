"""The run page's agent timeline: one lane per agent (node), one bar per turn it took, placed
by when it ran, labelled with what it did (the step and tool Tetyana ran, Grisha's verdict,
Atlas's plan or replan, where the Meta-Planner sent the run next)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trinity.views import EventRecord


@dataclass
class Bar:
    start_s: float
    seconds: float
    label: str
    tone: str = ""
    """``ok`` / ``bad`` (a verdict), ``retry`` (a step's second try or later), ``replan``."""

    def left(self, total: float) -> float:
        return 100 * self.start_s / total

    def width(self, total: float) -> float:
        return 100 * self.seconds / total


@dataclass
class Lane:
    node: str
    bars: list[Bar] = field(default_factory=list)

    @property
    def busy_s(self) -> float:
        return sum(bar.seconds for bar in self.bars)


@dataclass
class Lanes:
    lanes: list[Lane]
    total_s: float
    """From the first event to the end of the last turn (at least a millisecond)."""


def agent_lanes(events: list[EventRecord]) -> Lanes:
    """The lanes of the turns finished in ``events`` (a run's, in order)."""
    if not events:
        return Lanes([], 0.001)
    origin = events[0].ts
    lanes: dict[str, Lane] = {}
    doing: dict[str, tuple[str, str]] = {}  # node -> (label, tone) of its current turn
    end = 0.001
    for event in events:
        node = event.node or ""
        data: dict[str, Any] = event.data
        said = _what(event.kind, data)
        if said is not None and node:
            doing[node] = said
        if event.kind != "node_finished" or not node:
            continue
        seconds = max(0.0, float(data.get("seconds") or 0.0))
        finish = event.ts - origin
        label, tone = doing.pop(node, (_after(node, data), ""))
        lane = lanes.setdefault(node, Lane(node))
        lane.bars.append(Bar(max(0.0, finish - seconds), seconds, label, tone))
        end = max(end, finish)
    return Lanes(list(lanes.values()), end)


def _what(kind: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """What an event says a turn did, as (label, tone); ``None``: nothing to say."""
    if kind == "tool_call":
        attempt = int(data.get("attempt") or 1)
        retry = f" (try {attempt})" if attempt > 1 else ""
        return f"{data.get('step')}: {data.get('tool')}{retry}", "retry" if attempt > 1 else ""
    if kind == "verdict":
        passed = bool(data.get("passed"))
        return f"{'✓' if passed else '✗'} {data.get('step')}", "ok" if passed else "bad"
    if kind == "plan":
        revision = int(data.get("revision") or 0)
        steps = len(data.get("steps") or [])
        if revision:
            return f"replan r{revision}: {steps} steps", "replan"
        return f"plan: {steps} steps", ""
    return None


def _after(node: str, data: dict[str, Any]) -> str:
    following = data.get("next")
    return f"→ {following}" if following else node
