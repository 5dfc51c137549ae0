"""What a monitoring stack reads: Prometheus metrics (:mod:`.metrics`), made from the events
every run emits."""

from __future__ import annotations

import math

NOT_FAILED = frozenset({"completed", "cancelled", "awaiting_approval"})
"""Stop reasons that are no failure (a pause for a person is none either); every other one is:
the alerts, the report, the charts and the run's span agree on it."""


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``ordered`` (sorted, not empty), by nearest rank."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
