"""The run loop: node, route, checkpoint; until the router says END or a limit stops the run.

Guarantees owned here: the run deadline, the step budget, an optional per-node timeout,
cooperative and forced cancellation, and one checkpoint per step. Every way out of :meth:`run`
leaves ``state.stop_reason`` set and a final durable checkpoint written.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal

from trinity.engine.checkpoint import Checkpointer
from trinity.engine.graph import END, Graph, S, StopRun
from trinity.errors import EngineError
from trinity.state import EngineState, StopReason

log = logging.getLogger(__name__)

Durability = Literal["sync", "async"]
"""``sync``: every step waits for its checkpoint to be on disk. ``async``: checkpoints are
written behind the run (group-committed), and the engine waits for all of them before a
side-effect node runs and when the run ends. Both write one checkpoint per step."""

EventSink = Callable[[str, str | None, dict[str, Any]], None]
"""``sink(kind, node, data)``, called synchronously on the event loop; must not block."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int | None = None
    """Node executions allowed (counting those before a resume)."""
    deadline_s: float | None = None
    """Wall-clock seconds this call of :meth:`Engine.run` may take."""
    node_timeout_s: float | None = None
    """Seconds any one node may take."""


class Engine(Generic[S]):
    def __init__(
        self,
        graph: Graph[S],
        *,
        checkpointer: Checkpointer | None = None,
        durability: Durability = "async",
        on_event: EventSink | None = None,
    ) -> None:
        self.graph = graph
        self.checkpointer = checkpointer
        self.durability = durability
        self.on_event = on_event

    async def run(
        self, state: S, limits: Limits = Limits(), cancel: asyncio.Event | None = None
    ) -> S:
        """Run from ``state.next_node`` (or the entry node) until the run stops.

        The state is updated in place and returned. A forced cancellation (``task.cancel()``)
        records ``StopReason.CANCELLED`` and a final checkpoint, then re-raises.
        """
        if state.stop_reason is not None:
            return state  # already ended: nothing to do
        if not state.started_at:
            state.started_at = time.time()
        node = state.next_node or self.graph.entry
        emit = self.on_event
        if emit:
            emit("run_started", None, {"run_id": state.run_id, "node": node, "step": state.step})
        deadline = asyncio.timeout(limits.deadline_s)
        try:
            async with deadline:
                await self._loop(state, node, limits, cancel)
        except TimeoutError as exc:
            if deadline.expired():
                self._stop(
                    state, StopReason.DEADLINE, f"run deadline of {limits.deadline_s:g}s passed"
                )
            else:  # a node's own timeout that it did not handle
                self._stop(state, StopReason.ERROR, _describe(exc))
        except StopRun as stop:
            self._stop(state, stop.reason, stop.detail)
        except asyncio.CancelledError:
            self._stop(state, StopReason.CANCELLED, "cancelled (forced)")
            await self._finish(state)
            raise
        except Exception as exc:
            # Not log.exception: with logging unconfigured that prints a traceback to stderr for
            # every failed provider call. The traceback goes to the run's trace instead.
            log.debug("run %s failed", state.run_id, exc_info=True)
            self._stop(state, StopReason.ERROR, _describe(exc))
            if emit:
                emit("error", state.next_node, {"traceback": traceback.format_exc(limit=20)})
        await self._finish(state)
        return state

    async def _loop(
        self, state: S, node: str, limits: Limits, cancel: asyncio.Event | None
    ) -> None:
        nodes = self.graph.nodes
        route = self.graph.router
        side_effects = self.graph.side_effect_nodes
        fields = type(state).model_fields
        # Plain attribute writes: pydantic's __setattr__ costs ~0.6 µs and validates nothing
        # here. A state model that asks for validate_assignment keeps pydantic's path.
        put = setattr if type(state).model_config.get("validate_assignment") else _put
        cp = self.checkpointer
        sync = self.durability == "sync"
        emit = self.on_event
        max_steps = limits.max_steps
        node_timeout = limits.node_timeout_s
        clock = time.perf_counter
        while True:
            if cancel is not None and cancel.is_set():
                raise StopRun(StopReason.CANCELLED, "cancelled")
            if max_steps is not None and state.step >= max_steps:
                raise StopRun(StopReason.STEP_BUDGET, f"step budget of {max_steps} used")
            fn = nodes.get(node)
            if fn is None:
                raise EngineError(f"router chose unknown node {node!r}")
            if node in side_effects and cp is not None:
                # Durable before the action; the writer is FIFO, so earlier checkpoints land too.
                state.in_flight = node
                marker = cp.save(
                    state.run_id, state.step, node, state.model_dump_json(), durable=True
                )
                if marker is not None:
                    await marker
            if emit:
                emit("node_started", node, {"step": state.step})
            started = clock()
            if node_timeout is None:
                update = await fn(state)
            else:
                try:
                    async with asyncio.timeout(node_timeout):
                        update = await fn(state)
                except TimeoutError:
                    raise StopRun(
                        StopReason.ERROR, f"node {node!r} took longer than {node_timeout:g}s"
                    ) from None
            elapsed = clock() - started
            if update:
                for key, value in update.items():
                    if key not in fields:
                        raise EngineError(f"node {node!r} returned unknown state field {key!r}")
                    put(state, key, value)
            put(state, "step", state.step + 1)
            put(state, "last_node", node)
            state.node_seconds[node] = state.node_seconds.get(node, 0.0) + elapsed
            if state.in_flight is not None:
                state.in_flight = None
                state.interrupted = False
            following = route(state, node)
            if emit:
                emit(
                    "node_finished",
                    node,
                    {"step": state.step, "seconds": elapsed, "next": following},
                )
            if following == END:
                if state.stop_reason is None:
                    state.stop_reason = StopReason.COMPLETED
                put(state, "next_node", None)
                return
            put(state, "next_node", following)
            if cp is not None:
                pending = cp.save(
                    state.run_id, state.step, following, state.model_dump_json(), durable=sync
                )
                if pending is not None:
                    await pending
            node = following

    def _stop(self, state: S, reason: StopReason, detail: str) -> None:
        state.stop_reason = reason
        state.stop_detail = detail

    async def _finish(self, state: S) -> None:
        state.finished_at = time.time()
        if self.on_event:
            self.on_event(
                "run_finished",
                None,
                {"stop_reason": str(state.stop_reason), "detail": state.stop_detail},
            )
        cp = self.checkpointer
        if cp is None:
            return
        cp.save(state.run_id, state.step, state.next_node, state.model_dump_json(), durable=False)
        await cp.flush()

    async def resume(
        self,
        run_id: str,
        state_type: type[S],
        limits: Limits = Limits(),
        cancel: asyncio.Event | None = None,
    ) -> S:
        """Continue a run from its newest checkpoint."""
        if self.checkpointer is None:
            raise EngineError("resume needs a checkpointer")
        latest = self.checkpointer.latest(run_id)
        if latest is None:
            raise EngineError(f"no checkpoint for run {run_id!r}")
        state = load_state(state_type, latest[2])
        return await self.run(state, limits, cancel)


def load_state(state_type: type[S], state_json: str) -> S:
    """Rebuild a state from a checkpoint; a node that was in flight is marked interrupted."""
    state = state_type.model_validate_json(state_json)
    if state.in_flight is not None:
        state.interrupted = True
        state.next_node = state.in_flight
    return state


def _put(state: EngineState, name: str, value: Any) -> None:
    state.__dict__[name] = value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
