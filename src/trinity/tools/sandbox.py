"""The sandbox: shell commands, Python scripts and (opt-in) stdio MCP servers under bubblewrap.

A sandboxed child runs in new PID, IPC, UTS and network namespaces (``bwrap``'s own init is its
PID 1: when the command ends, the kernel kills everything it left behind), sees a ``/proc`` that
holds only its own processes (no parent's ``environ``), gets a private ``/tmp``, has every
capability dropped, and may write only to the workspace. What it may read depends on the
profile:

- ``strict`` (the default): the operating system's own directories (``/usr``, ``/bin``,
  ``/lib*``, ``/etc`` …), Python's installation, and the workspace. Home directories, the project
  folder, ``/var``, ``/srv``, ``/mnt``, ``/run`` and the store's database are not there at all.
- ``workspace-write``: the whole host, read-only (so ``~/.gitconfig`` or a project's sources can
  be read), except the store's database folder, which is hidden.
- ``off``: no sandbox; the child is an ordinary process of this user.

Network: none (a loopback of its own) unless ``sandbox_network = true``, which shares the host's
network as it is: no filtering proxy.

Where bubblewrap is missing or cannot make namespaces here, a profile other than ``off`` falls
back to running children unsandboxed, with a loud warning (once per process) and a line in
``trinity doctor``; ``sandbox_required = true`` refuses such calls instead.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from trinity.config import Settings

from trinity.security.env import child_environment

log = logging.getLogger(__name__)

SandboxProfile = Literal["strict", "workspace-write", "off"]
PROFILES: tuple[SandboxProfile, ...] = ("strict", "workspace-write", "off")

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""What ``strict`` shows of the host, read-only (besides Python and the workspace)."""
_SANDBOX_HOME = "/tmp"
"""``HOME`` inside a sandbox: the private ``/tmp`` (the real one may not be there)."""


class SandboxUnavailableError(RuntimeError):
    """A sandbox is required, and bubblewrap cannot make one on this machine."""


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """Whether bubblewrap works here, and why not."""

    available: bool
    bwrap: str | None
    reason: str


@functools.cache
def probe() -> SandboxStatus:
    """Find ``bwrap`` and try it once: namespaces may be off in a container or by sysctl."""
    path = shutil.which("bwrap")
    if path is None:
        return SandboxStatus(False, None, "bubblewrap (bwrap) is not installed")
    argv = [path, *_namespace_args(network=False), "--ro-bind", "/", "/", "--proc", "/proc"]
    try:
        done = subprocess.run(
            [*argv, "--", "/bin/sh", "-c", "exit 0"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxStatus(False, path, f"bwrap could not start: {exc}")
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        return SandboxStatus(False, path, f"bwrap cannot make a sandbox here: {why[0]}")
    return SandboxStatus(True, path, "bubblewrap works")


def _namespace_args(*, network: bool) -> list[str]:
    args = [
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
    ]
    if not network:
        args.append("--unshare-net")
    return args


@functools.cache
def _warn_unavailable(reason: str) -> None:
    log.warning(
        "SANDBOX OFF: %s; shell.run, python.run and sandboxed MCP servers run as ordinary "
        "processes of this user, with access to everything it can reach. Install bubblewrap "
        '(Debian: apt-get install bubblewrap), or set sandbox = "off" to silence this, or '
        "sandbox_required = true to refuse such calls.",
        reason,
    )


@dataclass(frozen=True)
class Sandbox:
    """How children are contained; :meth:`wrap` turns a command line into a sandboxed one.

    Args:
        profile: ``strict``, ``workspace-write`` or ``off`` (see the module's description).
        network: share the host's network with the child (default: none at all).
        required: refuse to run a child when bubblewrap does not work here, instead of running
            it unsandboxed.
        hidden: folders never shown to a child (the store's database folder).
        child_env: environment variables a child gets besides the basic ones
            (:data:`trinity.security.env.BASE_NAMES`).
    """

    profile: SandboxProfile = "strict"
    network: bool = False
    required: bool = False
    hidden: tuple[Path, ...] = field(default_factory=tuple)
    child_env: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def off(cls) -> Sandbox:
        return cls(profile="off")

    @classmethod
    def from_settings(cls, settings: Settings, *, hidden: Iterable[Path] = ()) -> Sandbox:
        return cls(
            profile=settings.sandbox,
            network=settings.sandbox_network,
            required=settings.sandbox_required,
            hidden=tuple(hidden),
            child_env=tuple(settings.child_env),
        )

    def environment(self) -> dict[str, str]:
        """The environment a child starts with: the allow-list (see
        :func:`trinity.security.env.child_environment`)."""
        return child_environment(self.child_env)

    @property
    def active(self) -> bool:
        """Children really run sandboxed (the profile asks for it and bubblewrap works)."""
        return self.profile != "off" and probe().available

    def describe(self) -> str:
        """One line for ``trinity doctor`` and the docs."""
        if self.profile == "off":
            return 'off (sandbox = "off"): commands run as ordinary processes'
        status = probe()
        net = "host network" if self.network else "no network"
        if status.available:
            return f"{self.profile} with bubblewrap ({status.bwrap}), {net}"
        what = "calls refused" if self.required else "commands run UNSANDBOXED"
        return f"{self.profile} requested, but {status.reason}: {what}"

    def wrap(self, argv: Sequence[str], *, workspace: Path) -> list[str]:
        """``argv`` as it should be started: under bubblewrap, or as it is when the profile is
        ``off`` or bubblewrap does not work (then warned about once, or refused when
        ``required``)."""
        if self.profile == "off":
            return list(argv)
        status = probe()
        if not status.available:
            if self.required:
                raise SandboxUnavailableError(
                    f"sandbox_required is set and {status.reason}; nothing was run"
                )
            _warn_unavailable(status.reason)
            return list(argv)
        assert status.bwrap is not None
        return [status.bwrap, *self.bwrap_args(workspace), "--", *argv]

    def bwrap_args(self, workspace: Path) -> list[str]:
        """The filesystem and namespace options for a child working in ``workspace``.

        bubblewrap applies them in order, each on top of the last: the host view, then the
        private ``/tmp`` (and ``/run``), then Python and this package again (they may live
        under ``/tmp``), the hidden folders, and last the workspace, read-write."""
        workspace = workspace.resolve()
        args = _namespace_args(network=self.network)
        if self.profile == "strict":
            for path in _SYSTEM_DIRS:
                args += _mirror(path)
        else:
            args += ["--ro-bind", "/", "/", "--tmpfs", "/run", "--tmpfs", "/var/tmp"]
        args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for path in _python_paths():
            args += ["--ro-bind-try", path, path]
        if self.profile != "strict":
            for path in sorted({str(p.resolve()) for p in self.hidden}):
                if os.path.isdir(path) and not _contains(path, str(workspace)):
                    args += ["--tmpfs", path]
        args += ["--bind", str(workspace), str(workspace), "--chdir", str(workspace)]
        args += ["--setenv", "HOME", _SANDBOX_HOME, "--setenv", "TMPDIR", "/tmp"]
        args += ["--hostname", "sandbox"]
        return args

    def exit_status(self, code: int | None) -> int | None:
        """A sandboxed child's status as an unsandboxed one would report it. bubblewrap's init
        exits with 128 + N when the command is killed by signal N (as a shell does); that
        becomes -N again, so that limits and kills are named. (A command that itself exits
        with 129-192 is read the same way, as it would be under ``sh``.)"""
        if code is not None and self.active and 128 < code <= 128 + 64:
            return -(code - 128)
        return code


def _mirror(path: str) -> list[str]:
    """Show a host path read-only; a symlink (``/bin -> usr/bin``) is recreated as one."""
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if os.path.exists(path):
        return ["--ro-bind", path, path]
    return []


@functools.cache
def _python_paths() -> tuple[str, ...]:
    """What a child needs of Python: the interpreter's installation and this package (the
    search worker runs one of its modules)."""
    here = Path(__file__).resolve().parent.parent  # the trinity package
    candidates: Iterable[str] = (
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        str(here),
    )
    keep: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates}):
        if any(_contains(root, path) for root in (*_SYSTEM_DIRS, *keep)):
            continue
        keep.append(path)
    # A venv's `python` is a symlink into the base installation: show both names.
    for path in (sys.prefix, os.path.dirname(sys.executable)):
        if path not in keep and not any(_contains(root, path) for root in _SYSTEM_DIRS):
            keep.append(path)
    return tuple(keep)


def _contains(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
