"""A thread that interrupts Python code holding the event loop past a run's hard deadline.

The run deadline is an :func:`asyncio.timeout`: it cancels whatever the run awaits. A node stuck
in CPU-bound Python never awaits, so the loop never gets to deliver that cancellation, and every
other run in the process is frozen too. This watchdog runs on its own daemon thread and costs a
run nothing until its deadline passes. Then it sends the run's loop a probe
(``call_soon_threadsafe``) and samples, every :data:`SAMPLE_S`, which task the loop is running.
If by the hard deadline (deadline + grace) the probe has not run and every sample found the same
task, that task holds the loop, and the watchdog raises :class:`Overrun` in the loop's thread
with ``PyThreadState_SetAsyncExc``: the interpreter delivers it at the next bytecode boundary,
inside the code that holds the loop, which unwinds into the engine like any other exception. A
loop that is merely busy (many tasks, each taking its turn) is left alone.

What it cannot do: interrupt a call blocked inside C (``time.sleep``, a C extension's loop).
The exception waits until that call returns to Python; the watchdog logs the stuck run once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_S = 0.01
"""How often the loop's current task is sampled while a run is overdue."""
RETRY_S = 0.1
"""Length of each later window (after a raise, or while the overdue loop turns): code may catch
``BaseException``, or start holding the loop later."""
MAX_RAISES = 50
C_STUCK_S = 1.0
"""After this long of raising in vain, the holder is blocked in C: log it."""


class Overrun(BaseException):
    """Raised by the watchdog in code that held the event loop past a run's hard deadline.

    A ``BaseException`` so that ``except Exception`` in a node or tool does not swallow it;
    asyncio stores it on the task like any other error (only ``KeyboardInterrupt`` and
    ``SystemExit`` escape a task)."""


@dataclass(eq=False, slots=True)
class _Watch:
    """One watched run (returned by :meth:`Watchdog.watch`)."""

    loop: asyncio.AbstractEventLoop
    thread_id: int
    fire_at: float
    """``time.monotonic()`` of the next look: the deadline, then the hard deadline, then
    every :data:`RETRY_S`."""
    grace_s: float
    label: str
    probe_sent: float | None = None
    """When the current probe was sent to the loop (the current window's start)."""
    probe_seen: float = 0.0
    """When the loop last ran a probe."""
    window_end: float = 0.0
    """When the current window's verdict is due."""
    holder: asyncio.Task[Any] | None = None
    """The task the loop ran at the window's first sample."""
    moved: bool = False
    """A sample in this window found another task, or none: nothing holds the loop."""
    raises: int = 0
    first_raise: float | None = None
    held_since: float | None = None
    """Start of the window after which the watchdog first raised."""
    reported: bool = False
    done: bool = False

    def seen(self) -> None:
        """The probe, run by the loop: it turns."""
        self.probe_seen = time.monotonic()


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf
        """When the thread will next look (``inf``: when notified)."""
        self.on_stuck: Callable[[str, float], None] | None = None
        """Called (on the watchdog's thread, once per run) with the run's label and the seconds
        the loop has been held, when raising did not free it within :data:`C_STUCK_S`: the
        holder is blocked in C. A command-line process sets it to exit, so that the run still
        ends (``trinity runs resume`` continues it from its last checkpoint). Must not block."""

    def watch(self, deadline_s: float, grace_s: float, label: str) -> _Watch:
        """Start watching the calling loop for a run whose deadline is ``deadline_s`` from now
        and which must have ended ``grace_s`` later. Call :meth:`unwatch` when it has ended."""
        loop = asyncio.get_running_loop()
        fire_at = time.monotonic() + deadline_s
        watch = _Watch(loop, threading.get_ident(), fire_at, grace_s, label)
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="trinity-watchdog")
                self._thread.daemon = True
                self._thread.start()
            elif fire_at < self._wake_at:
                # Only an earlier deadline needs the thread awake now: waking it takes the GIL
                # from the loop, which would cost a run more than everything else here.
                self._lock.notify()
        return watch

    def unwatch(self, watch: _Watch) -> None:
        """Stop watching (called on the loop's thread)."""
        with self._lock:
            watch.done = True
            self._watches.discard(watch)

    def _after_fork(self) -> None:
        """In a forked child (a prefork worker) the thread is gone and no run is going."""
        self._lock = threading.Condition(threading.Lock())
        self._watches = set()
        self._thread = None
        self._wake_at = math.inf

    def _main(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._watches if w.fire_at <= now]:
                    try:
                        self._check(watch, now)
                    except Exception:  # the thread must live on for the other runs
                        log.exception("watchdog: checking %s failed", watch.label)
                        watch.fire_at = now + RETRY_S
                self._wake_at = min((w.fire_at for w in self._watches), default=math.inf)
                wait = None if self._wake_at == math.inf else max(0.0, self._wake_at - now)
                self._lock.wait(wait)

    def _check(self, watch: _Watch, now: float) -> None:
        """The run is past its deadline: open a window (probe and first sample), sample during
        it, and at its end raise in the loop if the probe has not run and the same task was
        running at every sample."""
        if watch.probe_sent is None:
            self._open(watch, now, watch.grace_s)  # at the deadline
            return
        current = asyncio.current_task(watch.loop)
        if current is None or current is not watch.holder:
            watch.moved = True
        if now < watch.window_end:
            watch.fire_at = min(now + SAMPLE_S, watch.window_end)
            return
        held = not watch.moved and watch.probe_seen < watch.probe_sent
        if not held or watch.raises >= MAX_RAISES:
            self._open(watch, now, RETRY_S)
            return
        raised = ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(watch.thread_id), ctypes.py_object(Overrun)
        )
        watch.raises += 1
        if watch.first_raise is None:
            watch.first_raise, watch.held_since = now, watch.probe_sent
        self._open(watch, now, RETRY_S)  # seen by the next look if the exception freed the loop
        if raised != 1:
            log.error("watchdog could not interrupt %s (thread gone?)", watch.label)
            watch.raises = MAX_RAISES
        elif not watch.reported and now - watch.first_raise >= C_STUCK_S:
            watch.reported = True
            held_s = now - (watch.held_since or now)
            log.critical(
                "%s: the event loop has been held for %.1fs past the deadline inside a call "
                "that cannot be interrupted (blocking C code, e.g. time.sleep in a tool); it "
                "will stop when that call returns",
                watch.label,
                held_s,
            )
            if self.on_stuck is not None:
                self.on_stuck(watch.label, held_s)

    @staticmethod
    def _open(watch: _Watch, now: float, length: float) -> None:
        """Start a window: send a probe and take the first sample."""
        watch.probe_sent = now
        watch.window_end = now + length
        watch.holder = asyncio.current_task(watch.loop)
        watch.moved = watch.holder is None
        watch.fire_at = now + SAMPLE_S
        try:
            watch.loop.call_soon_threadsafe(watch.seen)
        except RuntimeError:  # the loop is closed: nothing left to watch
            watch.fire_at = math.inf


WATCHDOG = Watchdog()
"""The process's watchdog (one thread, started with the first watched run)."""
os.register_at_fork(after_in_child=WATCHDOG._after_fork)
