"""``asyncio.run`` for a command-line process, except that leftover tasks cannot hold it, and
SIGTERM / SIGHUP stop the work the way Ctrl-C does.

``asyncio.run`` cancels every task still pending when the main coroutine ends and then waits for
all of them, with no limit. A node the engine abandoned because it swallows cancellation (see
:meth:`trinity.engine.Engine.run`) would keep the process alive forever at exit. :func:`run_main`
gives leftovers ``grace_s`` to end once cancelled, then drops them from asyncio's registry and
closes the loop. The sweep runs on the stopped loop after ``main`` has ended, however it ended.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(Exception):
    """``main`` was cancelled because the process received ``signum`` (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


def run_main(
    main: Coroutine[Any, Any, T],
    *,
    grace_s: float = 1.0,
    stop_signals: Iterable[signal.Signals] = STOP_SIGNALS,
) -> T:
    """Run ``main`` like :func:`asyncio.run`: Ctrl-C cancels it and raises
    ``KeyboardInterrupt``; each of ``stop_signals`` cancels it too and raises
    :class:`Terminated` (so a run is recorded as cancelled, not left behind). Never wait more
    than ``grace_s`` for leftover tasks, however ``main`` ends: normally, with an error, or with
    a second signal during its cleanup."""
    received: list[int] = []
    watched = tuple(stop_signals)

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        installed = []
        for sig in watched:
            try:
                loop.add_signal_handler(sig, stop, sig)
                installed.append(sig)
            except (ValueError, RuntimeError):  # not the main thread: signals are not ours
                break
        try:
            return await main
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    # The result travels outside the task: when asyncio restores the SIGINT handler at the
    # end, Python formats the (finished) task's repr, result included, and a run's state can
    # be large (a 3,000-step plan took 0.2 s to print for nothing).
    box: list[T] = []

    async def boxed() -> None:
        box.append(await guarded())

    runner = asyncio.Runner()
    try:
        runner.run(boxed())
        return box[0]
    except asyncio.CancelledError:
        if received:
            raise Terminated(received[0]) from None
        raise
    finally:
        try:
            _sweep(runner.get_loop(), grace_s)
        finally:
            runner.close()


def _sweep(loop: asyncio.AbstractEventLoop, grace_s: float) -> None:
    """Cancel the tasks still pending on ``loop`` (not running) and give them ``grace_s`` to
    end; forget those that do not, so that closing the loop does not wait for them."""
    rest = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not rest:
        return
    for task in rest:
        task.cancel()
    try:
        loop.run_until_complete(asyncio.wait(rest, timeout=grace_s))
    finally:  # also after another Ctrl-C while waiting
        stuck = [task for task in rest if not task.done()]
        if stuck:
            log.info("%d task(s) ignored cancellation at exit; leaving them", len(stuck))
        # Private in 3.11, but the only way to keep asyncio's shutdown from waiting on them;
        # the loop is about to close, so they never run again.
        unregister = getattr(asyncio.tasks, "_unregister_task", None)
        for task in stuck:
            if unregister is not None:
                unregister(task)
            task._log_destroy_pending = False  # type: ignore[attr-defined]
