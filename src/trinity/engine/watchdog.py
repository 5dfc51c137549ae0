"""A thread that interrupts Python code holding the event loop past a run's hard deadline.

The run deadline is an :func:`asyncio.timeout`: it cancels whatever the run awaits. A node stuck
in CPU-bound Python never awaits, so the loop never gets to deliver that cancellation, and every
other run in the process is frozen too. This watchdog runs on its own daemon thread. When a
watched run is still going at its hard deadline (deadline + grace) and the event loop has not
turned for :data:`STALE_S`, it raises :class:`Overrun` in the loop's thread with
``PyThreadState_SetAsyncExc``: the interpreter delivers it at the next bytecode boundary, inside
the code that holds the loop, which unwinds into the engine like any other exception.

What it cannot do: interrupt a call blocked inside C (``time.sleep``, a C extension's loop).
The exception waits until that call returns to Python; the watchdog logs the stuck run once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TICK_S = 0.05
"""How often a watched loop records that it is turning."""
STALE_S = 0.2
"""A loop that has not turned for this long is held by some code that does not await."""
RETRY_S = 0.1
"""Delay before the exception is raised again (code may catch ``BaseException``)."""
MAX_RAISES = 50
C_STUCK_S = 1.0
"""After this long of raising in vain, the holder is blocked in C: log it."""


class Overrun(BaseException):
    """Raised by the watchdog in code that held the event loop past a run's hard deadline.

    A ``BaseException`` so that ``except Exception`` in a node or tool does not swallow it;
    asyncio stores it on the task like any other error (only ``KeyboardInterrupt`` and
    ``SystemExit`` escape a task)."""


@dataclass(eq=False)
class _Watch:
    loop: asyncio.AbstractEventLoop
    thread_id: int
    fire_at: float
    """``time.monotonic()`` of the hard deadline."""
    label: str
    raises: int = 0
    first_raise: float | None = None
    reported: bool = False
    done: bool = False


@dataclass(eq=False)
class _Beat:
    """One watched loop's heartbeat: a ``call_later`` chain, running while any run is watched."""

    last: float
    watchers: int = 0
    handle: asyncio.TimerHandle | None = None
    runs: set[_Watch] = field(default_factory=set)


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._watches: set[_Watch] = set()
        self._beats: dict[asyncio.AbstractEventLoop, _Beat] = {}
        self._thread: threading.Thread | None = None

    def watch(self, hard_deadline_s: float, label: str) -> _Watch:
        """Start watching the calling loop for a run that must end within ``hard_deadline_s``
        seconds from now. Call :meth:`unwatch` when the run has ended."""
        loop = asyncio.get_running_loop()
        watch = _Watch(loop, threading.get_ident(), time.monotonic() + hard_deadline_s, label)
        beat = self._beats.get(loop)
        if beat is None:
            beat = self._beats[loop] = _Beat(last=time.monotonic())
            beat.handle = loop.call_later(TICK_S, self._tick, loop, beat)
        beat.runs.add(watch)
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="trinity-watchdog")
                self._thread.daemon = True
                self._thread.start()
            self._lock.notify()
        return watch

    def unwatch(self, watch: _Watch) -> None:
        """Stop watching (called on the loop's thread)."""
        with self._lock:
            watch.done = True
            self._watches.discard(watch)
        beat = self._beats.get(watch.loop)
        if beat is not None:
            beat.runs.discard(watch)
            if not beat.runs:
                if beat.handle is not None:
                    beat.handle.cancel()
                del self._beats[watch.loop]

    def _after_fork(self) -> None:
        """In a forked child (a prefork worker) the thread is gone and no run is going."""
        self._lock = threading.Condition()
        self._watches = set()
        self._beats = {}
        self._thread = None

    def _tick(self, loop: asyncio.AbstractEventLoop, beat: _Beat) -> None:
        beat.last = time.monotonic()
        if beat.runs:
            beat.handle = loop.call_later(TICK_S, self._tick, loop, beat)

    def _main(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                due = [w for w in self._watches if w.fire_at <= now]
                for watch in due:
                    self._check(watch, now)
                upcoming = [w.fire_at for w in self._watches]
                timeout = max(0.0, min(upcoming) - time.monotonic()) if upcoming else None
                self._lock.wait(timeout)

    def _check(self, watch: _Watch, now: float) -> None:
        """The run is past its hard deadline: raise in its loop if the loop is held."""
        beat = self._beats.get(watch.loop)
        last = beat.last if beat is not None else now
        if watch.done or now - last < STALE_S or asyncio.current_task(watch.loop) is None:
            # The loop turns: the engine's own supervision ends the run. (Or the loop is held
            # outside any task, where an exception would end the loop itself: leave it.) Look
            # again later, in case something starts holding the loop.
            watch.fire_at = now + TICK_S
            return
        if watch.raises >= MAX_RAISES:
            watch.fire_at = now + 3600.0
            return
        raised = ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(watch.thread_id), ctypes.py_object(Overrun)
        )
        watch.raises += 1
        watch.first_raise = watch.first_raise or now
        watch.fire_at = now + RETRY_S
        if raised != 1:
            log.error("watchdog could not interrupt %s (thread gone?)", watch.label)
            watch.raises = MAX_RAISES
        elif not watch.reported and now - watch.first_raise >= C_STUCK_S:
            watch.reported = True
            log.critical(
                "%s: the event loop has been blocked for %.1fs past the hard deadline inside a "
                "call that cannot be interrupted (blocking C code, e.g. time.sleep in a tool); "
                "it will stop when that call returns",
                watch.label,
                now - last,
            )


WATCHDOG = Watchdog()
"""The process's watchdog (one thread, started with the first watched run)."""
os.register_at_fork(after_in_child=WATCHDOG._after_fork)
