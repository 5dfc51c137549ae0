"""What a monitoring stack reads, made from the events every run emits: Prometheus metrics
(:mod:`.metrics`), OpenTelemetry traces (:mod:`.tracing`), alerts (:mod:`.alerts`). This module
stays light: the Runtime asks it whether to load the rest."""

from __future__ import annotations

import logging
import math
import os
import time

NOT_FAILED = frozenset({"completed", "cancelled", "awaiting_approval"})
"""Stop reasons that are no failure (a pause for a person is none either); every other one is:
the alerts, the report, the charts and the run's span agree on it."""


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``ordered`` (sorted, not empty), by nearest rank."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def tracing_asked() -> bool:
    """``OTEL_TRACES_EXPORTER`` names an exporter (unset or ``none``: no tracing at all)."""
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    return any(part.strip() not in ("", "none") for part in chosen.split(","))


class Repeats(logging.Filter):
    """Lets a message through once a minute per logger and template, saying how many like it
    were held back: the warnings a broken collector, a full queue or a bad metrics file would
    otherwise repeat at every batch or scrape (here, and the SDK's in the exporting process)."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        last, held = self._seen.get(key, (-self.EVERY_S, 0))
        if now - last < self.EVERY_S:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last minute)"
        return True
