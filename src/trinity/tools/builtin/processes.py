"""Child processes for ``shell.run``, ``python.run`` and the ``fs.search`` worker.

A child gets an allow-listed environment (:mod:`trinity.security.env`), runs inside the
:mod:`~trinity.tools.sandbox` when it works here, in its own process
group (killed whole when it ends, when its time is up or when the caller gives up; and, through
the :mod:`~trinity.tools.reaper`, when this process dies, however it dies), and can be started
under kernel resource limits (:class:`~trinity.tools.builtin.args.ProcessLimits`) that it cannot
raise. Its output is captured up to a cap without ever blocking it on a full pipe, and the
result says why it ended: exit code, signal, or the limit it ran into.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trinity.state import ToolResult
from trinity.tools.builtin.args import _CAPTURE_BYTES, ProcessLimits
from trinity.tools.builtin.output import _cap
from trinity.tools.reaper import REAPER, reap_group
from trinity.tools.sandbox import Sandbox

# Run as `python -I -c BOOTSTRAP cpu mem fsize nofile -- argv...`: it lowers its own limits and
# then becomes argv. Limits set this way (rather than in a `preexec_fn`, which the subprocess
# docs call unsafe in a process with threads, as this one is) hold for the untrusted code and
# everything it starts, and it cannot raise them again.
_LIMITS_BOOTSTRAP = """\
import os, resource, sys
while True:  # the start gate (see _run_process)
    byte = os.read(0, 1)
    if not byte:
        os._exit(125)
    if byte == b"\\n":
        break
cpu, memory, file_size, open_files = map(int, sys.argv[1:5])
def lower(which, soft, hard=None):
    hard = soft if hard is None else hard
    ceiling = resource.getrlimit(which)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(which, (soft, hard))
lower(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL 1s later
lower(resource.RLIMIT_AS, memory)
lower(resource.RLIMIT_FSIZE, file_size)
lower(resource.RLIMIT_NOFILE, open_files)
lower(resource.RLIMIT_CORE, 0)
os.execv(sys.argv[6], sys.argv[6:])
"""


def _limited_argv(limits: ProcessLimits, argv: list[str]) -> list[str]:
    numbers = (limits.cpu_s, limits.memory_bytes, limits.file_size_bytes, limits.open_files)
    return [sys.executable, "-I", "-c", _LIMITS_BOOTSTRAP, *map(str, numbers), "--", *argv]


SHELL_GATE = 'IFS= read -r _ || exit 125; exec </dev/null; exec /bin/sh -c "$1"'
"""How ``shell.run`` starts a command: behind the start gate, then ``/bin/sh -c COMMAND`` with
no stdin, as ``subprocess``'s ``shell=True`` would."""


def _spawn_exec(
    argv: list[str], *, cwd: Path, sandbox: Sandbox
) -> Coroutine[Any, Any, asyncio.subprocess.Process]:
    """Start ``argv`` (which must pass the start gate: the limits bootstrap or
    :data:`SHELL_GATE`) with stdin a pipe, inside ``sandbox``.

    Raises:
        SandboxUnavailableError: the sandbox is required and cannot be made here.
    """
    return asyncio.create_subprocess_exec(
        *sandbox.wrap(argv, workspace=cwd),
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=sandbox.environment(),
        start_new_session=True,  # its own process group, killed whole on timeout
    )


@dataclass
class _Finished:
    """What a child process left: its first bytes of output and how many more it wrote."""

    output: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    returncode: int | None = None
    timed_out: bool = False


async def _run_process(
    argv: list[str],
    *,
    cwd: Path,
    sandbox: Sandbox,
    stdin_data: bytes | None,
    limit_s: float,
) -> _Finished:
    """Start ``argv`` in ``sandbox`` (see :func:`_spawn_exec`), feed it ``stdin_data``, keep
    the first ``_CAPTURE_BYTES`` of its output (reading, and discarding, the rest so it never
    blocks on a full pipe), and kill its whole process group when ``limit_s`` passes or the
    caller is cancelled.

    The process waits at a start gate (it reads a line from stdin before it does anything) until
    its group is known to the :mod:`~trinity.tools.reaper`: if this process dies in between,
    the gate reads end-of-file and the command never starts."""
    proc = await _spawn_exec(argv, cwd=cwd, sandbox=sandbox)
    REAPER.track(proc.pid)
    finished = _Finished()

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(b"\n" + (stdin_data or b""))
            await proc.stdin.drain()
            proc.stdin.close()

    async def drain() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            room = _CAPTURE_BYTES - len(finished.output)
            finished.output += chunk[:room]
            finished.dropped += max(0, len(chunk) - room)

    try:
        async with asyncio.timeout(limit_s):
            await asyncio.gather(feed(), drain())
            finished.returncode = await proc.wait()
    except (TimeoutError, asyncio.CancelledError) as exc:
        _kill_group(proc.pid)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        finished.timed_out = True
    finally:
        # What it left in its group (a `cmd &`) dies with the step.
        reap_group(proc.pid)
    finished.returncode = sandbox.exit_status(finished.returncode)
    return finished


def _process_result(
    name: str, finished: _Finished, limit: float, limits: ProcessLimits | None = None
) -> ToolResult:
    text, truncated = _cap(finished.output.decode("utf-8", errors="replace"), finished.dropped)
    if finished.timed_out:
        return ToolResult(
            ok=False, output=text, truncated=truncated, error=f"{name}: timed out after {limit:g}s"
        )
    code = finished.returncode
    error = None if code == 0 else _exit_reason(code, text, limits)
    return ToolResult(ok=code == 0, output=text, exit_code=code, truncated=truncated, error=error)


def _exit_reason(code: int | None, output: str, limits: ProcessLimits | None) -> str:
    """``exit code N``, naming the resource limit that ended the process when one did."""
    if code is None or code >= 0:
        hint = ""
        tail = output[-2000:]
        # Python ignores SIGXFSZ: past the file size limit, a write fails with EFBIG instead.
        if limits is not None and "MemoryError" in tail:
            hint = f" (MemoryError: the memory limit is {limits.memory_bytes} bytes)"
        elif limits is not None and "File too large" in tail:
            hint = f" (File too large: the file size limit is {limits.file_size_bytes} bytes)"
        return f"exit code {code}{hint}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"exit code {code}: killed by signal {-code}"
    hint = ""
    if limits is not None and sig == signal.SIGXCPU:
        hint = f": CPU time limit of {limits.cpu_s}s exceeded"
    elif limits is not None and sig == signal.SIGXFSZ:
        hint = f": file size limit of {limits.file_size_bytes} bytes exceeded"
    elif limits is not None and sig == signal.SIGKILL:
        hint = " (the CPU hard limit, or out of memory)"
    return f"exit code {code}: killed by {sig.name}{hint}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
