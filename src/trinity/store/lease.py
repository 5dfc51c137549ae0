"""Run leases: who may execute a run, so that one process at a time does.

A run's row holds its lease: the owner (this module's :class:`Owner`, as JSON), an expiry the
owner renews while it runs, and an epoch that goes up by one at every take-over. Every journal
write carries the writer's epoch and the store's triggers refuse an older one, so a process that
lost its lease (it stalled past the expiry and somebody resumed the run) cannot write to the run
any more.

Who may take a lease over (:func:`may_take_over`): nobody holds it; or its owner is a process on
this machine that is gone (its pid is dead, or is now another process); or, for an owner this
machine cannot check (another host or PID namespace), the lease has expired. An owner that is
alive keeps its lease even past the expiry: it may only be stalled, and two executors are worse
than a wait.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from dataclasses import asdict, dataclass

LEASE_TTL_S = 30.0
"""How long a lease lasts unless renewed; the owner renews it every third of that."""


@dataclass(frozen=True, slots=True)
class Owner:
    """A process that executes a run."""

    host: str
    boot_id: str
    """The kernel's boot id: a pid from before a reboot is another process."""
    pid_ns: str
    """The PID namespace: a pid is only meaningful inside its own."""
    pid: int
    started: int
    """The process's start time (clock ticks after boot): a reused pid is another process."""
    reaper: int | None = None
    """The pid of its reaper (:mod:`trinity.tools.reaper`), which kills the owner's tool
    processes when the owner dies."""
    reaper_started: int | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Owner | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None  # written by something else: treated as unknown

    def alive(self) -> bool | None:
        """Whether the owner still runs: ``None`` when this machine cannot tell."""
        me = this_machine()
        if (self.host, self.boot_id, self.pid_ns) != me:
            return None
        return process_start_time(self.pid) == self.started


@functools.cache
def this_machine() -> tuple[str, str, str]:
    """``(host, boot id, PID namespace)`` of this process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = ""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return socket.gethostname(), boot, pid_ns


def process_start_time(pid: int) -> int | None:
    """A process's start time from ``/proc`` (``None``: no such process, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])  # field 22, starttime


def this_process(reaper: tuple[int, int] | None = None) -> Owner:
    """This process as a lease owner, with its reaper's ``(pid, start time)``."""
    host, boot, pid_ns = this_machine()
    pid = os.getpid()
    reaper_pid, reaper_started = reaper if reaper is not None else (None, None)
    return Owner(host, boot, pid_ns, pid, process_start_time(pid) or 0, reaper_pid, reaper_started)


def may_take_over(owner_json: str | None, expires_at: float | None) -> tuple[bool, str]:
    """Whether a lease may be taken, and if not, a sentence that says who holds it."""
    if owner_json is None:
        return True, ""
    owner = Owner.from_json(owner_json)
    now = time.time()
    expired = expires_at is None or expires_at < now
    if owner is None:
        return expired, "an unknown process holds it"
    alive = owner.alive()
    if alive is False:
        return True, ""
    if alive is None and expired:
        return True, ""
    me = this_process()
    if (owner.host, owner.boot_id, owner.pid_ns, owner.pid) == (
        me.host,
        me.boot_id,
        me.pid_ns,
        me.pid,
    ):
        return False, "this process is executing it"
    until = time.strftime("%H:%M:%S", time.localtime(expires_at)) if expires_at else "?"
    if alive and expired:
        return False, (
            f"{owner.describe()} holds it; that process is alive but has not renewed its lease "
            f"since {until} (stuck?): stop it (kill {owner.pid}) to take the run over"
        )
    return False, f"{owner.describe()} is executing it (lease until {until})"
