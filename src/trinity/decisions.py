"""A person's word on a waiting run: approve or deny a tool call, answer a question.

:class:`Decisions` is a base of :class:`~trinity.runtime.Runtime`. A run waits for a person
(``StopReason.AWAITING_APPROVAL``, with ``state.pending_approval``) when its permission policy
asks before a call (``permission``), when ``on_interrupted = ask`` asks whether to make a call
cut off by a crash again (``rerun``), or when a ``person.ask`` step asks a question (``input``).
The decision is stored durably (with its audit row) before the run goes on, and the first
decision on a call stands.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from trinity.errors import InputError
from trinity.events import EventSink
from trinity.state import PendingApproval, RunState, RunStatus, StopReason
from trinity.tools.permissions import audit_args

if TYPE_CHECKING:
    from trinity.store import Store

MAX_ANSWER_CHARS = 20_000
Decision = Literal["approve", "deny", "answer"]


class Decisions:
    """Deciding what waiting runs wait for (the Runtime's third part)."""

    if TYPE_CHECKING:  # the Runtime's

        @property
        def store(self) -> Store: ...

        def _row(self, run_id: str) -> dict[str, Any]: ...

        async def _take_lease(self, row: dict[str, Any]) -> int: ...

        def _check_services(self, state: RunState) -> None: ...

        async def _continue(
            self,
            row: dict[str, Any],
            epoch: int,
            model: str | None,
            subscribers: Iterable[EventSink],
            decide: Callable[[RunState], Awaitable[None]] | None,
        ) -> RunState: ...

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
        return await self.decide(run_id, "approve", note, actor=actor, subscribers=subscribers)

    async def deny(
        self,
        run_id: str,
        note: str | None = None,
        *,
        actor: str | None = None,
        subscribers: Iterable[EventSink] = (),
    ) -> RunState:
        """Refuse what a run waits for, then continue the run: the step fails as
        "denied by <actor>" (a question: "declined by <actor>"; a re-run question: the step is
        judged by its checks) and the Meta-Planner goes on from there (replan or stop)."""
        return await self.decide(run_id, "deny", note, actor=actor, subscribers=subscribers)

    async def answer(
        self,
        run_id: str,
        text: str,
        *,
        actor: str | None = None,
        subscribers: Iterable[EventSink] = (),
    ) -> RunState:
        """Answer the question a run's ``person.ask`` step waits on, then continue the run:
        the answer is the step's output. With ``choices``, it must be one of them."""
        return await self.decide(run_id, "answer", text, actor=actor, subscribers=subscribers)

    async def decide(
        self,
        run_id: str,
        decision: Decision,
        note: str | None = None,
        *,
        actor: str | None = None,
        subscribers: Iterable[EventSink] = (),
    ) -> RunState:
        """:meth:`approve`, :meth:`deny` or :meth:`answer` (``note`` is the answer), by name:
        what the CLI, the API and the dashboard call."""
        if decision == "answer":
            if not (note or "").strip():
                raise InputError("the answer is empty")
            if len(note or "") > MAX_ANSWER_CHARS:
                raise InputError(f"the answer is {len(note or '')} characters; the limit is 20,000")
        row = self._row(run_id)
        if row["status"] != RunStatus.AWAITING_APPROVAL:
            raise InputError(f"run {row['id']} is not awaiting approval (status {row['status']})")
        epoch = await self._take_lease(row)

        async def record(state: RunState) -> None:
            pending = state.pending_approval
            if state.stop_reason != StopReason.AWAITING_APPROVAL or pending is None:
                raise InputError(f"run {state.run_id} is not awaiting approval")
            _check_fits(state.run_id, pending, decision, note)
            self._check_services(state)  # refused before deciding if it cannot go on
            who = actor or os_user()
            recorded = await self.store.set_approval(
                state.run_id,
                pending.step_id,
                pending.attempt,
                decision,
                who,
                note,
                revision=pending.revision,
                audit=(pending.tool, audit_args(pending.args), pending.rule),
                reason=_asked(pending),
            )
            if not recorded:
                earlier = self._decision_on(state.run_id, pending) or {}
                what = "question" if pending.question == "input" else "call"
                raise InputError(
                    f"the {what} run {state.run_id} waits for was already decided "
                    f"({earlier.get('decision')} by {earlier.get('actor')}); if no process is "
                    f"running it, `trinity runs resume {state.run_id}` continues it"
                )

        return await self._continue(row, epoch, None, subscribers, decide=record)

    def _decided(self, state: RunState) -> bool:
        pending = state.pending_approval
        return pending is not None and self._decision_on(state.run_id, pending) is not None

    def _decision_on(self, run_id: str, pending: PendingApproval) -> dict[str, Any] | None:
        return self.store.get_approval(
            run_id, pending.step_id, pending.attempt, revision=pending.revision
        )


def _check_fits(
    run_id: str, pending: PendingApproval, decision: Decision, text: str | None
) -> None:
    """A question is answered (or declined); a call is approved or denied."""
    if pending.question == "input":
        if decision == "approve":
            raise InputError(
                f"run {run_id} asks a question, not to approve a call: "
                f"`trinity runs answer {run_id} TEXT` answers it ({pending.reason[:200]!r})"
            )
        choices = [str(choice) for choice in pending.args.get("choices") or []]
        if decision == "answer" and choices and text not in choices:
            raise InputError(
                f"the answer must be one of {', '.join(repr(c) for c in choices)}, got {text!r}"
            )
    elif decision == "answer":
        raise InputError(
            f"run {run_id} waits for a decision on a call of {pending.tool}, not an answer: "
            f"approve or deny it"
        )


def os_user() -> str:
    """Who decides, when no actor is given: the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _asked(pending: PendingApproval) -> str:
    """What the audit log says a person was asked (a permission question needs no words)."""
    if pending.question == "rerun":
        return "re-run after a crash during the call"
    if pending.question == "input":
        return f"asked: {pending.reason[:200]}"
    return ""


def waiting_message(state: RunState) -> str:
    """What a run waits for, and the commands that decide it."""
    pending = state.pending_approval
    what = f"step {pending.step_id!r} ({pending.tool})" if pending else "a tool call"
    run = state.run_id
    if pending is not None and pending.question == "rerun":
        return (
            f"run {run} asks whether to make the call of {what} again (the run stopped during "
            f"it): `trinity runs approve {run}` makes it again, `trinity runs deny {run}` "
            "judges the step by its checks"
        )
    if pending is not None and pending.question == "input":
        return (
            f"run {run} asks a question at {what}: {pending.reason!r}: answer it with "
            f"`trinity runs answer {run} TEXT` or decline it with `trinity runs deny {run}`"
        )
    return (
        f"run {run} is awaiting approval of {what}: approve it with "
        f"`trinity runs approve {run}` or refuse it with `trinity runs deny {run}`"
    )
