"""What a monitoring stack reads, made from the events every run emits: Prometheus metrics
(:mod:`.metrics`), OpenTelemetry traces (:mod:`.tracing`), alerts (:mod:`.alerts`). This module
stays light: the Runtime asks it whether to load the rest."""

from __future__ import annotations

import math
import os

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
