"""Runs whose process died, taken over by a server started with ``--resume-orphans``.

Every ``interval_s`` the server looks for runs recorded as ``running`` whose lease may be
taken over (the process holding it is gone, or its lease expired on another machine) and
resumes them here. Taking the lease is a compare-and-swap on its epoch, so of several servers
that see the same orphan exactly one resumes it; the others are told it is busy and move on.
A resumed run does not repeat a side effect its dead process made (the journal's in-flight
marks, ``on_interrupted``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from trinity.errors import TrinityError
from trinity.server.executor import RunExecutor
from trinity.views import RunFilter

log = logging.getLogger(__name__)


class OrphanResumer:
    def __init__(self, executor: RunExecutor, interval_s: float = 10.0) -> None:
        self.executor = executor
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.resumed: list[str] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="trinity-orphan-resumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def scan(self) -> list[str]:
        """Resume every orphan found now; returns the ids this server took."""
        runtime = self.executor.runtime
        page = await run_in_threadpool(runtime.list_runs, RunFilter(status=["running"]), limit=500)
        taken: list[str] = []
        for run in page.runs:
            if run.shown_status != "interrupted":
                continue  # a live process executes it
            try:
                await self.executor.continue_run(
                    run.id,
                    lambda subscribers, run_id=run.id: runtime.resume(  # type: ignore[misc]
                        run_id, subscribers=subscribers
                    ),
                )
            except TrinityError as exc:  # another server took it first, or it cannot go on
                log.info("orphan run %s not resumed here: %s", run.id, exc)
                continue
            log.warning("resumed orphan run %s (its process was gone)", run.id)
            taken.append(run.id)
        self.resumed += taken
        return taken

    async def _loop(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception:  # a scan that fails (database busy…) is tried again later
                log.exception("looking for orphan runs failed")
            await asyncio.sleep(self.interval_s)
