"""What the runtime tells about runs, as typed records: the answers of
:class:`~trinity.queries.RunQueries` (``Runtime.get_run``, ``list_runs``, ``events``…), which
the CLI and the HTTP API both show. Neither reads the store itself."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trinity.errors import InputError
from trinity.state import RunState

RunStatus = Literal["running", "succeeded", "failed", "cancelled", "awaiting_approval"]


class RunSummary(BaseModel):
    """One run as a list shows it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task: str
    plan_file: str | None = None
    model: str | None = None
    workspace: str
    status: str
    """As stored: ``running``, ``succeeded``, ``failed``, ``cancelled``, ``awaiting_approval``."""
    shown_status: str
    """What people need: a ``running`` run whose process is gone is ``interrupted``."""
    stop_reason: str | None = None
    stop_detail: str = ""
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    created_at: float
    finished_at: float | None = None
    cancel_requested: bool = False
    lease_owner: str | None = None
    """The process executing it (JSON: host, pid, start time), while one does."""
    lease_expires_at: float | None = None


class RunDetail(RunSummary):
    """One run, whole: its report and its state (steps, verdicts, usage) as its journal has it."""

    report: str = ""
    state: RunState | None = None


class RunFilter(BaseModel):
    """Which runs :meth:`~trinity.queries.RunQueries.list_runs` returns (all given ones hold)."""

    model_config = ConfigDict(extra="forbid")

    status: list[str] | None = None
    stop_reason: list[str] | None = None
    since: float | None = None
    """Created at or after (seconds since the epoch)."""
    until: float | None = None
    """Created before."""
    text: str | None = Field(default=None, max_length=500)
    """Words in the task, as a substring (case-insensitive)."""


class RunPage(BaseModel):
    """A page of runs, newest first; ``next_cursor`` fetches the next one (``None``: the end)."""

    runs: list[RunSummary]
    next_cursor: str | None = None


class EventRecord(BaseModel):
    """One event of a run's journal as stored: ``data`` holds the kind's own fields."""

    run_id: str
    seq: int
    ts: float
    kind: str
    node: str | None = None
    data: dict[str, Any]


class AuditEntry(BaseModel):
    """One permission decision: the policy's (allow / ask / deny) or a person's."""

    run_id: str
    step_id: str | None = None
    tool: str
    args: dict[str, Any]
    decision: str
    rule: int | None = None
    reason: str = ""
    actor: str
    ts: float


def encode_cursor(created_at: float, run_id: str) -> str:
    """An opaque cursor for the run after (older than) ``(created_at, run_id)``."""
    return base64.urlsafe_b64encode(f"{created_at!r}|{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, run_id = raw.partition("|")
        return float(created), run_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InputError(f"bad cursor {cursor[:40]!r}: pass back a next_cursor as given") from None
