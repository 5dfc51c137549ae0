"""A run's limits: one model for every place that names them.

:class:`RunLimits` is what a library call (``Runtime.prepare(limits=…)``), the CLI's options
(``--max-steps``, ``--timeout``…) and the API's ``POST /v1/runs`` body (``limits``) give, what a
:class:`~trinity.requests.RunRequest` carries and what the run's
:class:`~trinity.state.Policy` starts from (it extends this model). The settings of the same
names are the defaults: a field the caller did not set takes its setting
(:meth:`RunLimits.resolve`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trinity.errors import InputError

if TYPE_CHECKING:
    from trinity.config import Settings

RENAMED = {"deadline_s": "timeout_s"}
"""Names stored by earlier versions (in checkpoints, events and ``requested``) → today's."""


class RunLimits(BaseModel):
    """How far one run may go. A field left unset takes the setting of the same name."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(
        default=200, ge=1, le=1_000_000, description="Graph steps the run may take"
    )
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=30 * 86400,
        description="Wall-clock seconds the run may take (each start or resume gets it afresh)",
    )
    token_budget: int | None = Field(
        default=None, ge=1, description="LLM tokens the run may use; none: no budget"
    )
    cost_budget_usd: float | None = Field(
        default=None, gt=0, description="US dollars the run's LLM calls may cost; none: no budget"
    )
    node_timeout_s: float | None = Field(
        default=300.0,
        gt=0,
        description="Seconds one node (an agent's turn) may take; none: only the run's timeout",
    )
    llm_timeout_s: float = Field(
        default=60.0, gt=0, description="Seconds one LLM call attempt may take"
    )
    tool_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds one tool call may take, unless its server sets its own",
    )

    @classmethod
    def given(cls, **values: Any) -> RunLimits:
        """The limits a caller gave, skipping ``None`` (an option not given): bad values raise
        an :class:`InputError` naming the limit, its CLI option and its setting."""
        return cls.checked({name: value for name, value in values.items() if value is not None})

    @classmethod
    def checked(cls, data: dict[str, Any]) -> RunLimits:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise InputError(_said(error)) from None

    def resolve(self, settings: Settings) -> RunLimits:
        """These limits over the settings: each field set here wins, the rest are the settings'."""
        values = {name: getattr(settings, name) for name in RunLimits.model_fields}
        values.update(self.model_dump(include=self.model_fields_set))
        return RunLimits.checked(values)

    def explicit(self) -> dict[str, Any]:
        """The fields the caller set (they win over the Meta-Planner's choices)."""
        return self.model_dump(include=self.model_fields_set)


def renamed(data: Any) -> Any:
    """``data`` (a stored policy or ``requested``) with earlier versions' names made today's."""
    if isinstance(data, dict) and any(old in data for old in RENAMED):
        data = {RENAMED.get(key, key): value for key, value in data.items()}
    return data


def option(name: str) -> str:
    """A limit's CLI option: ``timeout_s`` → ``--timeout``, ``cost_budget_usd`` →
    ``--cost-budget``."""
    return "--" + re.sub(r"_(s|usd)$", "", name).replace("_", "-")


def _said(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "limits"
        where = (
            f" ({option(name)} / TRINITY_{name.upper()})" if name in RunLimits.model_fields else ""
        )
        parts.append(f"limit {name}: {problem['msg']}, got {problem.get('input')!r}{where}")
    return "; ".join(parts)
