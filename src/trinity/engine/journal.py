"""Where the engine records a run as it goes.

The engine hands the journal each event that marks a boundary of the run (the run starting, a
node starting or finishing, the run finishing) just before it emits it, with the state as it is
at that moment; the journal records what changed. Before a side-effect node (a tool call) the
engine marks it ``in_flight`` and waits for :meth:`Journal.flush`: the mark is on disk before
the node acts on the world, so a resumed run knows the action may have happened.
"""

from __future__ import annotations

from typing import Protocol

from trinity.events import JournalEntry, NodeStarted
from trinity.state import EngineState


class Journal(Protocol):
    def record(self, state: EngineState, entry: JournalEntry) -> None:
        """Note what changed in ``state`` since the last entry (on ``entry``, which is then
        emitted). Raises :class:`~trinity.errors.StoreError` once the journal can no longer be
        written."""
        ...

    async def flush(self) -> None:
        """Wait until everything recorded so far is durable."""
        ...


class MemoryJournal:
    """Keeps a copy of the whole state at every entry that changes it, in memory. For tests
    and throwaway runs; :meth:`latest` gives what a resume would start from."""

    def __init__(self) -> None:
        self.states: dict[str, list[EngineState]] = {}

    def record(self, state: EngineState, entry: JournalEntry) -> None:
        if entry.kind == "run_started" or (
            isinstance(entry, NodeStarted) and state.in_flight != entry.node
        ):
            return
        self.states.setdefault(state.run_id, []).append(state.model_copy(deep=True))

    async def flush(self) -> None:
        return None

    def latest(self, run_id: str) -> EngineState | None:
        history = self.states.get(run_id)
        return history[-1].model_copy(deep=True) if history else None
