"""Built-in tools: files confined to a workspace directory, and shell commands.

Arguments are pydantic models, so each tool's JSON schema comes from one place and a bad
argument is a clear message rather than a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trinity.state import ToolResult
from trinity.tools.base import ToolSpec

MAX_OUTPUT_CHARS = 64_000
MAX_WRITE_CHARS = 5_000_000
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadArgs(_Args):
    path: str = Field(description="File path relative to the workspace")


class WriteArgs(_Args):
    path: str = Field(description="File path relative to the workspace")
    content: str = Field(max_length=MAX_WRITE_CHARS, description="Text to write")
    append: bool = Field(default=False, description="Append instead of replacing")


class ListArgs(_Args):
    path: str = Field(default=".", description="Directory relative to the workspace")
    recursive: bool = False


class ShellArgs(_Args):
    command: str = Field(min_length=1, max_length=20_000, description="Shell command line")
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600, description="Seconds before it is killed (default: the tools')"
    )


class WorkspaceError(ValueError):
    pass


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


_DEFINITIONS: list[tuple[str, str, type[_Args], str]] = [
    ("fs.read", "Read a text file", ReadArgs, "_read"),
    ("fs.write", "Write (or append to) a text file", WriteArgs, "_write"),
    ("fs.list", "List a directory", ListArgs, "_list"),
    (
        "shell.run",
        "Run a shell command in the workspace; returns its output and exit code",
        ShellArgs,
        "_shell",
    ),
]
BUILTIN_SPECS: tuple[ToolSpec, ...] = tuple(
    ToolSpec(name, description, _schema(model)) for name, description, model, _ in _DEFINITIONS
)
"""The built-in tools' names, descriptions and argument schemas (no workspace needed)."""


def _cap(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text, False
    return text[:MAX_OUTPUT_CHARS] + f"\n[… {len(text) - MAX_OUTPUT_CHARS} characters cut]", True


def scrubbed_env() -> dict[str, str]:
    """The environment minus anything that looks like a secret."""
    return {
        name: value
        for name, value in os.environ.items()
        if not any(marker in name.upper() for marker in _SECRET_MARKERS)
    }


class BuiltinTools:
    """``fs.read``, ``fs.write``, ``fs.list`` and ``shell.run`` inside one workspace."""

    def __init__(self, workspace: str | Path, *, default_timeout_s: float = 60.0) -> None:
        self.root = Path(workspace).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_timeout_s = default_timeout_s
        self._tools: dict[str, tuple[type[_Args], Callable[..., Any]]] = {
            name: (model, getattr(self, method)) for name, _, model, method in _DEFINITIONS
        }

    async def list_tools(self) -> list[ToolSpec]:
        return list(BUILTIN_SPECS)

    async def call(
        self, name: str, args: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self._tools))
            return ToolResult(ok=False, error=f"unknown tool {name!r}; available: {known}")
        args_model, run = tool
        try:
            parsed = args_model.model_validate(args)
        except ValidationError as exc:
            return ToolResult(ok=False, error=f"invalid arguments for {name}: {_errors(exc)}")
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(run):
                result = await run(parsed, timeout_s)
            else:
                limit = timeout_s or self.default_timeout_s
                async with asyncio.timeout(limit):
                    result = await _off_loop(run, parsed)
        except TimeoutError:
            result = ToolResult(ok=False, error=f"{name}: timed out after {limit:g}s")
        except (WorkspaceError, OSError, UnicodeDecodeError) as exc:
            result = ToolResult(ok=False, error=f"{name}: {exc}")
        result.duration_s = time.perf_counter() - started
        return result

    async def aclose(self) -> None:
        return None

    # -- workspace paths -----------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        return resolve_in_workspace(self.root, path)

    # -- tools ---------------------------------------------------------------------------------

    # The file tools are plain functions run on a worker thread (see call): a slow disk, a
    # network mount or a FIFO must not freeze the event loop, and the call's timeout applies.

    def _read(self, args: ReadArgs) -> ToolResult:
        target = self.resolve(args.path)
        _require_regular(target, args.path, must_exist=True)
        limit = MAX_OUTPUT_CHARS * 4  # bytes: enough for MAX_OUTPUT_CHARS of any UTF-8 text
        with target.open("rb") as handle:
            data = handle.read(limit + 1)
        text, truncated = _cap(data[:limit].decode("utf-8", errors="replace"))
        if len(data) > limit and not truncated:
            text, truncated = text + "\n[… file continues]", True
        return ToolResult(ok=True, output=text, truncated=truncated)

    def _write(self, args: WriteArgs) -> ToolResult:
        target = self.resolve(args.path)
        _require_regular(target, args.path, must_exist=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a" if args.append else "w", encoding="utf-8") as handle:
            handle.write(args.content)
        verb = "appended" if args.append else "wrote"
        rel = target.relative_to(self.root)
        return ToolResult(ok=True, output=f"{verb} {len(args.content)} characters to {rel}")

    def _list(self, args: ListArgs) -> ToolResult:
        target = self.resolve(args.path)
        if not target.is_dir():
            return ToolResult(ok=False, error=f"fs.list: {args.path!r} is not a directory")
        entries = target.rglob("*") if args.recursive else target.iterdir()
        lines = sorted(f"{p.relative_to(self.root)}{'/' if p.is_dir() else ''}" for p in entries)
        text, truncated = _cap("\n".join(lines))
        return ToolResult(ok=True, output=text, truncated=truncated)

    async def _shell(self, args: ShellArgs, timeout_s: float | None) -> ToolResult:
        limit = args.timeout_s or self.default_timeout_s
        if timeout_s is not None:  # the caller's cap on any tool call
            limit = min(limit, timeout_s)
        # A new session makes the command a process group we can kill whole on timeout.
        proc = await asyncio.create_subprocess_shell(
            args.command,
            cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=scrubbed_env(),
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(limit):
                raw, _ = await proc.communicate()
        except (TimeoutError, asyncio.CancelledError) as exc:
            _kill_group(proc.pid)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return ToolResult(
                ok=False, error=f"shell.run: timed out after {limit:g}s", exit_code=None
            )
        text, truncated = _cap(raw.decode("utf-8", errors="replace"))
        code = proc.returncode
        return ToolResult(
            ok=code == 0,
            output=text,
            exit_code=code,
            truncated=truncated,
            error=None if code == 0 else f"exit code {code}",
        )


def resolve_in_workspace(root: Path, path: str) -> Path:
    """``path`` inside the (resolved) ``root``. Relative paths, ``..`` and symlinks that lead
    out of it, and absolute paths outside it, are refused with :class:`WorkspaceError`."""
    if "\x00" in path:
        raise WorkspaceError("path contains a NUL byte")
    candidate = Path(path)
    candidate = candidate.resolve() if candidate.is_absolute() else (root / candidate).resolve()
    if not candidate.is_relative_to(root):
        raise WorkspaceError(f"path {path!r} is outside the workspace")
    return candidate


async def _off_loop(fn: Callable[..., ToolResult], *args: Any) -> ToolResult:
    """Run ``fn`` on a daemon thread. Not the loop's default executor: a call stuck in the
    kernel (a dead network mount) would keep the process from exiting after its timeout."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[ToolResult] = loop.create_future()

    def settle(outcome: Any, failed: bool) -> None:
        if not future.done():
            future.set_exception(outcome) if failed else future.set_result(outcome)

    def work() -> None:
        try:
            outcome, failed = fn(*args), False
        except BaseException as exc:  # handed to the awaiting task
            outcome, failed = exc, True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, outcome, failed)

    threading.Thread(target=work, name="trinity-file-tool", daemon=True).start()
    return await future


def _require_regular(target: Path, shown: str, *, must_exist: bool) -> None:
    """Refuse FIFOs, devices and sockets: reading or writing one can block forever."""
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        if must_exist:
            raise WorkspaceError(f"{shown!r} does not exist") from None
        return
    if stat.S_ISDIR(mode):
        raise WorkspaceError(f"{shown!r} is a directory")
    if not stat.S_ISREG(mode):
        raise WorkspaceError(f"{shown!r} is not a regular file")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(arguments)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
