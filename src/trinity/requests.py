"""Requests: what a user asks Trinity to run, checked before anything is stored.

:class:`Preparation` is a base of :class:`~trinity.runtime.Runtime`: :meth:`Preparation.prepare`
checks everything a user can get wrong (the task or plan file, the model and its key, the
workspace, the limits, the MCP servers, the permission policy, the database) and returns a
:class:`RunRequest`, so a refused request leaves nothing half-written in the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.agents.atlas import check_steps
from trinity.config import Settings
from trinity.errors import ConfigError, InputError, PlanFileError
from trinity.limits import RunLimits
from trinity.llm.base import LLMProvider
from trinity.llm.pricing import PriceTable
from trinity.llm.ratelimit import check_rate_limits
from trinity.llm.registry import check_model
from trinity.plans import PlanFile, load_plan_file, looks_like_plan_file
from trinity.state import OnInterrupted, Plan, VerificationLevel
from trinity.store import Store
from trinity.tools.base import ToolProvider
from trinity.tools.builtin import BUILTIN_SPECS
from trinity.tools.default_policy import MODEL_PLAN_DEFAULTS, MODEL_PLAN_DEFAULTS_SOURCE
from trinity.tools.mcp_config import McpConfig, load_mcp_config, parse_mcp_config
from trinity.tools.permissions import PermissionPolicy
from trinity.tools.policy_check import check_policy_tools
from trinity.tools.sandbox import Sandbox

_BUILTIN_NAMESPACES = frozenset(spec.name.split(".")[0] for spec in BUILTIN_SPECS)


@dataclass
class RunRequest:
    """A validated request to run something."""

    task: str
    workspace: Path
    model: str | None = None
    plan: Plan | None = None
    plan_file: str | None = None
    limits: RunLimits = field(default_factory=RunLimits)
    """The run's limits: the caller's over the settings (:meth:`RunLimits.resolve`)."""
    requested: dict[str, Any] = field(default_factory=dict)
    """The policy values the user gave explicitly (they win over the Meta-Planner's)."""
    permissions: PermissionPolicy | None = None
    """The tool permission policy; the run keeps it (in its state) when resumed."""
    mcp_servers_file: str | None = None
    """Absolute path of the MCP servers file, so a resume from another folder finds it."""
    mcp_servers: list[str] | None = None
    """The configured MCP servers the run may use, by name (``None``: all of them)."""
    on_interrupted: OnInterrupted = OnInterrupted.RECHECK
    """What a resume does about a tool call the run's process died during."""


class Preparation:
    """Checking requests (the Runtime's first half)."""

    settings: Settings
    _llm: LLMProvider | None
    _tools: ToolProvider | None
    _permissions: PermissionPolicy | None
    _price_table: PriceTable | None

    if TYPE_CHECKING:  # the Runtime's

        @property
        def store(self) -> Store: ...

    def sandbox(self) -> Sandbox:
        """How this runtime's commands are contained: the settings' profile, with the
        database's folder hidden from them."""
        return Sandbox.from_settings(self.settings, hidden=[self.store.path.parent])

    def prepare(
        self,
        target: str | PlanFile,
        *,
        model: str | None = None,
        workspace: str | Path | None = None,
        limits: RunLimits | None = None,
        verification: VerificationLevel | None = None,
        max_replans: int | None = None,
        permissions_file: str | Path | None = None,
        mcp_servers_file: str | Path | None = None,
        on_interrupted: OnInterrupted | str | None = None,
        mcp_servers: list[str] | None = None,
    ) -> RunRequest:
        """Check a task text or plan file and the options; raise a clear error or return a
        request that :meth:`start` can run. Nothing about the run is stored yet.

        ``limits``: the fields set in it win; the others are the settings' (``RunLimits()``
        or ``None``: all the settings').

        The permission policy is ``permissions_file``, else the Runtime's ``permissions``, else
        ``settings.permissions_file``, else ``settings.permissions`` (inline), else none."""
        s = self.settings
        plan: Plan | None = None
        plan_file: str | None = None
        if isinstance(target, PlanFile):  # a plan given as data (an API request's body)
            plan = target.to_plan()
            task = target.task.strip() or "inline plan"
            verification = verification or target.verification
        elif not target or not target.strip():
            raise InputError("the task is empty: give a task in words or a plan file path")
        elif looks_like_plan_file(target):
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
        chosen = mcp.only(mcp_servers)
        # Disabled servers too: the tool hub refuses any server that shadows a built-in namespace.
        clashing = sorted(set(mcp.servers) & _BUILTIN_NAMESPACES)
        if clashing:
            raise ConfigError(
                f"MCP server name(s) {clashing} clash with the built-in tools' namespaces "
                f"({', '.join(sorted(_BUILTIN_NAMESPACES))}): rename the server"
            )
        if chosen.enabled() and self._tools is None:
            # The MCP SDK (about 0.6 s to import) is loaded now, while the request is prepared,
            # rather than by the run: on the event loop, before the run's clock starts, where
            # it would stall every other run of this process.
            import trinity.tools.hub.server  # noqa: F401
        if plan is not None and plan_file is not None and self._tools is None:
            # Built-in tools are checked here; a server's tools are only known once it runs,
            # so for those the server must exist and the call validates the arguments.
            servers = {server.name for server in chosen.enabled()}
            builtin = [step for step in plan.steps if step.tool.split(".")[0] not in servers]
            problems = check_steps(list(builtin), list(BUILTIN_SPECS), set())
            if problems:
                raise PlanFileError(plan_file, "; ".join(problems))
        given = limits or RunLimits()
        resolved = given.resolve(s)
        if max_replans is None:
            max_replans = s.max_replans  # a setting fixes it too; else the Meta-Planner chooses
        if max_replans is not None and max_replans < 0:
            raise InputError(f"max replans cannot be negative, got {max_replans}")
        chosen_model = model if self._llm is None else (model or self._llm.model)
        self._check_price(chosen_model, resolved.cost_budget_usd)  # the table is checked too
        try:
            interrupted = OnInterrupted(on_interrupted or s.on_interrupted)
        except ValueError:
            choices = ", ".join(OnInterrupted)
            raise InputError(
                f"on_interrupted must be one of {choices}, got {on_interrupted!r}"
            ) from None
        explicit = {
            **given.explicit(),
            "max_replans": max_replans,
            "verification": VerificationLevel(verification) if verification else None,
            "on_interrupted": OnInterrupted(on_interrupted) if on_interrupted else None,
        }
        requested = {key: value for key, value in explicit.items() if value is not None}
        permissions = self._load_permissions(permissions_file)
        if s.rate_limits:
            check_rate_limits(s.rate_limits)
        if permissions is not None and self._tools is None:
            check_policy_tools(permissions, BUILTIN_SPECS, chosen.servers)
        store = self.store  # last: a bad database URL or a too-new schema is bad configuration
        if store.path.resolve().is_relative_to(root.resolve()):
            raise InputError(
                f"the database {store.path} is inside the workspace {root}: a step could "
                "rewrite the run's history and the lessons later runs learn from. Keep it "
                "elsewhere (--db / TRINITY_DATABASE_URL)"
            )
        unconfined = self._tools is None and not self.sandbox().active
        if permissions is None and plan is None and unconfined:
            # A model writes this plan and nothing contains its commands: a person approves
            # the ones that delete or reach outside the workspace.
            permissions = PermissionPolicy.from_data(
                MODEL_PLAN_DEFAULTS, source=MODEL_PLAN_DEFAULTS_SOURCE
            )
        return RunRequest(
            task=task,
            workspace=root.resolve(),
            model=chosen_model,
            plan=plan,
            plan_file=plan_file,
            limits=resolved,
            requested=requested,
            permissions=permissions,
            mcp_servers_file=mcp_file,
            mcp_servers=list(mcp_servers) if mcp_servers is not None else None,
            on_interrupted=interrupted,
        )

    def _prices(self) -> PriceTable:
        """The price table (settings' prices over genai-prices); a bad entry is a
        ``ConfigError``, raised before any run is stored."""
        if self._price_table is None:
            self._price_table = PriceTable(self.settings.prices)
        return self._price_table

    def _check_price(self, model: str | None, budget: float | None) -> None:
        prices = self._prices()  # built for every run: a bad entry is refused even unused
        if model is None:
            return
        # Looked up for every run, not only one with a budget: the lookup loads genai-prices
        # (0.2 s, once per process) here, before the run, not in its first LLM call on the loop.
        price = prices.lookup(model)
        if budget is not None and price is None:
            raise ConfigError(
                f"a cost budget needs the price of model {model!r}, and neither the prices "
                f"setting nor genai-prices has one: add it to the prices setting (in "
                f'trinity.toml: [prices."{model}"] with input_per_mtok and output_per_mtok, '
                "dollars per million tokens)"
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
