"""Workspace confinement for the file tools: resolving a path inside the workspace, refusing
traversal (plain, symlinked or encoded ``..``) and patterns that would leave it. The file tools
then open what it names beneath the workspace (:mod:`~trinity.tools.builtin.beneath`), so a
symlink swapped in after the check cannot take them out of it.

Grisha uses :func:`resolve_in_workspace` too, so these rules are kept apart from the tools.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from urllib.parse import unquote

from trinity.tools import fswalk
from trinity.tools.builtin.args import WorkspaceError


def resolve_in_workspace(root: Path, path: str) -> Path:
    """``path`` inside the (resolved) ``root``. Relative paths, ``..`` and symlinks that lead
    out of it, absolute paths outside it, and percent- or backslash-encoded ``..``, are refused
    with :class:`WorkspaceError`."""
    if "\x00" in path:
        raise WorkspaceError("path contains a NUL byte")
    _refuse_encoded_traversal(path)
    candidate = Path(path)
    candidate = candidate.resolve() if candidate.is_absolute() else (root / candidate).resolve()
    if not candidate.is_relative_to(root):
        raise WorkspaceError(f"path {path!r} is outside the workspace")
    return candidate


_OVERLONG = {"%c0%ae": ".", "%e0%80%ae": ".", "%c0%af": "/", "%e0%80%af": "/", "%c1%9c": "/"}


def _refuse_encoded_traversal(path: str) -> None:
    """The file system takes ``%2e%2e`` literally, but a tool or person further along may
    decode it: a path that turns into ``..`` once decoded is refused, not created."""
    decoded = path
    for _ in range(3):  # double and triple encodings too
        lowered = decoded.lower()
        for encoded, plain in _OVERLONG.items():
            lowered = lowered.replace(encoded, plain)
        decoded = unquote(lowered)
    decoded = unicodedata.normalize("NFKC", decoded).replace("\\", "/")
    if decoded != path and ".." in decoded.split("/"):
        raise WorkspaceError(
            f"path {path!r} is an encoded '..' (it decodes to {decoded!r}); refused"
        )


def _vet_pattern(pattern: str, what: str) -> str:
    """A glob pattern that stays inside the workspace."""
    if "\x00" in pattern:
        raise WorkspaceError(f"{what} contains a NUL byte")
    if pattern.startswith("/"):
        raise WorkspaceError(f"{what} {pattern!r} is absolute; patterns are workspace-relative")
    if ".." in pattern.replace("\\", "/").split("/"):
        raise WorkspaceError(f"{what} {pattern!r} contains '..'; it would leave the workspace")
    if not fswalk.split_pattern(pattern):
        raise WorkspaceError(f"{what} {pattern!r} names no path; try '*' or '**'")
    return pattern
