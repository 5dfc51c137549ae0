"""Markdown tables for the benchmarks' printouts (``from tables import table``: the benchmarks
run as scripts, so this folder is on ``sys.path``)."""

from __future__ import annotations


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A titled Markdown table whose columns are padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([f"\n{title}\n", line, rule, *body])
