"""The Monitor page's charts: runs of the last hours in time buckets (runs, error rate, p95 run
time, tokens, cost), drawn as small server-side SVG bar charts (no script, no build step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

from trinity.observability import NOT_FAILED, nearest_rank


@dataclass
class Bucket:
    start: float
    runs: int = 0
    failed: int = 0
    judged: int = 0
    tokens: int = 0
    cost: float = 0.0
    seconds: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.failed / self.judged if self.judged else 0.0

    @property
    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return nearest_rank(ordered, 0.95) if ordered else 0.0


def buckets(
    rows: list[tuple[float, str | None, float, int, float]], now: float, hours: int, width_s: int
) -> list[Bucket]:
    """``rows`` (:meth:`Store.ended_series`) in buckets of ``width_s`` over the last ``hours``."""
    count = max(1, hours * 3600 // width_s)
    first = (now // width_s - count + 1) * width_s
    made = [Bucket(first + i * width_s) for i in range(count)]
    for finished, reason, seconds, tokens, cost in rows:
        index = int((finished - first) // width_s)
        if not 0 <= index < count:
            continue
        bucket = made[index]
        bucket.runs += 1
        bucket.tokens += tokens or 0
        bucket.cost += cost or 0.0
        bucket.seconds.append(max(0.0, seconds))
        if reason != "cancelled":
            bucket.judged += 1
            bucket.failed += reason not in NOT_FAILED
    return made


def bars(values: list[float], labels: list[str], unit: str, tone: str = "") -> Markup:
    """An SVG bar chart of ``values`` (one bar each, a title on hover), scaled to the largest."""
    width, height, gap = 600, 90, 2
    top = max(values) if values and max(values) > 0 else 1.0
    step = width / max(1, len(values))
    parts = [
        f'<svg class="chart {escape(tone)}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" role="img">'
    ]
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = 0 if value <= 0 else max(1.0, value / top * (height - 4))
        parts.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(1.0, step - gap):.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}: {_shown(value, unit)}</title></rect>'
        )
    parts.append(f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>')
    parts.append("</svg>")
    peak = max(values) if values else 0.0
    parts.append(f'<span class="peak">peak {_shown(peak, unit)}</span>')
    return Markup("".join(parts))


def _shown(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0%}"
    if unit == "$":
        return f"${value:.4f}"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f}"
