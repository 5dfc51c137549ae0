"""The cap on what any built-in tool returns: text past ``MAX_OUTPUT_CHARS`` is cut, and the
result says how much was cut. Shared by the file, process and HTTP tools alike."""

from __future__ import annotations

from trinity.tools.builtin.args import MAX_OUTPUT_CHARS


def _cap(text: str, dropped_bytes: int = 0) -> tuple[str, bool]:
    """``text`` cut to MAX_OUTPUT_CHARS, saying how much was cut (``dropped_bytes`` more were
    never decoded: the producer wrote far past the cap)."""
    if len(text) <= MAX_OUTPUT_CHARS and not dropped_bytes:
        return text, False
    cut = max(0, len(text) - MAX_OUTPUT_CHARS)
    more = f", and {dropped_bytes} more bytes" if dropped_bytes else ""
    return text[:MAX_OUTPUT_CHARS] + f"\n[… {cut} characters cut{more}]", True
