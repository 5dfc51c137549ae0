"""The typed events: the union is what the user guide says, and the bus numbers and isolates."""

from __future__ import annotations

import re
from pathlib import Path

from trinity.events import (
    EVENT_TYPES,
    JOURNAL_KINDS,
    EventBase,
    EventBus,
    LessonsStored,
    NodeStarted,
    ToolCalled,
    parse_event,
)

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "user-guide.md"


def guide_table() -> dict[str, set[str]]:
    """``kind -> fields named in its data column`` from the user guide's table of events."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("## Events and traces") :]
    section = section[: section.index("\n## ", 5)]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| [^|]* \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    return rows


def test_the_user_guides_table_lists_every_kind_and_no_other() -> None:
    table = guide_table()
    assert set(table) == set(EVENT_TYPES)


def test_the_user_guide_names_every_field_of_every_kind() -> None:
    envelope = {"kind", "run_id", "seq", "ts", "node", "changes"}
    for kind, documented in guide_table().items():
        fields = set(EVENT_TYPES[kind].model_fields) - envelope
        assert fields <= documented, f"{kind}: the guide misses {sorted(fields - documented)}"


def test_journal_entries_are_the_boundary_events() -> None:
    assert {
        "run_started",
        "node_started",
        "node_finished",
        "run_finished",
        "checkpoint",
    } == JOURNAL_KINDS


def test_the_bus_numbers_stamps_and_survives_a_broken_subscriber() -> None:
    seen: list[EventBase] = []

    def broken(event: EventBase) -> None:
        raise RuntimeError("observer bug")

    bus = EventBus("r1", seq=41, subscribers=[broken, seen.append])
    bus.emit(ToolCalled(step="s", tool="fs.read", attempt=1))
    bus.emit(LessonsStored(count=2))
    assert [(e.seq, e.run_id, e.kind) for e in seen] == [
        (42, "r1", "tool_call"),
        (43, "r1", "lessons_stored"),
    ]
    assert all(e.ts > 0 for e in seen)
    bus.close()
    bus.emit(NodeStarted(step=3))  # after the books are closed: dropped
    assert len(seen) == 2 and bus.seq == 43


def test_a_stored_event_reads_back_as_its_type() -> None:
    event = ToolCalled(step="s", tool="fs.read", attempt=2, run_id="r", seq=7, ts=1.0)
    row = {"kind": "tool_call", "seq": 7, "ts": 1.0, "node": "tetyana", "data": event.data()}
    again = parse_event({**row, "run_id": "r"})
    assert isinstance(again, ToolCalled) and again == event
