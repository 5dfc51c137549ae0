"""The Runtime: validates a request, starts, resumes and cancels runs, and owns the services.

Everything a user can get wrong is checked in :meth:`Runtime.prepare`, before anything is
written, so a refused request leaves nothing half-written in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trinity.agents.atlas import check_steps
from trinity.config import Settings
from trinity.engine import resume_point
from trinity.errors import (
    ApprovalPendingError,
    ConfigError,
    InputError,
    LeaseLostError,
    PlanFileError,
    RunBusyError,
    StoreError,
)
from trinity.events import EventBus, EventSink
from trinity.execution import Services, close_books, execute
from trinity.llm.base import LLMProvider
from trinity.llm.pricing import PriceTable
from trinity.llm.registry import check_model, make_provider
from trinity.plans import load_plan_file, looks_like_plan_file
from trinity.state import (
    OnInterrupted,
    PendingApproval,
    Plan,
    Policy,
    RunState,
    RunStatus,
    StopReason,
    Task,
    VerificationLevel,
)
from trinity.store import Store
from trinity.store.journal import RunJournal, load_run
from trinity.store.lease import Owner, may_take_over, this_process
from trinity.tools.base import ToolProvider
from trinity.tools.builtin import BUILTIN_SPECS, BuiltinTools
from trinity.tools.hub import ToolHub
from trinity.tools.mcp_config import McpConfig, load_mcp_config, parse_mcp_config
from trinity.tools.permissions import PermissionPolicy, audit_args
from trinity.tools.reaper import REAPER, wait_for_reaper

log = logging.getLogger(__name__)

RESUMABLE = frozenset({StopReason.CANCELLED, StopReason.ERROR})
"""Stops a run can be resumed from: a cancel, and an error (a provider that failed for good, a
disk that was full) once its cause is fixed."""
_BUILTIN_NAMESPACES = frozenset(spec.name.split(".")[0] for spec in BUILTIN_SPECS)


@dataclass
class RunRequest:
    """A validated request to run something."""

    task: str
    workspace: Path
    model: str | None = None
    plan: Plan | None = None
    plan_file: str | None = None
    max_steps: int = 200
    timeout_s: float = 600.0
    token_budget: int | None = None
    cost_budget_usd: float | None = None
    node_timeout_s: float | None = 300.0
    llm_timeout_s: float = 120.0
    tool_timeout_s: float = 120.0
    requested: dict[str, Any] = field(default_factory=dict)
    """The policy values the user gave explicitly (they win over the Meta-Planner's)."""
    permissions: PermissionPolicy | None = None
    """The tool permission policy; the run keeps it (in its state) when resumed."""
    mcp_servers_file: str | None = None
    """Absolute path of the MCP servers file, so a resume from another folder finds it."""
    on_interrupted: OnInterrupted = OnInterrupted.RECHECK
    """What a resume does about a tool call the run's process died during."""

    def limits(self) -> dict[str, Any]:
        """The run's limits, keyed as :class:`~trinity.state.Policy` names them."""
        return {
            "max_steps": self.max_steps,
            "deadline_s": self.timeout_s,
            "token_budget": self.token_budget,
            "cost_budget_usd": self.cost_budget_usd,
            "node_timeout_s": self.node_timeout_s,
            "llm_timeout_s": self.llm_timeout_s,
            "tool_timeout_s": self.tool_timeout_s,
        }


class Runtime:
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
        self._store = store
        self._llm = llm
        self._tools = tools
        self._permissions = permissions
        self._cancels: dict[str, asyncio.Event] = {}
        self._price_table: PriceTable | None = None
        self._subscribers: list[EventSink] = []

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

    # -- validation ----------------------------------------------------------------------------

    def prepare(
        self,
        target: str,
        *,
        model: str | None = None,
        workspace: str | Path | None = None,
        max_steps: int | None = None,
        timeout_s: float | None = None,
        verification: VerificationLevel | None = None,
        token_budget: int | None = None,
        max_replans: int | None = None,
        permissions_file: str | Path | None = None,
        mcp_servers_file: str | Path | None = None,
        cost_budget_usd: float | None = None,
        node_timeout_s: float | None = None,
        llm_timeout_s: float | None = None,
        tool_timeout_s: float | None = None,
        on_interrupted: OnInterrupted | str | None = None,
    ) -> RunRequest:
        """Check a task text or plan file and the options; raise a clear error or return a
        request that :meth:`start` can run. Nothing about the run is stored yet.

        The permission policy is ``permissions_file``, else the Runtime's ``permissions``, else
        ``settings.permissions_file``, else ``settings.permissions`` (inline), else none."""
        s = self.settings
        if not target or not target.strip():
            raise InputError("the task is empty: give a task in words or a plan file path")
        plan: Plan | None = None
        plan_file: str | None = None
        if looks_like_plan_file(target):
            plan_file = target.strip()
            parsed = load_plan_file(plan_file, max_bytes=s.max_plan_file_bytes)
            plan = parsed.to_plan()
            task = parsed.task.strip() or f"plan {Path(plan_file).name}"
            verification = verification or parsed.verification
        else:
            task = target.strip()
        if len(task) > s.max_task_chars:
            raise InputError(
                f"the task is {len(task)} characters; the limit is {s.max_task_chars} "
                "(TRINITY_MAX_TASK_CHARS)"
            )
        model = model or s.model
        if model is None and plan is None and self._llm is None:
            raise ConfigError(
                "a task in words needs a model: pass --model (scripted:FILE, openai:MODEL, "
                "anthropic:MODEL, openai-compatible:URL#MODEL) or set TRINITY_MODEL, "
                "or give a plan file"
            )
        if model is not None and self._llm is None:
            check_model(model, s)
        root = Path(workspace or s.workspace).expanduser()
        _check_workspace(root)
        servers_file = mcp_servers_file or s.mcp_servers_file
        mcp_file = str(Path(servers_file).expanduser().resolve()) if servers_file else None
        mcp = self._mcp_config(mcp_file)
        clashing = sorted({server.name for server in mcp.enabled()} & _BUILTIN_NAMESPACES)
        if clashing:
            raise ConfigError(
                f"MCP server name(s) {clashing} clash with the built-in tools' namespaces "
                f"({', '.join(sorted(_BUILTIN_NAMESPACES))}): rename the server"
            )
        if plan is not None and plan_file is not None and self._tools is None:
            # Built-in tools are checked here; a server's tools are only known once it runs,
            # so for those the server must exist and the call validates the arguments.
            servers = {server.name for server in mcp.enabled()}
            builtin = [step for step in plan.steps if step.tool.split(".")[0] not in servers]
            problems = check_steps(list(builtin), list(BUILTIN_SPECS), set())
            if problems:
                raise PlanFileError(plan_file, "; ".join(problems))
        given = {  # keyed as Policy names them
            "max_steps": max_steps,
            "deadline_s": timeout_s,
            "token_budget": token_budget,
            "cost_budget_usd": cost_budget_usd,
            "node_timeout_s": node_timeout_s,
            "llm_timeout_s": llm_timeout_s,
            "tool_timeout_s": tool_timeout_s,
        }
        limits = self._limits(**given)
        if max_replans is None:
            max_replans = s.max_replans  # a setting fixes it too; else the Meta-Planner chooses
        if max_replans is not None and max_replans < 0:
            raise InputError(f"max replans cannot be negative, got {max_replans}")
        chosen_model = model if self._llm is None else (model or self._llm.model)
        self._check_price(chosen_model, limits["cost_budget_usd"])  # the table is checked too
        try:
            interrupted = OnInterrupted(on_interrupted or s.on_interrupted)
        except ValueError:
            choices = ", ".join(OnInterrupted)
            raise InputError(
                f"on_interrupted must be one of {choices}, got {on_interrupted!r}"
            ) from None
        explicit = {
            **given,
            "max_replans": max_replans,
            "verification": VerificationLevel(verification) if verification else None,
            "on_interrupted": OnInterrupted(on_interrupted) if on_interrupted else None,
        }
        requested = {key: value for key, value in explicit.items() if value is not None}
        permissions = self._load_permissions(permissions_file)
        _ = self.store  # last: a bad database URL or a too-new schema is bad configuration
        return RunRequest(
            task=task,
            workspace=root.resolve(),
            model=chosen_model,
            plan=plan,
            plan_file=plan_file,
            max_steps=limits["max_steps"],
            timeout_s=limits["deadline_s"],
            token_budget=limits["token_budget"],
            cost_budget_usd=limits["cost_budget_usd"],
            node_timeout_s=limits["node_timeout_s"],
            llm_timeout_s=limits["llm_timeout_s"],
            tool_timeout_s=limits["tool_timeout_s"],
            requested=requested,
            permissions=permissions,
            mcp_servers_file=mcp_file,
            on_interrupted=interrupted,
        )

    def _limits(self, **given: float | None) -> dict[str, Any]:
        """The run's limits: each given value, else its setting; each checked to be positive
        (a clear error names the one that is not)."""
        s = self.settings
        names = {
            "max_steps": ("max steps", "--max-steps / TRINITY_MAX_STEPS"),
            "deadline_s": ("timeout", "--timeout / TRINITY_TIMEOUT_S"),
            "token_budget": ("token budget", "--token-budget / TRINITY_TOKEN_BUDGET"),
            "cost_budget_usd": ("cost budget", "--cost-budget / TRINITY_COST_BUDGET_USD"),
            "node_timeout_s": ("node timeout", "--node-timeout / TRINITY_NODE_TIMEOUT_S"),
            "llm_timeout_s": ("LLM timeout", "--llm-timeout / TRINITY_LLM_TIMEOUT_S"),
            "tool_timeout_s": ("tool timeout", "--tool-timeout / TRINITY_TOOL_TIMEOUT_S"),
        }
        setting = {"deadline_s": "timeout_s"}
        limits: dict[str, Any] = {}
        for key, (label, where) in names.items():
            value = given[key]
            if value is None:
                value = getattr(s, setting.get(key, key))
            if value is not None and not value > 0:
                raise InputError(f"{label} must be more than 0, got {value} ({where})")
            limits[key] = value
        return limits

    def _prices(self) -> PriceTable:
        """The price table (settings' prices over the built-in ones); a bad entry is a
        ``ConfigError``, raised before any run is stored."""
        if self._price_table is None:
            self._price_table = PriceTable(self.settings.prices)
        return self._price_table

    def _check_price(self, model: str | None, budget: float | None) -> None:
        prices = self._prices()
        if budget is not None and model is not None and prices.lookup(model) is None:
            raise ConfigError(
                f"a cost budget needs the price of model {model!r}, and the price table has "
                f'none: add it to the prices setting (in trinity.toml: [prices."{model}"] with '
                "input_per_mtok and output_per_mtok, dollars per million tokens)"
            )

    def _mcp_config(self, path: str | None) -> McpConfig:
        """The MCP servers: a file (``--mcp`` or the setting), else inline settings, else none."""
        if path is not None:
            return load_mcp_config(path)
        if self.settings.mcp_servers:
            return parse_mcp_config(
                {"servers": self.settings.mcp_servers}, source="mcp_servers setting"
            )
        return McpConfig()

    def _load_permissions(self, path: str | Path | None) -> PermissionPolicy | None:
        s = self.settings
        if path is not None:
            return PermissionPolicy.load(path)
        if self._permissions is not None:
            return self._permissions
        if s.permissions_file is not None:
            return PermissionPolicy.load(s.permissions_file)
        if s.permissions is not None:
            return PermissionPolicy.from_data(
                s.permissions, source="permissions setting (trinity.toml or TRINITY_PERMISSIONS)"
            )
        return None

    # -- running -------------------------------------------------------------------------------

    def subscribe(self, subscriber: EventSink) -> None:
        """Hand every event of every run this Runtime executes to ``subscriber``, from now on
        (a server's live stream, metrics). Per-run subscribers go to :meth:`start` and the
        others."""
        self._subscribers.append(subscriber)

    async def start(
        self, request: RunRequest, *, subscribers: Iterable[EventSink] = ()
    ) -> RunState:
        """Run a prepared request to its end and return the final state.

        The run is stored, with its first snapshot, durably before it starts: from then on it
        can always be resumed. Its id is in ``state.run_id`` and in its events, so a caller can
        :meth:`cancel` it from another task. Raises :class:`RunNotRecordedError` when the run
        ended but its end could not be written (the error says how to finish it).
        """
        state = RunState(
            run_id=uuid.uuid4().hex[:12],
            task=Task(
                text=request.task, plan_file=request.plan_file, workspace=str(request.workspace)
            ),
            model=request.model,
            plan=request.plan.model_copy(deep=True) if request.plan else None,
            policy=Policy(**request.limits(), on_interrupted=request.on_interrupted),
            requested=request.requested,
            permissions=request.permissions.to_data() if request.permissions else None,
            mcp_servers_file=request.mcp_servers_file,
            started_at=time.time(),
        )
        services = self._services(state)  # fails before anything is stored
        snapshot = state.model_dump_json(exclude_defaults=True)
        try:
            await self.store.create_run(state, self._owner(), snapshot)
        except BaseException:
            await services.aclose()
            raise
        return await self._execute(state, services, subscribers, 1, 0, len(snapshot))

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

    async def approve(
        self,
        run_id: str,
        note: str | None = None,
        *,
        actor: str | None = None,
        subscribers: Iterable[EventSink] = (),
    ) -> RunState:
        """Approve the call a run waits for, then continue the run (the call is made once).

        The decision and its audit row are written in one durable transaction; ``actor``
        defaults to the OS user."""
        return await self._decide(run_id, "approve", note, actor, subscribers)

    async def deny(
        self,
        run_id: str,
        note: str | None = None,
        *,
        actor: str | None = None,
        subscribers: Iterable[EventSink] = (),
    ) -> RunState:
        """Refuse the call a run waits for, then continue the run: the step fails as
        "denied by <actor>" (for a re-run question: the step is judged by its checks) and the
        Meta-Planner goes on from there (replan or stop)."""
        return await self._decide(run_id, "deny", note, actor, subscribers)

    async def _decide(
        self,
        run_id: str,
        decision: Literal["approve", "deny"],
        note: str | None,
        actor: str | None,
        subscribers: Iterable[EventSink],
    ) -> RunState:
        row = self._row(run_id)
        if row["status"] != RunStatus.AWAITING_APPROVAL:
            raise InputError(f"run {row['id']} is not awaiting approval (status {row['status']})")
        epoch = await self._take_lease(row)

        async def record(state: RunState) -> None:
            pending = state.pending_approval
            if state.stop_reason != StopReason.AWAITING_APPROVAL or pending is None:
                raise InputError(f"run {state.run_id} is not awaiting approval")
            self._check_services(state)  # refused before deciding if it cannot go on
            who = actor or _os_user()
            recorded = await self.store.set_approval(
                state.run_id,
                pending.step_id,
                pending.attempt,
                decision,
                who,
                note,
                revision=pending.revision,
                audit=(pending.tool, audit_args(pending.args), pending.rule),
                reason=_REASONS[pending.question],
            )
            if not recorded:
                earlier = self._decision_on(state.run_id, pending) or {}
                raise InputError(
                    f"the call run {state.run_id} waits for was already decided "
                    f"({earlier.get('decision')} by {earlier.get('actor')}); if no process is "
                    f"running it, `trinity runs resume {state.run_id}` continues it"
                )

        return await self._continue(row, epoch, None, subscribers, decide=record)

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
                raise ApprovalPendingError(state.run_id, _waiting_message(state))
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

    def _decided(self, state: RunState) -> bool:
        pending = state.pending_approval
        return pending is not None and self._decision_on(state.run_id, pending) is not None

    def _decision_on(self, run_id: str, pending: PendingApproval) -> dict[str, Any] | None:
        return self.store.get_approval(
            run_id, pending.step_id, pending.attempt, revision=pending.revision
        )

    def _row(self, run_id: str) -> dict[str, Any]:
        row = self.store.get_run(run_id)
        if row is None:
            raise InputError(f"no run with id {run_id!r}")
        return row

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
            try:
                builtin = BuiltinTools(
                    state.task.workspace, default_timeout_s=state.policy.tool_timeout_s
                )
            except OSError as exc:
                raise InputError(f"cannot use workspace {state.task.workspace}: {exc}") from None
            tools = ToolHub(
                self._mcp_config(state.mcp_servers_file),
                local=[builtin],
                default_timeout_s=state.policy.tool_timeout_s,
            )
        return Services(llm, tools, owns_llm=self._llm is None, owns_tools=self._tools is None)

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


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


_REASONS = {"permission": "", "rerun": "re-run after a crash during the call"}
"""What the audit log says a person was asked (a permission question needs no words)."""


def _waiting_message(state: RunState) -> str:
    pending = state.pending_approval
    what = f"step {pending.step_id!r} ({pending.tool})" if pending else "a tool call"
    run = state.run_id
    if pending is not None and pending.question == "rerun":
        return (
            f"run {run} asks whether to make the call of {what} again (the run stopped during "
            f"it): `trinity runs approve {run}` makes it again, `trinity runs deny {run}` "
            "judges the step by its checks"
        )
    return (
        f"run {run} is awaiting approval of {what}: approve it with "
        f"`trinity runs approve {run}` or refuse it with `trinity runs deny {run}`"
    )


def _check_workspace(root: Path) -> None:
    """The workspace is a directory, or can be made as one (checked without making it)."""
    if root.exists():
        if not root.is_dir():
            raise InputError(f"workspace {root} exists and is not a directory")
        if not os.access(root, os.W_OK | os.X_OK):
            raise InputError(f"cannot use workspace {root}: not writable")
        return
    parent = root.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot use workspace {root}: cannot create it under {parent}")
