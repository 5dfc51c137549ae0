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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trinity.agents import AgentContext, build_graph
from trinity.agents.atlas import check_steps
from trinity.agents.knowledge import Knowledge
from trinity.config import Settings
from trinity.engine import Engine, Limits, StoreCheckpointer, load_state
from trinity.errors import (
    ApprovalPendingError,
    ConfigError,
    InputError,
    PlanFileError,
    StoreError,
    TrinityError,
)
from trinity.llm.base import LLMProvider
from trinity.llm.pricing import PriceTable
from trinity.llm.registry import check_model, make_provider
from trinity.plans import load_plan_file, looks_like_plan_file
from trinity.report import render_report
from trinity.state import (
    PendingApproval,
    Plan,
    Policy,
    RunState,
    StepStatus,
    StopReason,
    Task,
    VerificationLevel,
)
from trinity.store import Store
from trinity.tools.base import ToolProvider
from trinity.tools.builtin import BUILTIN_SPECS, BuiltinTools
from trinity.tools.hub import ToolHub
from trinity.tools.mcp_config import McpConfig, load_mcp_config, parse_mcp_config
from trinity.tools.permissions import PermissionPolicy, audit_args

log = logging.getLogger(__name__)

EventCallback = Callable[[str, str | None, dict[str, Any]], None]
_FINALIZE_TIMEOUT_S = 10.0
CANCEL_POLL_S = 0.2
"""How often a running run looks for a cancel request from another process."""
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
        given = mcp_servers_file or s.mcp_servers_file
        mcp_file = str(Path(given).expanduser().resolve()) if given else None
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
            problems = check_steps(builtin, list(BUILTIN_SPECS), set())
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
        explicit = {
            **given,
            "max_replans": max_replans,
            "verification": VerificationLevel(verification) if verification else None,
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

    async def start(
        self, request: RunRequest, *, on_event: EventCallback | None = None
    ) -> RunState:
        """Run a prepared request to its end and return the final state.

        The run's id is in ``state.run_id`` and in the first event (``run_started``), so a
        caller can :meth:`cancel` it from another task.
        """
        state = RunState(
            run_id=uuid.uuid4().hex[:12],
            task=Task(
                text=request.task, plan_file=request.plan_file, workspace=str(request.workspace)
            ),
            model=request.model,
            plan=request.plan.model_copy(deep=True) if request.plan else None,
            policy=Policy(**request.limits()),
            requested=request.requested,
            permissions=request.permissions.to_data() if request.permissions else None,
            mcp_servers_file=request.mcp_servers_file,
            started_at=time.time(),
        )
        services = self._services(state)  # fails before anything is stored
        await self.store.create_run(state)
        return await self._drive(state, services, on_event, seq=0)

    async def resume(
        self,
        run_id: str,
        *,
        model: str | None = None,
        on_event: EventCallback | None = None,
    ) -> RunState:
        """Continue a run from its newest checkpoint (after a crash or a cancel).

        ``model`` replaces the model string the run was started with (say, when that was an
        in-process provider, or a key has changed). The deadline starts afresh.
        """
        row = self.store.get_run(run_id)
        if row is None:
            raise InputError(f"no run with id {run_id!r}")
        latest = self.store.latest_checkpoint(row["id"])
        if latest is None:
            raise StoreError(f"run {row['id']} has no checkpoint to resume from")
        state = load_state(RunState, latest[2])
        if state.stop_reason == StopReason.CANCELLED:
            state.stop_reason, state.stop_detail, state.finished_at = None, "", None
            state.next_node = state.next_node or "meta"
        if state.stop_reason == StopReason.AWAITING_APPROVAL:
            pending = state.pending_approval
            if pending is None or self._decision_on(state.run_id, pending) is None:
                raise ApprovalPendingError(state.run_id, _waiting_message(state))
            # decided (perhaps by a process that died before it could go on): Tetyana acts on it
            state.stop_reason, state.stop_detail, state.finished_at = None, "", None
        if state.stop_reason is not None:
            return state
        if model is not None:
            if self._llm is None:
                check_model(model, self.settings)
            self._check_price(model, state.policy.cost_budget_usd)
            state.model = model
        services = self._services(state)
        seq = self.store.last_event_seq(state.run_id)
        return await self._drive(state, services, on_event, seq=seq)

    async def approve(
        self,
        run_id: str,
        note: str | None = None,
        *,
        actor: str | None = None,
        on_event: EventCallback | None = None,
    ) -> RunState:
        """Approve the call a run waits for, then continue the run (the call is made once).

        The decision is durable and audited; ``actor`` defaults to the OS user.
        """
        return await self._decide(run_id, "approve", note, actor, on_event)

    async def deny(
        self,
        run_id: str,
        note: str | None = None,
        *,
        actor: str | None = None,
        on_event: EventCallback | None = None,
    ) -> RunState:
        """Refuse the call a run waits for, then continue the run: the step fails as
        "denied by <actor>" and the Meta-Planner goes on from there (replan or stop)."""
        return await self._decide(run_id, "deny", note, actor, on_event)

    async def _decide(
        self,
        run_id: str,
        decision: Literal["approve", "deny"],
        note: str | None,
        actor: str | None,
        on_event: EventCallback | None,
    ) -> RunState:
        row = self.store.get_run(run_id)
        if row is None:
            raise InputError(f"no run with id {run_id!r}")
        latest = self.store.latest_checkpoint(row["id"])
        state = load_state(RunState, latest[2]) if latest else None
        pending = state.pending_approval if state else None
        if state is None or state.stop_reason != StopReason.AWAITING_APPROVAL or not pending:
            raise InputError(f"run {row['id']} is not awaiting approval (status {row['status']})")
        self._services(state)  # a run that cannot continue here is refused before deciding
        who = actor or _os_user()
        recorded = await self.store.set_approval(
            state.run_id,
            pending.step_id,
            pending.attempt,
            decision,
            who,
            note,
            revision=pending.revision,
        )
        if not recorded:
            earlier = self._decision_on(state.run_id, pending) or {}
            raise InputError(
                f"the call run {state.run_id} waits for was already decided "
                f"({earlier.get('decision')} by {earlier.get('actor')}); if no process is "
                f"running it, `trinity runs resume {state.run_id}` continues it"
            )
        self.store.add_audit(
            state.run_id,
            pending.step_id,
            pending.tool,
            audit_args(pending.args),
            decision,
            pending.rule,
            note or "",
            who,
        )
        return await self.resume(state.run_id, on_event=on_event)

    def _decision_on(self, run_id: str, pending: PendingApproval) -> dict[str, Any] | None:
        return self.store.get_approval(
            run_id, pending.step_id, pending.attempt, revision=pending.revision
        )

    def cancel(self, run_id: str) -> bool:
        """Ask a run in this process to stop after its current node. True if it was running."""
        event = self._cancels.get(run_id)
        if event is None:
            return False
        event.set()
        return True

    def _services(self, state: RunState) -> tuple[LLMProvider | None, ToolProvider]:
        """The run's LLM and tools, made from its model string and workspace."""
        self._prices()  # a bad prices setting fails here, before the run is stored
        llm = self._llm
        if llm is None and state.model is not None:
            try:
                llm = make_provider(state.model, self.settings)
            except ConfigError as exc:
                raise ConfigError(f"run {state.run_id}: {exc}") from None
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
        return llm, tools

    async def _drive(
        self,
        state: RunState,
        services: tuple[LLMProvider | None, ToolProvider],
        on_event: EventCallback | None,
        seq: int,
    ) -> RunState:
        store = self.store
        counter = [seq]
        closed = [False]

        def emit(kind: str, node: str | None, data: dict[str, Any]) -> None:
            if closed[0]:
                # A node the engine abandoned, carrying on after the run ended: its events
                # would land after `run_finished` (or, after a resume, overwrite new ones).
                return
            counter[0] += 1
            store.add_event(state.run_id, counter[0], kind, node, data)
            if on_event is not None:
                try:
                    on_event(kind, node, data)
                except Exception:  # an observer's bug must not end the run it observes
                    log.warning("event callback failed on %s", kind, exc_info=True)

        llm, tools = services
        ctx = AgentContext(
            tools=tools,
            store=store,
            settings=self.settings,
            workspace=Path(state.task.workspace).resolve(),
            llm=llm,
            emit=emit,
            prices=self._prices(),
            permissions=(
                PermissionPolicy.from_data(state.permissions, source=f"run {state.run_id}")
                if state.permissions is not None
                else None
            ),
        )
        checkpointer = StoreCheckpointer(store)
        engine = Engine(build_graph(ctx), checkpointer=checkpointer, on_event=emit)
        cancel = self._cancels[state.run_id] = asyncio.Event()
        self.store.clear_cancel_request(state.run_id)  # an old request must not stop a resume
        watcher: asyncio.Task[None] | None = None
        try:
            if await self._start_tools(tools, state, emit):
                policy = state.policy
                limits = Limits(
                    max_steps=policy.max_steps,
                    deadline_s=policy.deadline_s,
                    node_timeout_s=policy.node_timeout_s,
                )
                run = asyncio.create_task(engine.run(state, limits, cancel))
                watcher = asyncio.create_task(self._watch_cancel(state, cancel, run, emit))
                try:
                    await run
                except asyncio.CancelledError:
                    # The watcher forced it (the run is checkpointed as cancelled); a cancel
                    # of this task itself (Ctrl-C) goes on up.
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            if watcher is not None:
                watcher.cancel()
            self._cancels.pop(state.run_id, None)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finalize(state, ctx, checkpointer))
            closed[0] = True
            if llm is not None and self._llm is None:
                await llm.aclose()
            if self._tools is None:
                await tools.aclose()
        return state

    async def _watch_cancel(
        self,
        state: RunState,
        cancel: asyncio.Event,
        run: asyncio.Task[RunState],
        emit: EventCallback,
    ) -> None:
        """Honour ``trinity runs cancel`` from another process: stop after the current node
        (cooperative); if the run is still going after the grace period, cancel it outright
        (forced: tool subprocesses are killed, the run is checkpointed as cancelled)."""
        while not run.done():
            await asyncio.sleep(CANCEL_POLL_S)
            request = self.store.cancel_request(state.run_id)
            if request is None:
                continue
            _, grace_s = request
            emit("cancel_requested", None, {"grace_s": grace_s})
            cancel.set()
            await asyncio.wait({run}, timeout=grace_s)
            if not run.done():
                emit("cancel_forced", None, {"after_s": grace_s})
                run.cancel()
            return

    @staticmethod
    async def _start_tools(tools: ToolProvider, state: RunState, emit: EventCallback) -> bool:
        """Start eager MCP servers. One that cannot start is reported and the run goes on with
        the tools it has (Atlas only sees what is listed); a broken tool set stops the run."""
        if not isinstance(tools, ToolHub):
            return True
        try:
            problems = await tools.start()
        except TrinityError as exc:  # e.g. two servers offering the same tool name
            state.stop_reason, state.stop_detail = StopReason.ERROR, str(exc)
            state.finished_at = time.time()
            return False
        for server, problem in problems.items():
            emit("tool_server_problem", None, {"server": server, "problem": str(problem)})
        return True

    async def _finalize(
        self, state: RunState, ctx: AgentContext, checkpointer: StoreCheckpointer
    ) -> None:
        """Close the books: steps cut off mid-way, lessons for runs that stopped outside the
        graph, the final checkpoint again (it must hold all of that), the report, the row."""
        for step in state.plan.steps if state.plan else []:
            if step.status == StepStatus.RUNNING:
                step.status = StepStatus.FAILED
        if state.lessons_stored == 0 and state.last_node != "learn":
            try:
                async with asyncio.timeout(_FINALIZE_TIMEOUT_S):
                    update = await Knowledge(ctx).learn(state)
                state.lessons_stored = update["lessons_stored"]
            except Exception:
                log.warning("could not store lessons for run %s", state.run_id, exc_info=True)
        checkpointer.save(
            state.run_id, state.step, state.next_node, state.model_dump_json(), durable=False
        )
        await self.store.finish_run(state, render_report(state))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _waiting_message(state: RunState) -> str:
    pending = state.pending_approval
    what = f"step {pending.step_id!r} ({pending.tool})" if pending else "a tool call"
    run = state.run_id
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
