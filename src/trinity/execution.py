"""One run being executed by this process: its event bus and journal, the engine, the lease it
holds, the watchers that may stop it, and the closing of its books.

:func:`execute` is what :class:`~trinity.runtime.Runtime` calls once it has a run to drive (new,
resumed or approved) and holds its lease. Whatever happens (completion, a stop, Ctrl-C, SIGTERM,
a storage failure, the lease lost to another process), it ends with the run's final transaction
(last checkpoint, status, report, lease released) or, when that cannot be written, with a
:class:`~trinity.errors.RunNotRecordedError` that says so and how to finish the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trinity.agents import AgentContext, build_graph
from trinity.agents.knowledge import store_lessons
from trinity.config import Settings
from trinity.engine import Engine, Limits
from trinity.errors import LeaseLostError, RunNotRecordedError, StoreError, TrinityError
from trinity.events import (
    CancelForced,
    CancelRequested,
    EventBus,
    EventSink,
    ToolServerProblem,
)
from trinity.llm.base import LLMProvider
from trinity.llm.pricing import PriceTable
from trinity.report import render_report
from trinity.state import RunState, StepStatus, StopReason
from trinity.store import Store
from trinity.store.journal import RunJournal
from trinity.tools.base import ToolProvider

if TYPE_CHECKING:
    from trinity.llm.ratelimit import RateLimiter

log = logging.getLogger(__name__)

_FINALIZE_TIMEOUT_S = 10.0
CANCEL_POLL_S = 0.2
"""How often a running run looks for a cancel request from another process."""


@dataclass
class Services:
    """What a run works with."""

    llm: LLMProvider | None
    tools: ToolProvider
    owns_llm: bool
    """The LLM was made for this run (closed when it ends), not lent by the Runtime's caller."""
    owns_tools: bool
    limiter: RateLimiter | None = None
    """The process's rate limits for model calls (``None``: none configured)."""

    async def aclose(self) -> None:
        """Close what was made for the run."""
        if self.owns_llm and self.llm is not None:
            await self.llm.aclose()
        if self.owns_tools:
            await self.tools.aclose()


async def execute(
    state: RunState,
    services: Services,
    *,
    store: Store,
    settings: Settings,
    prices: PriceTable,
    epoch: int,
    seq: int,
    subscribers: Iterable[EventSink],
    cancels: dict[str, asyncio.Event],
    snapshot_bytes: int = 0,
    journaled: RunState | None = None,
) -> RunState:
    """Drive ``state`` to its end as the holder of lease ``epoch``; its events are numbered
    from ``seq + 1``. ``journaled`` is the state as its journal has it, when ``state`` differs
    (a resume reopened it)."""
    bus = EventBus(state.run_id, seq=seq)
    journal = RunJournal(
        store, state, bus, epoch=epoch, snapshot_bytes=snapshot_bytes, journaled=journaled
    )
    bus.subscribe(journal)  # first: the journal is the record every other view is built from
    for subscriber in subscribers:
        bus.subscribe(subscriber)
    from trinity.tools.permissions import PermissionPolicy  # (only a run that has one needs it)

    ctx = AgentContext(
        tools=services.tools,
        store=store,
        settings=settings,
        workspace=Path(state.task.workspace).resolve(),
        llm=(
            services.limiter.wrap(services.llm, state.model or services.llm.model, bus.emit)
            if services.limiter is not None and services.llm is not None
            else services.llm
        ),
        emit=bus.emit,
        prices=prices,
        permissions=(
            PermissionPolicy.from_data(state.permissions, source=f"run {state.run_id}")
            if state.permissions is not None
            else None
        ),
    )
    engine = Engine(build_graph(ctx), journal=journal, events=bus.emit)
    cancel = cancels[state.run_id] = asyncio.Event()
    helpers: list[asyncio.Task[None]] = []
    closing: BaseException | None = None
    try:
        if await _start_tools(services.tools, state, bus):
            policy = state.policy
            limits = Limits(
                max_steps=policy.max_steps,
                deadline_s=policy.timeout_s,
                node_timeout_s=policy.node_timeout_s,
            )
            run = asyncio.create_task(engine.run(state, limits, cancel))
            helpers.append(asyncio.create_task(_watch_cancel(store, state, cancel, run, bus)))
            helpers.append(asyncio.create_task(journal.keep_lease(lambda _: _stop(run))))
            try:
                await run
            except asyncio.CancelledError:
                # A watcher forced it (the run recorded why); a cancel of this task itself
                # (Ctrl-C, SIGTERM) goes on up.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
    finally:
        for helper in helpers:
            helper.cancel()
        cancels.pop(state.run_id, None)
        try:
            await asyncio.shield(close_books(state, journal, store, bus.emit))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            closing = exc
        bus.close()
        await services.aclose()
    if closing is not None:
        raise _not_recorded(state, journal, closing)
    return state


async def close_books(state: RunState, journal: RunJournal, store: Store, emit: EventSink) -> None:
    """Steps cut off mid-way, lessons for runs that stopped outside the graph, then the final
    transaction: last journal entry, report, row, lease."""
    for step in state.plan.steps if state.plan else []:
        if step.status == StepStatus.RUNNING:
            step.status = StepStatus.FAILED
    if state.finished_at is None:
        state.finished_at = time.time()
    if journal.failure is None and state.lessons_stored == 0 and state.last_node != "learn":
        try:
            async with asyncio.timeout(_FINALIZE_TIMEOUT_S):
                state.lessons_stored = await store_lessons(state, store, emit)
        except Exception:
            log.warning("could not store lessons for run %s", state.run_id, exc_info=True)
    await journal.finish(state, render_report(state))


def _not_recorded(state: RunState, journal: RunJournal, error: BaseException) -> TrinityError:
    run = state.run_id
    reason = state.stop_reason.value if state.stop_reason else "running"
    if isinstance(error, LeaseLostError) or isinstance(journal.failure, LeaseLostError):
        return RunNotRecordedError(
            state,
            f"run {run} was taken over by another process (it resumed the run after this one "
            "stopped renewing its lease); this process stopped it without recording more",
        )
    cause = error if isinstance(error, StoreError) else f"{type(error).__name__}: {error}"
    return RunNotRecordedError(
        state,
        f"run {run} stopped ({reason}) but its end could not be recorded: {cause}. Its journal "
        f"holds everything up to the failure: once the database can be written again, "
        f"`trinity runs resume {run}` finishes it",
    )


async def _watch_cancel(
    store: Store,
    state: RunState,
    cancel: asyncio.Event,
    run: asyncio.Task[RunState],
    bus: EventBus,
) -> None:
    """Honour ``trinity runs cancel`` from another process: stop after the current node
    (cooperative); if the run is still going after the grace period, cancel it outright
    (forced: tool subprocesses are killed, the run is recorded as cancelled)."""
    while not run.done():
        await asyncio.sleep(CANCEL_POLL_S)
        with contextlib.suppress(StoreError):  # a busy or failing disk: look again later
            request = store.cancel_request(state.run_id)
            if request is None:
                continue
            _, grace_s = request
            bus.emit(CancelRequested(grace_s=grace_s))
            cancel.set()
            await asyncio.wait({run}, timeout=grace_s)
            if not run.done():
                bus.emit(CancelForced(after_s=grace_s))
                run.cancel()
            return


async def _start_tools(tools: ToolProvider, state: RunState, bus: EventBus) -> bool:
    """Start eager MCP servers. One that cannot start is reported and the run goes on with the
    tools it has (Atlas only sees what is listed); a broken tool set stops the run."""
    from trinity.tools.hub import ToolHub

    if not isinstance(tools, ToolHub):
        return True
    try:
        problems = await tools.start()
    except TrinityError as exc:  # e.g. two servers offering the same tool name
        state.stop_reason, state.stop_detail = StopReason.ERROR, str(exc)
        state.finished_at = time.time()
        return False
    for server, problem in problems.items():
        bus.emit(ToolServerProblem(server=server, problem=str(problem)))
    return True


def _stop(run: asyncio.Task[RunState]) -> None:
    """The run lost its lease: none of its writes can land, so it stops now."""
    run.cancel()
