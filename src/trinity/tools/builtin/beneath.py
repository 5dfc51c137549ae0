"""Opening files beneath the workspace without a race.

Checking a path and then opening it by name leaves a window: a folder swapped for a symlink in
between sends the open outside the workspace. So the file tools open from a descriptor of the
workspace, and the kernel resolves the rest of the path beneath it:

- ``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`` (Linux 5.6+): symlinks that stay
  inside still work, any step out fails with ``EXDEV``;
- elsewhere, one component at a time with ``O_NOFOLLOW`` from the workspace's descriptor: a
  symlink anywhere in the path is refused.

Writes refuse a file with more than one hard link: the other name may be outside the workspace,
and writing through this one would change that file too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from trinity.tools.builtin.args import WorkspaceError

_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(os.uname().machine)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or _SYS_OPENAT2 is None:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_openat2_works: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int | None:
    """``openat2`` beneath ``dirfd``; ``None`` when this kernel has no ``openat2``."""
    global _openat2_works
    libc = _libc()
    if libc is None or _openat2_works is False:
        return None
    mode = mode if flags & os.O_CREAT else 0  # openat2 refuses a mode it would not use
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = int(libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), 24))
    if fd >= 0:
        _openat2_works = True
        return fd
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:
        _openat2_works = False  # no openat2 here (or a seccomp filter forbids it)
        return None
    raise OSError(code, os.strerror(code), path)


def _component_walk(dirfd: int, parts: list[str], flags: int, mode: int) -> int:
    """Open ``parts`` under ``dirfd`` one at a time, following no symlink."""
    fd = os.dup(dirfd)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _root_fd(root: Path) -> Iterator[int]:
    fd = os.open(root, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def _relative_parts(root: Path, target: Path) -> list[str]:
    rel = target.relative_to(root)
    parts = [part for part in rel.parts if part not in ("", ".")]
    return parts or ["."]


def open_beneath(root: Path, target: Path, flags: int, mode: int = 0o666) -> int:
    """A descriptor of ``target`` (a path inside ``root``, as :func:`resolve_in_workspace`
    gives it) opened with ``flags``, resolved by the kernel beneath ``root``. Raises
    :class:`WorkspaceError` when the path leads out of it (a symlink swapped in)."""
    parts = _relative_parts(root, target)
    with _root_fd(root) as dirfd:
        try:
            fd = _openat2(dirfd, "/".join(parts), flags, mode)
            if fd is None:
                fd = _component_walk(dirfd, parts, flags, mode)
        except OSError as exc:
            shown = str(target.relative_to(root))
            if exc.errno in (errno.EXDEV, errno.ELOOP):
                raise WorkspaceError(
                    f"{shown!r} leads outside the workspace (through a symlink); refused"
                ) from None
            if exc.errno == errno.ENXIO:  # a FIFO with no reader, a socket
                raise WorkspaceError(f"{shown!r} is not a regular file") from None
            if exc.errno == errno.EISDIR:
                raise WorkspaceError(f"{shown!r} is a directory") from None
            if exc.errno == errno.ENOENT:
                raise WorkspaceError(f"{shown!r} does not exist") from None
            raise
    return fd


def make_parents(root: Path, target: Path) -> None:
    """Create the folders above ``target`` that are missing, each beneath the last."""
    parts = _relative_parts(root, target)[:-1]
    with _root_fd(root) as dirfd:
        fd = os.dup(dirfd)
        try:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    next_fd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise WorkspaceError(
                            f"{part!r} in the path is a symlink or not a folder; refused"
                        ) from None
                    raise
                os.close(fd)
                fd = next_fd
        finally:
            os.close(fd)


def regular_file(fd: int, shown: str, *, writing: bool) -> os.stat_result:
    """Check an opened descriptor: a regular file (not a FIFO, device or socket, which can
    block forever), and for a write, one with no other hard link. Clears ``O_NONBLOCK``."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise WorkspaceError(f"{shown!r} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise WorkspaceError(f"{shown!r} is not a regular file")
    if writing and info.st_nlink > 1:
        raise WorkspaceError(
            f"{shown!r} has {info.st_nlink} hard links: writing through it would change the "
            "same file under its other names, which may be outside the workspace; refused"
        )
    os.set_blocking(fd, True)
    return info
