"""Where the server's runs execute: tasks in its own event loop (the embedded mode). The API
asks only for :meth:`RunExecutor.launch` and :meth:`RunExecutor.continue_run`, so another
executor (workers on a job queue) can take its place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from trinity.decisions import Decision
from trinity.events import EventBase, EventSink
from trinity.requests import RunRequest
from trinity.runtime import Runtime
from trinity.state import RunState

log = logging.getLogger(__name__)


class RunExecutor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._tasks: set[asyncio.Task[RunState]] = set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def launch(self, request: RunRequest, idempotency_key: str | None = None) -> str:
        """Store the run durably and start it; returns its id."""
        run_id, task = await self.runtime.launch(request, idempotency_key=idempotency_key)
        self._keep(task)
        return run_id

    async def continue_run(
        self, run_id: str, go: Callable[[list[EventSink]], Awaitable[RunState]]
    ) -> None:
        """Run ``go`` (a resume, an approval, a denial) in the background, once it got as far
        as running the run again (its first event) or ended; its errors before that (not
        awaiting approval, busy elsewhere…) are raised here."""
        going = asyncio.Event()

        def first(_: EventBase) -> None:
            going.set()

        task = asyncio.create_task(_run(go([first])), name=f"trinity-run-{run_id}")
        waiting = asyncio.ensure_future(going.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # raises what went wrong
            return
        self._keep(task)

    async def decide(
        self, run_id: str, decision: Decision, text: str | None, actor: str | None
    ) -> None:
        """Approve, deny or answer (``text``) what ``run_id`` waits for, and continue it here
        (see :meth:`continue_run`)."""
        await self.continue_run(
            run_id,
            lambda subscribers: self.runtime.decide(
                run_id, decision, text, actor=actor, subscribers=subscribers
            ),
        )

    def _keep(self, task: asyncio.Task[RunState]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[RunState]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a run ended with an error", exc_info=task.exception())

    async def stop(self, grace_s: float = 5.0) -> None:
        """Shutting down: every run is asked to stop (recorded as cancelled, resumable), then
        cancelled by force after ``grace_s``."""
        for task in list(self._tasks):
            run_id = task.get_name().removeprefix("trinity-run-")
            self.runtime.cancel(run_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _run(going: Awaitable[RunState]) -> RunState:
    return await going
