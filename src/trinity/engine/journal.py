"""Where the engine records a run as it goes: after every node, and durably before every
side-effect node."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from trinity.state import EngineState


class Journal(Protocol):
    def checkpoint(
        self, state: EngineState, node: str | None, *, durable: bool
    ) -> Awaitable[None] | None:
        """Record what ``node`` changed in ``state`` (``node`` is ``None`` at the run's end).
        With ``durable=True`` return an awaitable that resolves once the record (and every one
        before it) is on disk; otherwise it may be pending until :meth:`flush`. Raises
        :class:`~trinity.errors.StoreError` once the journal can no longer be written."""
        ...

    async def flush(self) -> None:
        """Wait until everything recorded so far is durable."""
        ...


class MemoryJournal:
    """Keeps a copy of the whole state at every checkpoint, in memory. For tests and throwaway
    runs; :meth:`latest` gives what a resume would start from."""

    def __init__(self) -> None:
        self.states: dict[str, list[EngineState]] = {}

    def checkpoint(
        self, state: EngineState, node: str | None, *, durable: bool
    ) -> Awaitable[None] | None:
        self.states.setdefault(state.run_id, []).append(state.model_copy(deep=True))
        return None

    async def flush(self) -> None:
        return None

    def latest(self, run_id: str) -> EngineState | None:
        history = self.states.get(run_id)
        return history[-1].model_copy(deep=True) if history else None
