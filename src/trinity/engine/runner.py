"""The run loop: node, route, checkpoint; until the router says END or a limit stops the run.

Guarantees owned here: the run deadline, the step budget, an optional per-node timeout,
cooperative and forced cancellation, and a journal entry per step (a durable one before every
side-effect node). Every way out of :meth:`run` leaves ``state.stop_reason`` set and a final
journal entry flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Literal

from trinity.engine.graph import END, Graph, S, StopRun
from trinity.engine.journal import Journal
from trinity.engine.watchdog import WATCHDOG, Overrun, _Watch
from trinity.errors import EngineError, StoreError
from trinity.events import (
    EventSink,
    JournalEntry,
    NodeAbandoned,
    NodeFinished,
    NodeStarted,
    RunError,
    RunFinished,
    RunStarted,
)
from trinity.state import EngineState, StopReason

log = logging.getLogger(__name__)

Durability = Literal["sync", "async"]
"""``sync``: every step waits for its journal entry to be on disk. ``async``: entries are
written behind the run (group-committed), and the engine waits for all of them before a
side-effect node runs and when the run ends. Both write one entry per step."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int | None = None
    """Node executions allowed (counting those before a resume)."""
    deadline_s: float | None = None
    """Wall-clock seconds this call of :meth:`Engine.run` may take."""
    node_timeout_s: float | None = None
    """Seconds any one node may take."""
    grace_s: float = 0.25
    """How long after the deadline (or a forced cancel) a node that ignores cancellation is
    waited for before it is abandoned and the run ends without it."""


@dataclass(slots=True)
class _Control:
    """What the supervisor of one run and its body share."""

    node: str | None = None
    """The node running now."""
    started: float = 0.0
    """``time.perf_counter()`` when it started."""
    deadline_at: float | None = None
    """The loop's ``time()`` of the run deadline."""
    deadline_hit: bool = False
    """The supervisor cancelled the body because the deadline passed."""
    forced: bool = False
    """The supervisor cancelled the body because the run was cancelled."""
    halt: bool = False
    """Any of: deadline hit, forced, abandoned (one check per step)."""
    abandoned: bool = False


class Engine(Generic[S]):
    def __init__(
        self,
        graph: Graph[S],
        *,
        journal: Journal | None = None,
        durability: Durability = "async",
        events: EventSink | None = None,
    ) -> None:
        self.graph = graph
        self.journal = journal
        self.durability = durability
        self.events = events

    async def run(
        self, state: S, limits: Limits = Limits(), cancel: asyncio.Event | None = None
    ) -> S:
        """Run from ``state.next_node`` (or the entry node) until the run stops.

        The state is updated in place and returned. A forced cancellation (``task.cancel()``)
        records ``StopReason.CANCELLED`` and a final journal entry, then re-raises.

        The run ends by ``limits.deadline_s + limits.grace_s`` whatever its nodes do: a node
        that ignores the deadline's cancellation is abandoned (left to finish on its own, its
        results ignored), and one that holds the event loop in CPU-bound Python is interrupted
        by the :mod:`~trinity.engine.watchdog`.
        """
        if state.stop_reason is not None:
            return state  # already ended: nothing to do
        if not state.started_at:
            state.started_at = time.time()
        node = state.next_node or self.graph.entry
        self._entry(state, RunStarted(start_node=node, step=state.step, resumed=state.step > 0))
        control = _Control()
        # The supervisor waits on a plain future, not on the body: cancelling a task that
        # awaits a task which swallows the cancellation would wait for that task forever. The
        # body settles it with False as it ends; the deadline's timer with True.
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[bool] = loop.create_future()
        body = asyncio.create_task(self._body(state, node, limits, cancel, control, ended))
        deadline = limits.deadline_s
        watch: _Watch | None = None
        timer: asyncio.TimerHandle | None = None
        if deadline is not None:
            control.deadline_at = loop.time() + deadline
            timer = loop.call_at(control.deadline_at, _settle, ended, True)
            watch = WATCHDOG.watch(deadline, limits.grace_s, f"run {state.run_id}")
        try:
            if await ended:
                await self._deadline(state, body, control, limits)
        except asyncio.CancelledError:
            control.forced = control.halt = True
            body.cancel()
            await _wait_through_cancels(body, limits.grace_s)
            if not body.done():
                self._abandon(state, body, control, limits.grace_s, StopReason.CANCELLED)
            if state.stop_reason is None:  # (a run that had just completed stays completed)
                self._stop(state, StopReason.CANCELLED, "cancelled (forced)")
            await _wait_through_cancels(asyncio.ensure_future(self._finish(state)), None)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if watch is not None:
                WATCHDOG.unwatch(watch)
        if state.stop_reason is None:
            # The body died of something no handler knew (say, a BaseException of a library's).
            error = body.exception() if body.done() and not body.cancelled() else None
            self._stop(
                state,
                StopReason.ERROR,
                _describe(error) if error else "the run ended without a stop reason",
            )
        await self._finish(state)
        return state

    async def _deadline(
        self, state: S, body: asyncio.Task[None], control: _Control, limits: Limits
    ) -> None:
        """The deadline passed: cancel the body, and abandon it if it is still going after
        the grace period."""
        if body.done():
            return
        control.deadline_hit = control.halt = True
        body.cancel()
        ended = asyncio.get_running_loop().create_future()
        body.add_done_callback(partial(_settle, ended, False))
        try:
            async with asyncio.timeout(limits.grace_s):
                await ended
        except TimeoutError:
            if not body.done():
                self._abandon(state, body, control, limits.grace_s, StopReason.DEADLINE)

    async def _body(
        self,
        state: S,
        node: str,
        limits: Limits,
        cancel: asyncio.Event | None,
        control: _Control,
        ended: asyncio.Future[bool],
    ) -> None:
        """The run itself; records why it stopped (the supervisor in :meth:`run` cancels it at
        the deadline), then settles ``ended``."""
        try:
            await self._stopping(state, node, limits, cancel, control)
        finally:
            _settle(ended, False)

    async def _stopping(
        self,
        state: S,
        node: str,
        limits: Limits,
        cancel: asyncio.Event | None,
        control: _Control,
    ) -> None:
        try:
            await self._loop(state, node, limits, cancel, control)
        except StopRun as stop:
            if not control.abandoned:
                self._stop(state, stop.reason, stop.detail)
        except asyncio.CancelledError:
            if control.abandoned:
                raise
            if not control.deadline_hit:
                self._stop(state, StopReason.CANCELLED, "cancelled (forced)")
                raise
            self._deadline_passed(state, control, limits)
        except Overrun:
            if not control.abandoned:
                self._overrun(state, control)
        except BaseExceptionGroup as group:
            # A TaskGroup in a node wraps what reached its children: Overrun, cancellation.
            if control.abandoned or group.subgroup((KeyboardInterrupt, SystemExit)):
                raise
            if group.subgroup(Overrun) is not None:
                self._overrun(state, control)
            elif control.deadline_hit:
                self._deadline_passed(state, control, limits)
            elif control.forced:
                self._stop(state, StopReason.CANCELLED, "cancelled (forced)")
                raise
            else:
                self._stop(state, StopReason.ERROR, _describe(group))
        except StoreError as exc:  # the journal could not be written: stop, say why plainly
            if not control.abandoned:
                self._stop(state, StopReason.ERROR, f"storage failed: {exc}")
        except Exception as exc:  # a node's own unhandled TimeoutError too
            if control.abandoned:
                return
            # Not log.exception: with logging unconfigured that prints a traceback to stderr for
            # every failed provider call. The traceback goes to the run's trace instead.
            log.debug("run %s failed", state.run_id, exc_info=True)
            self._stop(state, StopReason.ERROR, _describe(exc))
            if self.events:
                self.events(
                    RunError(node=state.next_node, traceback=traceback.format_exc(limit=20))
                )

    def _deadline_passed(self, state: S, control: _Control, limits: Limits) -> None:
        self._stop(
            state,
            StopReason.DEADLINE,
            f"run deadline of {limits.deadline_s:g}s passed{self._cut(state, control)}",
        )

    def _overrun(self, state: S, control: _Control) -> None:
        """The watchdog interrupted this run's node: only ever past some run's deadline, this
        run's or (with many runs on one loop) another's that the node kept from ending."""
        self._cut(state, control)
        late = control.deadline_hit or (
            control.deadline_at is not None
            and asyncio.get_running_loop().time() >= control.deadline_at
        )
        self._stop(
            state,
            StopReason.DEADLINE if late else StopReason.ERROR,
            f"node {control.node!r} held the event loop (CPU-bound code that never awaits) "
            "past a run deadline and was interrupted",
        )

    def _abandon(
        self,
        state: S,
        body: asyncio.Task[None],
        control: _Control,
        grace_s: float,
        reason: StopReason,
    ) -> None:
        """Give up on a node that did not stop within ``grace_s`` of being cancelled: the run
        ends now; the node's task is cancelled again and left to finish on its own, and nothing
        it does afterwards reaches the state's checkpoints."""
        control.abandoned = control.halt = True
        node = control.node
        body.cancel()
        _ABANDONED.add(body)
        body.add_done_callback(_forget)
        log.info("run %s: node %r ignored cancellation; abandoned", state.run_id, node)
        self._cut(state, control)
        what = "run deadline passed" if reason == StopReason.DEADLINE else "run was cancelled"
        self._stop(
            state,
            reason,
            f"{what}, and node {node!r} did not stop within {grace_s:g}s of being cancelled: "
            "it was abandoned (a tool or node that swallows cancellation)",
        )
        if self.events:
            self.events(NodeAbandoned(node=node, after_s=grace_s))

    async def _loop(
        self,
        state: S,
        node: str,
        limits: Limits,
        cancel: asyncio.Event | None,
        control: _Control,
    ) -> None:
        nodes = self.graph.nodes
        route = self.graph.router
        side_effects = self.graph.side_effect_nodes
        durable_before = self.graph.durable_before
        fields = type(state).model_fields
        # Plain attribute writes: pydantic's __setattr__ costs ~0.6 µs and validates nothing
        # here. A state model that asks for validate_assignment keeps pydantic's path.
        put = setattr if type(state).model_config.get("validate_assignment") else _put
        journal = self.journal
        sync = self.durability == "sync"
        recorded = journal is not None or self.events is not None  # else: no events to make
        max_steps = limits.max_steps
        node_timeout = limits.node_timeout_s
        clock = time.perf_counter
        while True:
            if cancel is not None and cancel.is_set():
                raise StopRun(StopReason.CANCELLED, "cancelled")
            if max_steps is not None and state.step >= max_steps:
                raise StopRun(StopReason.STEP_BUDGET, f"step budget of {max_steps} used")
            control.node = node
            fn = nodes.get(node)
            if fn is None:
                raise EngineError(f"router chose unknown node {node!r}")
            if node in side_effects and recorded:
                # Durable before the action: a resumed run then knows it may have happened.
                state.in_flight = node
                try:
                    self._entry(state, NodeStarted(node=node, step=state.step))
                    if journal is not None and (
                        durable_before is None or sync or durable_before(state, node)
                    ):
                        await journal.flush()
                except BaseException:
                    state.in_flight = None  # the action was not started
                    raise
            elif journal is not None:
                # Noted, not emitted: the previous node_finished's `next` says what starts.
                journal.record(state, NodeStarted(node=node, step=state.step))
            started = control.started = clock()
            if node_timeout is None:
                update = await fn(state)
            else:
                try:
                    async with asyncio.timeout(node_timeout):
                        update = await fn(state)
                except TimeoutError:
                    raise StopRun(
                        StopReason.TIMEOUT,
                        f"node {node!r} took longer than its timeout of {node_timeout:g}s",
                    ) from None
            if control.halt:  # the node ignored a cancel (and may have been abandoned)
                if control.abandoned:
                    return  # the run already ended without this node
                self._cut(state, control)
                raise StopRun(
                    StopReason.CANCELLED if control.forced else StopReason.DEADLINE,
                    f"{'cancelled (forced)' if control.forced else 'run deadline passed'}: "
                    f"node {node!r} carried on when cancelled, and the run stopped after it",
                )
            elapsed = clock() - started
            if update:
                for key, value in update.items():
                    if key not in fields:
                        raise EngineError(f"node {node!r} returned unknown state field {key!r}")
                    put(state, key, value)
            put(state, "step", state.step + 1)
            put(state, "last_node", node)
            state.node_seconds[node] = round(state.node_seconds.get(node, 0.0) + elapsed, 6)
            if state.in_flight is not None:
                state.in_flight = None
                state.interrupted = False
            following = route(state, node)
            if following == END:
                if state.stop_reason is None:
                    state.stop_reason = StopReason.COMPLETED
                put(state, "next_node", None)
            else:
                put(state, "next_node", following)
            if recorded:
                self._entry(
                    state,
                    NodeFinished(node=node, step=state.step, seconds=elapsed, next=following),
                )
            if following == END:
                return
            if sync and journal is not None:
                await journal.flush()
            node = following

    @staticmethod
    def _cut(state: S, control: _Control) -> str:
        """Count the time of the node the run ended in; say which it was."""
        node = control.node
        if node is None:
            return ""
        spent = time.perf_counter() - control.started
        state.node_seconds[node] = state.node_seconds.get(node, 0.0) + spent
        return f" during node {node!r} ({spent:.2f}s into it)"

    def _stop(self, state: S, reason: StopReason, detail: str) -> None:
        state.stop_reason = reason
        state.stop_detail = detail

    def _entry(self, state: S, entry: JournalEntry) -> None:
        """Journal what changed up to this boundary of the run, then emit it."""
        if self.journal is not None:
            self.journal.record(state, entry)
        if self.events is not None:
            self.events(entry)

    async def _finish(self, state: S) -> None:
        state.finished_at = time.time()
        entry = RunFinished(stop_reason=str(state.stop_reason), detail=state.stop_detail)
        journal = self.journal
        try:
            if journal is not None:
                journal.record(state, entry)
        except StoreError as exc:  # the caller closes the books (and reports it)
            log.warning("run %s: its last journal entry was not written: %s", state.run_id, exc)
        if self.events is not None:
            self.events(entry)
        if journal is not None:
            try:
                await journal.flush()
            except StoreError as exc:
                log.warning("run %s: its journal could not be flushed: %s", state.run_id, exc)


def resume_point(state: S) -> S:
    """Prepare a state read back from a journal for :meth:`Engine.run`: a side-effect node that
    was in flight when the run died runs again, marked ``interrupted`` (its action may or may
    not have happened, and the node must find out rather than blindly repeat it)."""
    if state.in_flight is not None:
        state.interrupted = True
        state.next_node = state.in_flight
    return state


_ABANDONED: set[asyncio.Task[None]] = set()
"""Abandoned node tasks, kept referenced until they end on their own."""


async def _wait_through_cancels(task: asyncio.Future[Any], timeout_s: float | None) -> None:
    """Wait for ``task`` up to ``timeout_s`` (``None``: until it is done), even if this task is
    cancelled again meanwhile: a second Ctrl-C must not skip closing the run's books."""
    loop = asyncio.get_running_loop()
    until = None if timeout_s is None else loop.time() + timeout_s
    while not task.done():
        left = None if until is None else until - loop.time()
        if left is not None and left <= 0:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=left)


def _settle(ended: asyncio.Future[bool], deadline: bool, *_: object) -> None:
    if not ended.done():
        ended.set_result(deadline)


def _forget(task: asyncio.Task[None]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned node task ended with %r", task.exception())


def _put(state: EngineState, name: str, value: Any) -> None:
    state.__dict__[name] = value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
