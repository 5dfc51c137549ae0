"""Trace messages leave a run's process here, for the child process that makes and exports
the spans (:mod:`.export_child`), without ever making the run wait.

The tracer hands each message (a plain tuple: :mod:`.spanbuilder`) to a :class:`Shipper`. Every
:data:`BATCH` of them, at a run's end, and at least every :data:`FLUSH_EVERY_S` while any wait,
they are marshalled into a frame and queued for a writer thread, which writes the frames to
the child's standard input. Only that thread blocks on the pipe: a collector that is slow,
down or hung, or a child that is starved of CPU or stopped, fills the queue, not the run's time
(measured: a collector taking 3 s a request made every step 12x slower while the pipe was
written on the run's thread). Past :data:`QUEUED_MESSAGES` waiting, new batches are dropped and
counted (a warning at most once a minute), as the SDK's own batch processor drops past its
queue size. The periodic flush keeps
what reaches the child current: a process killed with ``kill -9`` loses at most the last
second of its trace (the child ends the spans left open, as cut off).

A frame is a 4-byte big-endian length and that many bytes of a marshalled list of messages;
a frame of length 0 asks the child to export what it holds now (a run ended).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import marshal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from trinity.observability import Repeats

log = logging.getLogger("trinity.tracing")
log.addFilter(Repeats())  # each dropped batch would say it again

BATCH = 256
"""Messages marshalled into one frame (a run's end, and the periodic flush, ship fewer)."""
FLUSH_EVERY_S = 1.0
"""The longest a message waits in the run's process."""
QUEUED_MESSAGES = 50_000
"""The most messages waiting for the child; batches past it are dropped (and counted)."""
EXIT_WAIT_S = 3.0
"""How long an exiting process waits for its exporting child; the child then lets go of the
standard output and error it inherited (a ``trinity run ... | jq`` ends), and finishes alone."""
EXPORT_NOW = struct.pack(">I", 0)
"""The frame that asks the child to export what it holds (sent when a run ends)."""


class Shipper:
    """Batches of trace messages, written to the exporting child process by a thread of their
    own (``shipper(message)``; :meth:`flush` at a run's end; :meth:`close` at exit)."""

    def __init__(self, command: list[str] | None = None) -> None:
        from trinity.observability.export_child import exporter_names

        # a bad OTEL_TRACES_EXPORTER is a ConfigError here, not in the child
        console = "console" in exporter_names()
        self._child = subprocess.Popen(
            command or [sys.executable, "-m", "trinity.observability.export_child"],
            stdin=subprocess.PIPE,
            stdout=None if console else subprocess.DEVNULL,  # the console exporter prints there
            start_new_session=True,  # a Ctrl-C to the run's terminal does not lose the last spans
        )
        self.pid = self._child.pid
        """The exporting process's."""
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        """Messages not in a frame yet: appended by the runs' thread without a lock (a deque's
        append and popleft are atomic), taken in order under ``_taking``."""
        self._taking = threading.Lock()
        self._frames: collections.deque[tuple[int, bytes | None]] = collections.deque()
        """Frames for the writer: (messages in it, bytes), or (0, None): close the pipe."""
        self._queued = 0
        self._ready = threading.Condition()
        self._broken = False
        self.dropped = 0
        """Messages dropped: the queue was full, or the child had gone."""
        self._writer = threading.Thread(target=self._write, name="trinity-spans", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def __call__(self, message: tuple[Any, ...]) -> None:
        self._pending.append(message)
        if len(self._pending) >= BATCH:
            self.flush(export=False)

    def flush(self, export: bool = True) -> None:
        """Queue the messages gathered so far; ``export``: and ask the child to export now."""
        with self._taking:  # frames are queued in the order their messages came
            pending = self._pending
            batch = [pending.popleft() for _ in range(len(pending))]
            frame = b""
            if batch:  # marshal: tuples of numbers, strings and dicts, ~3x faster than pickle
                data = marshal.dumps(batch)
                frame = struct.pack(">I", len(data)) + data
            with self._ready:
                if batch and self._broken:
                    self.dropped += len(batch)
                elif batch and self._queued + len(batch) > QUEUED_MESSAGES:
                    self.dropped += len(batch)
                    log.warning(
                        "trace messages dropped: %d wait for the exporting process "
                        "(a slow or unreachable collector?); %d dropped so far",
                        self._queued,
                        self.dropped,
                    )
                elif batch:
                    self._frames.append((len(batch), frame))
                    self._queued += len(batch)
                if export:
                    self._frames.append((0, EXPORT_NOW))
                self._ready.notify()

    def close(self, timeout_s: float = EXIT_WAIT_S) -> None:
        """Ship what is left and give the child ``timeout_s`` to export it. A child still
        exporting then (a slow collector) is left to finish on its own: it ends by itself once
        its exports succeed or time out, and exiting does not wait for a collector."""
        deadline = time.monotonic() + timeout_s
        self.flush()
        with self._ready:
            self._frames.append((0, None))  # the writer closes the pipe and ends
            self._ready.notify()
        self._writer.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._child.wait(max(0.0, deadline - time.monotonic()))

    def _write(self) -> None:
        stdin = self._child.stdin
        assert stdin is not None
        while True:
            with self._ready:
                if not self._frames:
                    self._ready.wait(FLUSH_EVERY_S)
                item = self._frames.popleft() if self._frames else None
                if item is not None:
                    self._queued -= item[0]
            if item is None:  # a second without a frame: ship what waits
                if self._pending:
                    self.flush(export=False)
                continue
            count, frame = item
            if frame is None:
                with contextlib.suppress(OSError):
                    stdin.close()
                return
            if self._broken:
                continue
            try:
                stdin.write(frame)
                stdin.flush()
            except OSError:  # the exporting process died: what it had not read is lost
                log.warning("trace messages dropped: the exporting process has ended")
                with self._ready:
                    self._broken = True
                    self.dropped += count + self._queued
                    self._frames = collections.deque(f for f in self._frames if f[1] is None)
                    self._queued = 0
