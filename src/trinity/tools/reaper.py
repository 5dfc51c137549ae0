"""The reaper: tool processes die with the process that started them, even when it is killed.

Every child a tool starts (a shell command, a Python script, a search worker, a stdio MCP server)
leads a process group of its own. A process that is killed with SIGKILL cannot clean up, and its
children would go on: a command half-way through a side effect would finish it after the run was
already resumed elsewhere. So this process starts one small helper, the reaper, in a session of
its own (Ctrl-C and kills of this process's group do not reach it), and tells it, through a pipe,
each process group as it starts and ends. When the pipe closes, because this process ended in
whatever way, the reaper kills every group it was told of with SIGKILL and exits.

The reaper's pid and start time are part of a run's lease owner (:mod:`trinity.store.lease`): a
process that takes over a run whose owner died first waits for that reaper to have finished
(:func:`wait_for_reaper`), so nothing the dead process started can still write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time

from trinity.store.lease import Owner, process_start_time

log = logging.getLogger(__name__)

_CODE = """\
import os, signal, sys
groups = set()
def reap(*_):
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)
signal.signal(signal.SIGTERM, reap)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
for line in sys.stdin:
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
reap()
"""


class Reaper:
    """This process's reaper (started on first use)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def identity(self) -> tuple[int, int] | None:
        """``(pid, start time)`` of the reaper, started if need be; ``None`` if it cannot run."""
        proc = self._ensure()
        if proc is None:
            return None
        started = process_start_time(proc.pid)
        return (proc.pid, started) if started is not None else None

    def track(self, group: int) -> None:
        """Kill process group ``group`` if this process dies before :meth:`untrack`."""
        self._send(f"+{group}\n")

    def untrack(self, group: int) -> None:
        self._send(f"-{group}\n")

    def _send(self, line: str) -> None:
        proc = self._ensure()
        if proc is None or proc.stdin is None:
            return
        try:
            os.write(proc.stdin.fileno(), line.encode())
        except OSError:  # it died (somebody killed it): start another for what comes next
            log.warning("the tool-process reaper (pid %d) is gone; starting another", proc.pid)
            self._proc = None

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if os.getpid() != self._pid:  # a forked child: the parent's reaper is not ours
                self._proc, self._pid = None, os.getpid()
            if self._proc is not None and self._proc.poll() is None:
                return self._proc
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _CODE],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                log.warning("cannot start the tool-process reaper: %s", exc)
                self._proc = None
            return self._proc


REAPER = Reaper()
"""This process's reaper."""


async def wait_for_reaper(owner: Owner | None, timeout_s: float = 10.0) -> None:
    """If ``owner`` (a run's former executor) is dead and its reaper still runs, wait for the
    reaper to finish killing the dead process's tool processes."""
    if owner is None or owner.reaper is None or owner.alive() is not False:
        return
    until = time.monotonic() + timeout_s
    while process_start_time(owner.reaper) == owner.reaper_started:
        if time.monotonic() > until:
            log.warning(
                "the reaper of %s (pid %d) is still running", owner.describe(), owner.reaper
            )
            return
        await asyncio.sleep(0.01)


def reap_group(group: int) -> None:
    """Kill a tool's process group now (its work is over: nothing it left may go on) and stop
    tracking it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, 9)
    REAPER.untrack(group)
