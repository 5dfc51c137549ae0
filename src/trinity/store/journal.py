"""One run's journal in the store: written event by event, read back into a :class:`RunState`.

:class:`RunJournal` is the engine's journal (the boundary events of a run get the changes in its
state since the previous one, :mod:`trinity.store.delta`) and the first subscriber of the run's
:class:`~trinity.events.EventBus` (every event becomes a row). Rows are group-committed behind
the run; :meth:`RunJournal.flush` waits until everything so far is on disk (the engine asks for
that before every tool call). A write that fails (disk full, read-only, I/O error, a lost lease)
fails the journal for good: nothing more is written for the run except its final transaction,
which carries a full snapshot and so closes the gap; until then the next entry raises, and the
run stops.

Now and then, when the journal since the last snapshot outweighs the state itself, a compact
snapshot of the whole state is written (and the older one dropped), so reading a run back never
replays more than that: :func:`load_run` takes the latest snapshot and applies the changes the
entries after it carry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from trinity.errors import LeaseLostError, StoreError
from trinity.events import Checkpoint, EventBase, EventBus, JournalEntry, NodeStarted
from trinity.state import EngineState, RunState
from trinity.store.delta import StateTracker, apply_changes
from trinity.store.lease import LEASE_TTL_S
from trinity.store.sqlite import Store
from trinity.store.writer import Statement

log = logging.getLogger(__name__)

SNAPSHOT_MIN_BYTES = 4 << 20
"""A snapshot is written once the journal since the last one holds this many bytes, and twice
the last snapshot's size (so snapshots cost at most about as much as the journal itself)."""


class RunJournal:
    """Writes one run's journal as the holder of its lease (epoch ``epoch``).

    ``journaled`` is the state as the journal on disk has it, when that differs from ``state``
    (a resume that reopened a cancelled run): the first entry then carries the difference."""

    def __init__(
        self,
        store: Store,
        state: EngineState,
        bus: EventBus,
        *,
        epoch: int,
        snapshot_bytes: int = 0,
        journaled: EngineState | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.bus = bus
        self.epoch = epoch
        self.failure: StoreError | None = None
        """The first write that failed; once set, the run's journal takes no more writes."""
        self._tracker = StateTracker(journaled or state)
        self._since_snapshot = 0
        self._snapshot_bytes = snapshot_bytes
        self._capture: list[Statement] | None = None

    # -- as the engine's journal ---------------------------------------------------------------

    def record(self, state: EngineState, entry: JournalEntry) -> None:
        """Put on ``entry`` what changed in ``state`` since the last entry."""
        if self.failure is not None:
            raise self.failure
        if isinstance(entry, NodeStarted):
            self._tracker.begin(state)
            if state.in_flight != entry.node:
                return  # nothing changes between one node's end and the next one's start
        entry.__dict__["changes"] = self._tracker.changes(state)  # (no validation needed)

    async def flush(self) -> None:
        """Wait until everything journaled so far is on disk; raise if any of it failed."""
        if self.failure is None:
            await self.store.writer.flush()
        if self.failure is not None:
            raise self.failure

    # -- as the bus's subscriber ---------------------------------------------------------------

    def __call__(self, event: EventBase) -> None:
        row = Store.event_row(event, self.epoch)
        self._since_snapshot += len(row[-1])
        if self._capture is not None:
            self._capture.append(Statement(Store.EVENT_INSERT, row))
            return
        if self.failure is not None:
            return  # a gap now would corrupt the journal; the final snapshot closes it
        self.store.writer.write_soon(Store.EVENT_INSERT, row, self._failed)
        if self._since_snapshot >= self._snapshot_due() and isinstance(event, JournalEntry):
            self.snapshot(self.state, urgent=False)

    def _snapshot_due(self) -> int:
        return max(SNAPSHOT_MIN_BYTES, 2 * self._snapshot_bytes)

    def _landed(self, future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() else future.exception()  # (always retrieved)
        if error is not None:
            self._failed(error)

    def _failed(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error if isinstance(error, StoreError) else StoreError(str(error))
            log.error("run %s: journal write failed: %s", self.bus.run_id, error)

    def snapshot(self, state: EngineState, *, urgent: bool = True) -> asyncio.Future[None]:
        """Write a snapshot of the whole state now (a run's first is written with its row by
        :meth:`Store.create_run`); the future resolves once it is on disk."""
        text = state.model_dump_json(exclude_defaults=True)
        statements = self.store.snapshot_statements(self.bus.run_id, self.epoch, self.bus.seq, text)
        future = self.store.writer.write_all(statements, urgent=urgent)
        future.add_done_callback(self._landed)
        self._snapshot_bytes, self._since_snapshot = len(text), 0
        return future

    # -- the end -------------------------------------------------------------------------------

    def finish(self, state: RunState, report: str) -> asyncio.Future[None]:
        """The run's last entry (what changed since the engine's), its outcome (row, steps,
        report) and the release of its lease, in one transaction: a run is never left
        ``running`` by a crash in between. After a failed write it carries a full snapshot
        too, which closes the gap."""
        captured: list[Statement] = []
        self._capture = captured
        try:
            entry = Checkpoint(step=state.step)
            entry.__dict__["changes"] = self._tracker.changes(state)  # (no validation needed)
            self.bus.emit(entry)
        finally:
            self._capture = None
        statements: list[Statement] = captured
        if self.failure is not None or self._since_snapshot >= self._snapshot_due():
            text = state.model_dump_json(exclude_defaults=True)
            statements += self.store.snapshot_statements(
                state.run_id, self.epoch, self.bus.seq, text
            )
        statements += self.store.finish_statements(state, report, self.epoch)
        return self.store.writer.write_all(statements)

    # -- the lease -----------------------------------------------------------------------------

    async def keep_lease(self, on_lost: Callable[[StoreError], None]) -> None:
        """Renew the run's lease every third of its lifetime until cancelled. If it cannot be
        renewed because another process took the run over, the journal fails and ``on_lost``
        is told (the run must stop: none of its writes will land)."""
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            try:
                await self.store.renew_lease(self.bus.run_id, self.epoch)
            except LeaseLostError as exc:
                self.failure = self.failure or exc
                on_lost(exc)
                return
            except StoreError as exc:  # the disk: the journal's own writes will say so too
                log.warning("run %s: could not renew its lease: %s", self.bus.run_id, exc)


S = TypeVar("S", bound=EngineState)


def load_run(store: Store, run_id: str, state_type: type[S] = RunState) -> tuple[S, int]:  # type: ignore[assignment]
    """A run's state, rebuilt from its latest snapshot and the changes journaled after it, and
    the number of its last event."""
    latest = store.latest_snapshot(run_id)
    if latest is None:
        raise StoreError(f"run {run_id} has no snapshot in the database: it cannot be read back")
    seq, text = latest
    try:
        doc: dict[str, Any] = json.loads(text)
        for changes in store.changes_after(run_id, seq):
            apply_changes(doc, changes)
        state = state_type.model_validate(doc)
    except (ValueError, KeyError, IndexError, TypeError, ValidationError) as exc:
        raise StoreError(
            f"the journal of run {run_id} cannot be read back (its snapshot or a journal entry is "
            f"damaged: {type(exc).__name__}: {exc})"
        ) from None
    return state, max(seq, store.last_event_seq(run_id))
