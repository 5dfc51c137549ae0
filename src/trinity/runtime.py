"""The Runtime: starts, resumes, approves and cancels runs, and owns the services.

Everything a user can get wrong is checked in :meth:`Runtime.prepare` (from
:class:`~trinity.requests.Preparation`), before anything is written, so a refused request leaves
nothing half-written in the store. Driving one run is :func:`trinity.execution.execute`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.config import Settings
from trinity.decisions import Decisions, waiting_message
from trinity.engine import resume_point
from trinity.errors import (
    ApprovalPendingError,
    ConfigError,
    DuplicateRunError,
    InputError,
    LeaseLostError,
    RunBusyError,
    StoreError,
)
from trinity.events import EventBus, EventSink
from trinity.execution import Services, close_books, execute
from trinity.llm.base import LLMProvider
from trinity.llm.pricing import PriceTable
from trinity.llm.registry import check_model, make_provider
from trinity.observability import tracing_asked
from trinity.queries import RunQueries
from trinity.requests import Preparation, RunRequest
from trinity.security.env import register_settings
from trinity.state import (
    Plan,
    Policy,
    RunState,
    RunStatus,
    StopReason,
    Task,
)
from trinity.store import Store
from trinity.store.journal import RunJournal, load_run
from trinity.store.lease import Owner, may_take_over, this_process
from trinity.tools.base import ToolProvider
from trinity.tools.builtin import BUILTIN_SPECS, BuiltinTools
from trinity.tools.hub import ToolHub
from trinity.tools.permissions import PermissionPolicy
from trinity.tools.reaper import REAPER, wait_for_reaper

if TYPE_CHECKING:
    from trinity.llm.ratelimit import RateLimiter
    from trinity.observability.metrics import RunMetrics

__all__ = ["RunRequest", "Runtime"]

log = logging.getLogger(__name__)

RESUMABLE = frozenset({StopReason.CANCELLED, StopReason.ERROR})
"""Stops a run can be resumed from: a cancel, and an error (a provider that failed for good, a
disk that was full) once its cause is fixed."""
_BUILTIN_NAMESPACES = frozenset(spec.name.split(".")[0] for spec in BUILTIN_SPECS)


class Runtime(Preparation, RunQueries, Decisions):
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        llm: LLMProvider | None = None,
        tools: ToolProvider | None = None,
        permissions: PermissionPolicy | None = None,
    ) -> None:
        """``llm`` and ``tools`` replace what the model string and workspace would make (tests,
        embedding applications); ``permissions`` replaces the policy the settings name."""
        self.settings = settings or Settings()
        register_settings(self.settings)
        self._store = store
        self._llm = llm
        self._tools = tools
        self._permissions = permissions
        self._cancels: dict[str, asyncio.Event] = {}
        self._price_table: PriceTable | None = None
        self._subscribers: list[EventSink] = []
        self._limiter: RateLimiter | None = None
        if self.settings.metrics_dir is not None:
            self.metrics()  # another process shows them (trinity metrics serve)
        if tracing_asked():
            from trinity.observability.tracing import process_tracer

            tracer = process_tracer()  # a bad exporter name is a ConfigError here
            if tracer is not None:
                self._subscribers.append(tracer)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(
                self.settings.database_url, synchronous=self.settings.sqlite_synchronous
            )
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- running -------------------------------------------------------------------------------

    def subscribe(self, subscriber: EventSink) -> None:
        """Hand every event of every run this Runtime executes to ``subscriber``, from now on
        (a server's live stream, metrics). Per-run subscribers go to :meth:`start` and the
        others."""
        self._subscribers.append(subscriber)

    def metrics(self) -> RunMetrics:
        """The process's Prometheus metrics, kept from this runtime's runs from now on (the
        server calls it; ``settings.metrics_dir`` makes every runtime call it)."""
        from trinity.observability.metrics import process_metrics

        sink = process_metrics(self.settings.metrics_dir)
        if sink not in self._subscribers:
            self._subscribers.append(sink)
        return sink

    async def start(
        self, request: RunRequest, *, subscribers: Iterable[EventSink] = ()
    ) -> RunState:
        """Run a prepared request to its end and return the final state.

        The run is stored, with its first snapshot, durably before it starts: from then on it
        can always be resumed. Its id is in ``state.run_id`` and in its events, so a caller can
        :meth:`cancel` it from another task. Raises :class:`RunNotRecordedError` when the run
        ended but its end could not be written (the error says how to finish it).
        """
        _, running = await self.launch(request, subscribers=subscribers)
        return await running

    async def launch(
        self,
        request: RunRequest,
        *,
        subscribers: Iterable[EventSink] = (),
        idempotency_key: str | None = None,
    ) -> tuple[str, asyncio.Task[RunState]]:
        """Store the run durably, then run it in a task of the current event loop: returns
        its id and that task (a server answers with the id at once). ``idempotency_key``
        is stored with the run; a second launch with the same key raises
        :class:`DuplicateRunError` naming the first run, and starts nothing."""
        state = RunState(
            run_id=uuid.uuid4().hex[:12],
            task=Task(
                text=request.task, plan_file=request.plan_file, workspace=str(request.workspace)
            ),
            model=request.model,
            # a copy, so one request can be started twice (through JSON: deepcopy is slower)
            plan=Plan.model_validate_json(request.plan.model_dump_json()) if request.plan else None,
            policy=Policy(**request.limits.model_dump(), on_interrupted=request.on_interrupted),
            requested=request.requested,
            permissions=request.permissions.to_data() if request.permissions else None,
            mcp_servers_file=request.mcp_servers_file,
            mcp_servers=request.mcp_servers,
            started_at=time.time(),
        )
        if idempotency_key is not None:
            earlier = self.store.run_with_key(idempotency_key)
            if earlier is not None:
                raise DuplicateRunError(earlier)
        services = self._services(state)  # fails before anything is stored
        snapshot = state.model_dump_json(exclude_defaults=True)
        try:
            await self.store.create_run(
                state, self._owner(), snapshot, idempotency_key=idempotency_key
            )
        except BaseException as exc:
            await services.aclose()
            raced = self.store.run_with_key(idempotency_key) if idempotency_key else None
            if isinstance(exc, StoreError) and raced is not None:
                raise DuplicateRunError(raced) from None  # another request won the race
            raise
        running = asyncio.create_task(
            self._execute(state, services, subscribers, 1, 0, len(snapshot)),
            name=f"trinity-run-{state.run_id}",
        )
        return state.run_id, running

    async def resume(
        self,
        run_id: str,
        *,
        model: str | None = None,
        subscribers: Iterable[EventSink] = (),
    ) -> RunState:
        """Continue a run: one that was cancelled, stopped by an error, or whose process died.

        The state is read back from the run's journal. A tool call that was in flight when its
        process died is handled by the run's ``on_interrupted`` policy. ``model`` replaces the
        model string the run was started with (say, when that was an in-process provider, or a
        key has changed). The deadline starts afresh. A run that another live process is
        executing is refused (:class:`RunBusyError`); one that ended is returned as it is (and
        its books closed, if its process died just before it could close them).
        """
        row = self._row(run_id)
        epoch = await self._take_lease(row)
        return await self._continue(row, epoch, model, subscribers, decide=None)

    async def _continue(
        self,
        row: dict[str, Any],
        epoch: int,
        model: str | None,
        subscribers: Iterable[EventSink],
        decide: Callable[[RunState], Awaitable[None]] | None,
    ) -> RunState:
        """Holding the run's lease (``epoch``): read the run back, and drive it on if it can
        go on; otherwise give the lease back."""
        run_id = row["id"]
        try:
            state, seq = load_run(self.store, run_id, RunState)
            journaled = state.model_copy()  # reopening only sets top-level fields
            if decide is not None:
                await decide(state)
            reason = state.stop_reason
            if reason in RESUMABLE or (
                reason == StopReason.AWAITING_APPROVAL and self._decided(state)
            ):
                state.stop_reason, state.stop_detail, state.finished_at = None, "", None
                state.next_node = state.next_node or "meta"
            elif reason == StopReason.AWAITING_APPROVAL:
                raise ApprovalPendingError(state.run_id, waiting_message(state))
            elif reason is not None:
                return await self._ended(row, state, seq, epoch)
            resume_point(state)
            if model is not None:
                if self._llm is None:
                    check_model(model, self.settings)
                self._check_price(model, state.policy.cost_budget_usd)
                state.model = model
            services = self._services(state)
        except BaseException:
            with contextlib.suppress(StoreError):
                await self.store.release_lease(run_id, epoch)
            raise
        try:
            await self.store.mark_running(run_id, epoch)
        except BaseException:
            await services.aclose()
            raise
        return await self._execute(state, services, subscribers, epoch, seq, journaled=journaled)

    async def _ended(self, row: dict[str, Any], state: RunState, seq: int, epoch: int) -> RunState:
        """A run that ended. If its process died after the end but before recording it (the
        row still says running), record it now."""
        if row["status"] != RunStatus.RUNNING:
            await self.store.release_lease(row["id"], epoch)
            return state
        bus = EventBus(state.run_id, seq=seq)
        journal = RunJournal(self.store, state, bus, epoch=epoch)
        bus.subscribe(journal)  # first, as in every run
        for subscriber in self._subscribers:
            bus.subscribe(subscriber)
        await close_books(state, journal, self.store, bus.emit)
        return state

    async def _take_lease(self, row: dict[str, Any]) -> int:
        """Become the executor of the run in ``row``; its new lease epoch. A run that a live
        process executes is refused with who that is. When this takes over from a process
        that died, its tool processes are gone before this returns (its reaper killed them)."""
        run_id = row["id"]
        allowed, holder = may_take_over(row["lease_owner"], row["lease_expires_at"])
        if not allowed:
            raise RunBusyError(run_id, f"run {run_id} is being executed elsewhere: {holder}")
        try:
            await self.store.take_lease(run_id, self._owner(), row["lease_epoch"])
        except LeaseLostError:
            again = self.store.get_run(run_id) or row
            _, holder = may_take_over(again["lease_owner"], again["lease_expires_at"])
            raise RunBusyError(
                run_id, f"run {run_id} was just taken by another process: {holder}"
            ) from None
        await wait_for_reaper(Owner.from_json(row["lease_owner"]))
        return int(row["lease_epoch"]) + 1

    def _owner(self) -> Owner:
        return this_process(REAPER.identity())

    async def cancel_run(self, run_id: str, grace_s: float = 5.0) -> str:
        """Stop a run wherever it runs: ask the process that executes it (it stops after its
        current step, or by force after ``grace_s``), or, when no process does any more (it
        died), record the run as cancelled here. Says which, in words."""
        row = self._row(run_id)
        if row["status"] != RunStatus.RUNNING:
            raise InputError(f"run {row['id']} is not running (status {row['status']})")
        allowed, _ = may_take_over(row["lease_owner"], row["lease_expires_at"])
        if not allowed:
            self.store.request_cancel(row["id"], grace_s)
            return (
                f"cancel requested for run {row['id']}: it stops after its current step, or "
                f"within {grace_s:g}s; `trinity runs resume {row['id']}` continues it later"
            )
        epoch = await self._take_lease(row)
        try:
            state, seq = load_run(self.store, row["id"], RunState)
        except BaseException:
            with contextlib.suppress(StoreError):
                await self.store.release_lease(row["id"], epoch)
            raise
        if state.stop_reason is None:
            state.stop_reason = StopReason.CANCELLED
            state.stop_detail = "cancelled while no process was running it (its process had died)"
            state.finished_at = time.time()
        await self._ended({**row, "status": RunStatus.RUNNING}, state, seq, epoch)
        return (
            f"run {row['id']} had no live process (it died); it is recorded as "
            f"{state.stop_reason.value}. `trinity runs resume {row['id']}` continues it"
        )

    def cancel(self, run_id: str) -> bool:
        """Ask a run in this process to stop after its current node. True if it was running."""
        event = self._cancels.get(run_id)
        if event is None:
            return False
        event.set()
        return True

    def _check_services(self, state: RunState) -> None:
        """Fail as :meth:`_services` would, without making anything."""
        self._prices()
        if self._llm is None and state.model is not None:
            try:
                check_model(state.model, self.settings)
            except ConfigError as exc:
                raise ConfigError(f"run {state.run_id}: {exc}") from None

    def _services(self, state: RunState) -> Services:
        """The run's LLM and tools, made from its model string and workspace."""
        self._check_services(state)  # a bad prices setting fails here, before the run is stored
        llm = self._llm
        if llm is None and state.model is not None:
            llm = make_provider(state.model, self.settings)
        tools = self._tools
        if tools is None:
            tools = self.tool_hub(
                state.task.workspace,
                state.mcp_servers_file,
                state.policy.tool_timeout_s,
                only=state.mcp_servers,
            )
        return Services(
            llm,
            tools,
            owns_llm=self._llm is None,
            owns_tools=self._tools is None,
            limiter=self._rate_limiter(),
        )

    def tool_hub(
        self,
        workspace: str | Path | None = None,
        mcp_servers_file: str | None = None,
        tool_timeout_s: float | None = None,
        *,
        only: list[str] | None = None,
    ) -> ToolHub:
        """The tools a run gets: the built-in ones in ``workspace`` (default: the settings'),
        under this runtime's sandbox, and the MCP servers of ``mcp_servers_file`` (``None``:
        the inline ``mcp_servers`` setting, if any), or ``only`` those of them named there.
        Not started: ``async with`` it."""
        root = workspace if workspace is not None else self.settings.workspace
        timeout = tool_timeout_s if tool_timeout_s is not None else self.settings.tool_timeout_s
        try:
            builtin = BuiltinTools(root, default_timeout_s=timeout, sandbox=self.sandbox())
        except OSError as exc:
            raise InputError(f"cannot use workspace {root}: {exc}") from None
        servers = self._mcp_config(mcp_servers_file).only(only)
        return ToolHub(servers, local=[builtin], default_timeout_s=timeout)

    def _rate_limiter(self) -> RateLimiter | None:
        """The process's rate limits (one limiter for every run of this runtime)."""
        if self._limiter is None and self.settings.rate_limits:
            from trinity.llm.ratelimit import RateLimiter

            self._limiter = RateLimiter(self.settings.rate_limits, self.settings.rate_limit_storage)
        return self._limiter

    async def _execute(
        self,
        state: RunState,
        services: Services,
        subscribers: Iterable[EventSink],
        epoch: int,
        seq: int,
        snapshot_bytes: int = 0,
        journaled: RunState | None = None,
    ) -> RunState:
        return await execute(
            state,
            services,
            store=self.store,
            settings=self.settings,
            prices=self._prices(),
            epoch=epoch,
            seq=seq,
            subscribers=[*self._subscribers, *subscribers],
            cancels=self._cancels,
            snapshot_bytes=snapshot_bytes,
            journaled=journaled,
        )
