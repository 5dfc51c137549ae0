"""Helpers behind the file tools (``fs.*``): the notes and summaries their listings and
search results end with, replacing a file all at once for ``fs.edit``, and running a
blocking file tool on a daemon thread so that it cannot freeze the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from trinity.state import ToolResult
from trinity.tools import fswalk
from trinity.tools.builtin.args import SearchArgs
from trinity.tools.builtin.output import _cap


def _walk_notes(outside: list[str], budget_exhausted: bool) -> list[str]:
    notes = []
    if outside:
        outside = sorted(outside)
        shown = ", ".join(outside[:10]) + (", …" if len(outside) > 10 else "")
        what = "entry that leads" if len(outside) == 1 else "entries that lead"
        notes.append(f"[skipped {len(outside)} {what} outside the workspace: {shown}]")
    if budget_exhausted:
        notes.append(f"[stopped after scanning {fswalk.MAX_SCAN_ENTRIES} entries]")
    return notes


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("h") else "s")


def _search_result(args: SearchArgs, report: fswalk.SearchReport) -> ToolResult:
    lines = list(report.matches) or [f"no matches for {args.pattern!r}"]
    if report.truncated:
        lines.append(f"[stopped at {args.max_matches} matches]")
    skipped = [
        f"{count} {what}"
        for count, what in (
            (report.binary, "binary"),
            (report.too_large, f"over {fswalk.MAX_SEARCH_FILE_BYTES} bytes"),
            (report.unreadable, "unreadable"),
        )
        if count
    ]
    found = _plural(len(report.matches), "match")
    summary = f"[{found} in {_plural(report.files_scanned, 'file')} searched"
    lines.append(summary + (f"; skipped: {', '.join(skipped)}]" if skipped else "]"))
    lines.extend(_walk_notes(report.outside, report.budget_exhausted))
    text, truncated = _cap("\n".join(lines))
    return ToolResult(ok=True, output=text, truncated=truncated or report.truncated)


def _replace_file(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write ``data`` to the file ``name`` in the folder ``dir_fd`` all at once: a crash
    mid-write leaves the old file. The folder is held by descriptor, so the new file lands
    where the old one was checked, whatever is renamed meanwhile."""
    temp = f".{name}.{os.getpid()}.{threading.get_ident()}.edit"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


async def _off_loop(fn: Callable[..., ToolResult], *args: Any) -> ToolResult:
    """Run ``fn`` on one of the file workers: daemon threads, so that a call stuck in the
    kernel (a dead network mount) neither freezes the event loop nor keeps the process from
    exiting after its timeout. The workers are kept between calls: starting a thread per call
    cost about 110 µs more per ``fs.write`` here (``bench/long_runs.py``)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[ToolResult] = loop.create_future()
    _WORKERS.submit(loop, future, fn, args)
    return await future


class _FileWorkers:
    """A few daemon threads that run the file tools' blocking calls, more when all are busy
    (a stuck one is left to its call), up to :attr:`limit`."""

    limit = 16

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        os.register_at_fork(after_in_child=self._forget)

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[ToolResult],
        fn: Callable[..., ToolResult],
        args: tuple[Any, ...],
    ) -> None:
        with self._lock:
            if self._idle == 0 and self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._work, name="trinity-file-tool", daemon=True).start()
            else:
                self._idle -= 1 if self._idle else 0
        self._jobs.put((loop, future, fn, args))

    def _work(self) -> None:
        while True:
            loop, future, fn, args = self._jobs.get()
            try:
                outcome, failed = fn(*args), False
            except BaseException as exc:  # handed to the awaiting task
                outcome, failed = exc, True
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, future, outcome, failed)
            with self._lock:
                self._idle += 1

    def _forget(self) -> None:
        """In a forked child the workers are gone (threads do not survive a fork)."""
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = 0


def _settle(future: asyncio.Future[ToolResult], outcome: Any, failed: bool) -> None:
    if not future.done():
        future.set_exception(outcome) if failed else future.set_result(outcome)


_WORKERS = _FileWorkers()
