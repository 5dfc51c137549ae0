"""Walking a workspace without leaving it: glob matching, the confined walk behind ``fs.glob``
and ``fs.search``, and the search itself.

Standard library only, on purpose: ``fs.search`` runs this file as a script in a child process
(``python -I fswalk.py``), with resource limits and a kill on timeout, because Python's ``re``
holds the GIL while it matches. A pattern with catastrophic backtracking run in the server's
process would freeze the event loop, and no timeout could fire. Importing nothing from the
package keeps that child's start-up to a few milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase

MAX_SCAN_ENTRIES = 100_000
"""Directory entries a walk looks at before it stops: a huge tree must not pin a worker."""
MAX_SEARCH_FILE_BYTES = 8 * 1024 * 1024
"""Larger files are skipped by ``fs.search`` (logs, dumps): reported, not read."""
MAX_LINE_CHARS = 400
BINARY_SNIFF_BYTES = 8192


# -- glob patterns -------------------------------------------------------------------------


def split_pattern(pattern: str) -> tuple[str, ...]:
    """Pattern components; ``**`` is its own component (any number of directories)."""
    return tuple(part for part in pattern.split("/") if part not in ("", "."))


def has_magic(component: str) -> bool:
    return any(ch in component for ch in "*?[")


def glob_match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether the relative ``path`` components match ``pattern``: ``*``, ``?`` and ``[..]``
    within one component, ``**`` across any number of them (including none)."""
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(pattern):
                memo[key] = j == len(path)
            elif pattern[i] == "**":
                memo[key] = match(i + 1, j) or (j < len(path) and match(i, j + 1))
            else:
                memo[key] = (
                    j < len(path) and fnmatchcase(path[j], pattern[i]) and match(i + 1, j + 1)
                )
        return memo[key]

    return match(0, 0)


def could_match_below(pattern: tuple[str, ...], directory: tuple[str, ...]) -> bool:
    """Whether anything under ``directory`` can match: lets a walk skip whole subtrees."""
    if "**" in pattern:
        return all(
            fnmatchcase(part, pat)
            for part, pat in zip(directory, pattern[: pattern.index("**")], strict=False)
        )
    if len(directory) >= len(pattern):
        return False
    return all(fnmatchcase(part, pat) for part, pat in zip(directory, pattern, strict=False))


# -- the confined walk ----------------------------------------------------------------------


@dataclass
class WalkStats:
    scanned: int = 0
    outside: list[str] = field(default_factory=list)
    """Entries (symlinks) under the workspace whose target is outside it: skipped."""
    budget_exhausted: bool = False


def inside(root: str, path: str) -> bool:
    """Whether ``path``, with every symlink resolved, is ``root`` or below it."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def walk(
    root: str, start: str, stats: WalkStats, *, prune: tuple[str, ...] | None = None
) -> Iterator[tuple[str, bool]]:
    """``(relative path, is_dir)`` for everything under ``start`` (already confined), in a
    stable order. Symlinked directories are never descended into; an entry that is a symlink
    leading out of ``root`` is recorded in ``stats.outside`` instead of being yielded.
    ``prune`` is a glob pattern: subtrees that cannot match it are not visited."""
    for current, dirnames, filenames in os.walk(start, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(current, root)
        rel_parts = () if rel_dir == "." else tuple(rel_dir.split(os.sep))
        keep = []
        for name in dirnames:
            if prune is None or could_match_below(prune, (*rel_parts, name)):
                keep.append(name)
        for name, is_dir in [(d, True) for d in dirnames] + [(f, False) for f in sorted(filenames)]:
            stats.scanned += 1
            if stats.scanned > MAX_SCAN_ENTRIES:
                stats.budget_exhausted = True
                return
            full = os.path.join(current, name)
            rel = os.path.join(rel_dir, name) if rel_parts else name
            if os.path.islink(full) and not inside(root, full):
                stats.outside.append(rel)
                continue
            yield rel, is_dir
        dirnames[:] = keep


def glob(root: str, pattern: str, max_results: int) -> tuple[list[str], WalkStats, bool]:
    """Workspace-relative paths matching ``pattern`` (directories end in ``/``), the walk's
    stats, and whether more matched than ``max_results``. ``pattern`` is already vetted."""
    parts = split_pattern(pattern)
    literal: list[str] = []
    for part in parts:
        if has_magic(part) or part == "**":
            break
        literal.append(part)
    stats = WalkStats()
    if len(literal) == len(parts):  # no wildcard at all: one path, or none
        full = os.path.join(root, *parts)
        found = os.path.lexists(full) and inside(root, full)
        if os.path.lexists(full) and not found:
            stats.outside.append(os.path.join(*parts))
        shown = os.path.join(*parts) + ("/" if os.path.isdir(full) else "")
        return ([shown] if found else []), stats, False
    start = os.path.join(root, *literal)
    if not os.path.isdir(start) or not inside(root, start):
        if os.path.lexists(start):
            stats.outside.append(os.path.join(*literal))
        return [], stats, False
    matches: list[str] = []
    for rel, is_dir in walk(root, start, stats, prune=parts):
        if glob_match(parts, tuple(rel.split(os.sep))):
            if len(matches) == max_results:
                return sorted(matches), stats, True
            matches.append(rel + ("/" if is_dir else ""))
    return sorted(matches), stats, False


# -- search ---------------------------------------------------------------------------------


@dataclass
class SearchRequest:
    root: str
    start: str
    pattern: str
    literal: bool = False
    ignore_case: bool = False
    include: str | None = None
    max_matches: int = 100


@dataclass
class SearchReport:
    matches: list[str] = field(default_factory=list)
    files_scanned: int = 0
    truncated: bool = False
    binary: int = 0
    too_large: int = 0
    unreadable: int = 0
    outside: list[str] = field(default_factory=list)
    budget_exhausted: bool = False


def search(request: SearchRequest) -> SearchReport:
    """``path:line: text`` for each matching line under ``request.start``, skipping binary,
    oversized and unreadable files and anything whose real path is outside the root."""
    flags = re.IGNORECASE if request.ignore_case else 0
    source = re.escape(request.pattern) if request.literal else request.pattern
    matcher = re.compile(source, flags)
    include = split_pattern(request.include) if request.include else None
    by_name = include is not None and len(include) == 1  # "*.py": any file so named
    report, stats = SearchReport(), WalkStats()
    if os.path.isfile(request.start):
        candidates: Iterator[tuple[str, bool]] = iter(
            [(os.path.relpath(request.start, request.root), False)]
        )
    else:
        candidates = walk(request.root, request.start, stats)
    for rel, is_dir in candidates:
        if is_dir:
            continue
        if include is not None:
            subject = (os.path.basename(rel),) if by_name else tuple(rel.split(os.sep))
            if not glob_match(include, subject):
                continue
        if not _search_file(request, rel, matcher, report):
            break
    report.outside = stats.outside
    report.budget_exhausted = stats.budget_exhausted
    return report


def _search_file(
    request: SearchRequest, rel: str, matcher: re.Pattern[str], report: SearchReport
) -> bool:
    """Search one file; ``False`` once the match budget is spent."""
    full = os.path.join(request.root, rel)
    try:
        info = os.stat(full)
        if not stat.S_ISREG(info.st_mode):  # FIFOs and devices: opening one can block
            return True
        if info.st_size > MAX_SEARCH_FILE_BYTES:
            report.too_large += 1
            return True
        # O_NONBLOCK: should the file become a FIFO after the check, open must not hang.
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_SEARCH_FILE_BYTES + 1)
    except OSError:
        report.unreadable += 1
        return True
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        report.binary += 1
        return True
    report.files_scanned += 1
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if matcher.search(line):
            if len(report.matches) == request.max_matches:
                report.truncated = True
                return False
            shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " […]"
            report.matches.append(f"{rel}:{number}: {shown}")
    return True


def main() -> None:
    """Child-process entry: a :class:`SearchRequest` as JSON on stdin, the
    :class:`SearchReport` as JSON on stdout."""
    request = SearchRequest(**json.load(sys.stdin))
    json.dump(asdict(search(request)), sys.stdout)


if __name__ == "__main__":
    main()
