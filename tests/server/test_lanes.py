"""The run page's agent lanes, from a run's events."""

from __future__ import annotations

from typing import Any

from trinity.server.dashboard.lanes import agent_lanes
from trinity.views import EventRecord


def event(seq: int, ts: float, node: str, kind: str, **data: Any) -> EventRecord:
    return EventRecord(run_id="r", seq=seq, ts=ts, node=node, kind=kind, data=data)


def test_each_turn_is_a_bar_in_its_agents_lane_labelled_with_what_it_did() -> None:
    events = [
        event(1, 100.0, "", "run_started"),
        event(2, 100.5, "atlas", "plan", revision=0, steps=[{}, {}]),
        event(3, 101.0, "atlas", "node_finished", seconds=1.0, next="meta"),
        event(4, 101.0, "meta", "node_finished", seconds=0.0, next="tetyana"),
        event(5, 101.1, "tetyana", "tool_call", step="build", tool="shell.run", attempt=1),
        event(6, 103.0, "tetyana", "node_finished", seconds=2.0, next="grisha"),
        event(7, 103.5, "grisha", "verdict", step="build", passed=False),
        event(8, 103.5, "grisha", "node_finished", seconds=0.5, next="meta"),
        event(9, 103.6, "tetyana", "tool_call", step="build", tool="shell.run", attempt=2),
        event(10, 104.0, "tetyana", "node_finished", seconds=0.4, next="grisha"),
        event(11, 104.1, "atlas", "plan", revision=1, steps=[{}]),
        event(12, 104.2, "atlas", "node_finished", seconds=0.1, next="meta"),
    ]
    drawn = agent_lanes(events)
    assert [lane.node for lane in drawn.lanes] == ["atlas", "meta", "tetyana", "grisha"]
    assert round(drawn.total_s, 6) == 4.2  # up to the end of the last turn
    atlas, meta, tetyana, grisha = drawn.lanes
    assert [(b.label, b.tone) for b in atlas.bars] == [
        ("plan: 2 steps", ""),
        ("replan r1: 1 steps", "replan"),
    ]
    assert [b.label for b in meta.bars] == ["→ tetyana"]  # where the run went next
    assert [(b.label, b.tone) for b in tetyana.bars] == [
        ("build: shell.run", ""),
        ("build: shell.run (try 2)", "retry"),
    ]
    assert [(b.label, b.tone) for b in grisha.bars] == [("✗ build", "bad")]
    first = tetyana.bars[0]
    assert (first.start_s, first.seconds) == (1.0, 2.0)  # placed by when it ran
    assert round(first.left(drawn.total_s), 2) == 23.81
    assert round(tetyana.busy_s, 2) == 2.4


def test_no_events_no_lanes() -> None:
    assert agent_lanes([]).lanes == []
