"""Built-in tools: files confined to a workspace directory, shell commands, Python snippets and
HTTP fetches that cannot reach private networks.

Arguments are pydantic models, so each tool's JSON schema comes from one place and a bad
argument is a clear message rather than a crash. Every tool failure, refusal included, comes
back as a ``ToolResult(ok=False, error=...)``: an observation for the planner.

The same :class:`BuiltinTools` object serves Tetyana directly and backs the MCP server in
:mod:`trinity.tools.builtin_server`.

The package is split by concern; this module holds :class:`BuiltinTools` and the tool table
(:data:`BUILTIN_SPECS`, :data:`BUILTIN_HINTS`), and re-exports the public names of the others:

- :mod:`~trinity.tools.builtin.args`: the limits, the argument models, :class:`WorkspaceError`
  and :class:`ProcessLimits`;
- :mod:`~trinity.tools.builtin.paths`: workspace confinement (:func:`resolve_in_workspace`);
- :mod:`~trinity.tools.builtin.files`: helpers behind the ``fs.*`` tools;
- :mod:`~trinity.tools.builtin.processes`: child processes with limits and timeouts, in the
  :mod:`~trinity.tools.sandbox`;
- :mod:`~trinity.tools.builtin.web`: helpers behind ``http.fetch``;
- :mod:`~trinity.tools.builtin.output`: the cap on what a tool returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from trinity.state import ToolResult
from trinity.tools import fswalk
from trinity.tools.base import ToolSpec
from trinity.tools.builtin.args import (
    _CAPTURE_BYTES,
    MAX_CHOICES,
    MAX_CODE_CHARS,
    MAX_COMMAND_CHARS,
    MAX_EDIT_FILE_BYTES,
    MAX_FETCH_BYTES,
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_OUTPUT_CHARS,
    MAX_PATH_CHARS,
    MAX_PATTERN_CHARS,
    MAX_QUESTION_CHARS,
    MAX_REDIRECTS,
    MAX_WRITE_CHARS,
    AskArgs,
    EditArgs,
    FetchArgs,
    GlobArgs,
    ListArgs,
    ProcessLimits,
    PythonArgs,
    ReadArgs,
    SearchArgs,
    ShellArgs,
    WorkspaceError,
    WriteArgs,
    _Args,
    _errors,
)
from trinity.tools.builtin.beneath import make_parents, open_beneath, regular_file
from trinity.tools.builtin.files import (
    _off_loop,
    _replace_file,
    _search_result,
    _walk_notes,
)
from trinity.tools.builtin.output import _cap
from trinity.tools.builtin.paths import _vet_pattern, resolve_in_workspace
from trinity.tools.builtin.processes import (
    SHELL_GATE,
    _limited_argv,
    _process_result,
    _run_process,
)
from trinity.tools.netguard import AllowList, NetworkPolicyError, Resolver
from trinity.tools.sandbox import Sandbox, SandboxUnavailableError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ASK_TOOL",
    "BUILTIN_HINTS",
    "BUILTIN_SPECS",
    "MAX_CHOICES",
    "MAX_CODE_CHARS",
    "MAX_COMMAND_CHARS",
    "MAX_EDIT_FILE_BYTES",
    "MAX_FETCH_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE_CHARS",
    "MAX_OUTPUT_CHARS",
    "MAX_PATH_CHARS",
    "MAX_PATTERN_CHARS",
    "MAX_QUESTION_CHARS",
    "MAX_REDIRECTS",
    "MAX_WRITE_CHARS",
    "AskArgs",
    "BuiltinTools",
    "EditArgs",
    "FetchArgs",
    "GlobArgs",
    "ListArgs",
    "ProcessLimits",
    "PythonArgs",
    "ReadArgs",
    "SearchArgs",
    "ShellArgs",
    "WorkspaceError",
    "WriteArgs",
    "argument_errors",
    "resolve_in_workspace",
]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


@dataclass(frozen=True, slots=True)
class _Definition:
    name: str
    description: str
    args: type[_Args]
    method: str
    read_only: bool = False
    open_world: bool = False
    """Reaches outside the workspace (the network)."""
    idempotent_unless: tuple[str, ...] | None = None
    """For a tool that writes: it is idempotent (a call made twice leaves what it left once)
    unless one of these arguments is true. ``None``: not idempotent. Read-only tools are."""

    @property
    def idempotent(self) -> bool:
        return self.read_only or self.idempotent_unless is not None


ASK_TOOL = "person.ask"
"""The tool a run asks a person with: Tetyana pauses the run until the answer is in the store
(``Runtime.answer``), and the answer is the step's output. No tool provider makes this call."""
_DEFINITIONS: tuple[_Definition, ...] = (
    _Definition("fs.read", "Read a text file", ReadArgs, "_read", read_only=True),
    _Definition(
        "fs.write",
        "Write (or append to) a text file",
        WriteArgs,
        "_write",
        idempotent_unless=("append",),
    ),
    _Definition(
        "fs.edit",
        "Replace an exact piece of text in a file; fails if it is missing or not unique "
        "(unless `count` or `all` says how many to replace)",
        EditArgs,
        "_edit",
    ),
    _Definition("fs.list", "List a directory", ListArgs, "_list", read_only=True),
    _Definition("fs.glob", "Find workspace paths matching a glob pattern", GlobArgs, "_glob", True),
    _Definition(
        "fs.search",
        "Search text files for a regular expression (or literal text); binary files are skipped",
        SearchArgs,
        "_search",
        read_only=True,
    ),
    _Definition(
        "shell.run",
        "Run a shell command in the workspace; returns its output and exit code",
        ShellArgs,
        "_shell",
    ),
    _Definition(
        "http.fetch",
        "GET an http(s) URL and return the response as text; private and local addresses "
        "are refused",
        FetchArgs,
        "_fetch",
        read_only=True,
        open_world=True,
    ),
    _Definition(
        "python.run",
        "Run a Python script in a subprocess in the workspace (isolated mode, CPU, memory and "
        "file-size limits); returns its output and exit code",
        PythonArgs,
        "_python",
    ),
    _Definition(
        ASK_TOOL,
        "Ask the person who runs the task a question and wait for the answer (the step's "
        "output): for a fact or a choice only they can give. With `choices`, the answer is "
        "one of them",
        AskArgs,
        "_ask",
        read_only=True,
    ),
)
BUILTIN_SPECS: tuple[ToolSpec, ...] = tuple(
    ToolSpec(
        d.name,
        d.description,
        _schema(d.args),
        idempotent=d.idempotent,
        idempotent_unless=d.idempotent_unless or (),
    )
    for d in _DEFINITIONS
)
"""The built-in tools' names, descriptions, argument schemas and idempotence (no workspace
needed)."""
BUILTIN_HINTS: dict[str, tuple[bool, bool]] = {
    d.name: (d.read_only, d.open_world) for d in _DEFINITIONS
}
"""``name -> (read_only, open_world)``, for MCP tool annotations."""
_BY_NAME = {spec.name: spec for spec in BUILTIN_SPECS}
_ARGS = {d.name: d.args for d in _DEFINITIONS}


def argument_errors(name: str, args: dict[str, Any]) -> str | None:
    """What is wrong with ``args`` for the built-in tool ``name`` (types, limits, unknown
    names), checked as the tool itself will check them; ``None`` when they are fine or ``name``
    is not a built-in tool. Lets a plan be refused before it runs rather than at its step."""
    model = _ARGS.get(name)
    if model is None:
        return None
    try:
        model.model_validate(args)
    except ValidationError as exc:
        return _errors(exc)
    return None


class BuiltinTools:
    """The built-in tools inside one workspace: ``fs.*``, ``shell.run``, ``python.run`` and
    ``http.fetch``.

    Args:
        workspace: the directory the file tools are confined to and commands run in.
        default_timeout_s: time cap for a call that gives none.
        allow_hosts: exceptions to ``http.fetch``'s address policy: host names, addresses or
            CIDRs (``{"127.0.0.1"}`` lets tests fetch from a local server).
        resolver: ``http.fetch``'s name resolver (tests use a fake one; default: the system's).
        http_transport: an httpx transport for ``http.fetch`` (tests record requests with
            one); the requests it gets are already vetted and pinned to an address.
        max_fetch_bytes: the most of a response body ``http.fetch`` reads.
        python_limits: resource limits for ``python.run``.
        sandbox: how ``shell.run``, ``python.run`` and the search worker are contained
            (default: the ``strict`` profile, see :mod:`trinity.tools.sandbox`).
    """

    def __init__(
        self,
        workspace: str | Path,
        *,
        default_timeout_s: float = 60.0,
        allow_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        max_fetch_bytes: int = MAX_FETCH_BYTES,
        python_limits: ProcessLimits | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.root = Path(workspace).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_timeout_s = default_timeout_s
        self.allow = AllowList.parse(allow_hosts)
        self.resolver = resolver
        self.http_transport = http_transport
        self.max_fetch_bytes = max_fetch_bytes
        self.python_limits = python_limits or ProcessLimits()
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self._tools: dict[str, tuple[type[_Args], Callable[..., Any]]] = {
            d.name: (d.args, getattr(self, d.method)) for d in _DEFINITIONS
        }

    async def list_tools(self) -> list[ToolSpec]:
        return list(BUILTIN_SPECS)

    def _ask(self, args: AskArgs) -> ToolResult:
        return ToolResult(
            ok=False,
            error=f"{ASK_TOOL} is answered by a person through a run (it pauses the run until "
            "the answer is given): no tool provider makes this call",
        )

    def spec(self, name: str) -> ToolSpec | None:
        """A tool's spec, without waiting (see :meth:`ToolHub.spec`)."""
        return _BY_NAME.get(name)

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
        limit = timeout_s or self.default_timeout_s
        try:
            if inspect.iscoroutinefunction(run):
                result = await run(parsed, timeout_s)
            else:
                async with asyncio.timeout(limit):
                    result = await _off_loop(run, parsed)
        except TimeoutError:
            result = ToolResult(ok=False, error=f"{name}: timed out after {limit:g}s")
        except (
            WorkspaceError,
            NetworkPolicyError,
            SandboxUnavailableError,
            OSError,
            UnicodeDecodeError,
        ) as exc:
            result = ToolResult(ok=False, error=f"{name}: {exc}")
        result.duration_s = time.perf_counter() - started
        return result

    async def aclose(self) -> None:
        return None

    # -- workspace paths -----------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        return resolve_in_workspace(self.root, path)

    def _limit(self, asked: float | None, caller: float | None) -> float:
        """The tool's own time cap, never longer than the caller's cap on the whole call."""
        limit = asked or self.default_timeout_s
        return min(limit, caller) if caller is not None else limit

    # -- file tools ------------------------------------------------------------------------------

    # The file tools are plain functions run on a worker thread (see call): a slow disk, a
    # network mount or a FIFO must not freeze the event loop, and the call's timeout applies.

    def _open(self, target: Path, shown: str, flags: int, *, writing: bool = False) -> int:
        """A descriptor of ``target``, opened beneath the workspace (no symlink swapped in
        meanwhile can send it outside) and checked to be a regular file (and for a write, one
        with no other hard link)."""
        fd = open_beneath(self.root, target, flags | os.O_NONBLOCK, 0o666)
        try:
            regular_file(fd, shown, writing=writing)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _read(self, args: ReadArgs) -> ToolResult:
        target = self.resolve(args.path)
        limit = _CAPTURE_BYTES
        with os.fdopen(self._open(target, args.path, os.O_RDONLY), "rb") as handle:
            data = handle.read(limit + 1)
        text, truncated = _cap(data[:limit].decode("utf-8", errors="replace"))
        if len(data) > limit and not truncated:
            text, truncated = text + "\n[… file continues]", True
        return ToolResult(ok=True, output=text, truncated=truncated)

    def _write(self, args: WriteArgs) -> ToolResult:
        target = self.resolve(args.path)
        if target == self.root:
            raise WorkspaceError(f"{args.path!r} is a directory")
        make_parents(self.root, target)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if args.append else 0)
        fd = self._open(target, args.path, flags, writing=True)
        if not args.append:
            os.ftruncate(fd, 0)  # only now: the checks above may refuse the file
        with os.fdopen(fd, "a" if args.append else "w", encoding="utf-8") as handle:
            handle.write(args.content)
        verb = "appended" if args.append else "wrote"
        rel = target.relative_to(self.root)
        return ToolResult(ok=True, output=f"{verb} {len(args.content)} characters to {rel}")

    def _edit(self, args: EditArgs) -> ToolResult:
        target = self.resolve(args.path)
        if target == self.root:
            raise WorkspaceError(f"{args.path!r} is a directory")
        folder = open_beneath(self.root, target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = self._open(target, args.path, os.O_RDONLY)
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_size > MAX_EDIT_FILE_BYTES:
                    raise WorkspaceError(
                        f"{args.path!r} is larger than {MAX_EDIT_FILE_BYTES} bytes"
                    )
                raw = handle.read()
            try:
                text = raw.decode("utf-8")  # bytes: keep \r\n line ends as they are
            except UnicodeDecodeError:
                raise WorkspaceError(f"{args.path!r} is not UTF-8 text") from None
            found = text.count(args.old)
            if found == 0:
                raise WorkspaceError(f"`old` text not found in {args.path!r}; nothing changed")
            if args.count is not None and found != args.count:
                raise WorkspaceError(
                    f"`old` text occurs {found} times in {args.path!r}, not {args.count}; "
                    "nothing changed"
                )
            if args.count is None and not args.all and found > 1:
                raise WorkspaceError(
                    f"`old` text occurs {found} times in {args.path!r}; include more context "
                    f"to make it unique, or pass count={found} or all=true; nothing changed"
                )
            new = text.replace(args.old, args.new).encode("utf-8")
            _replace_file(folder, target.name, new, stat.S_IMODE(info.st_mode))
        finally:
            os.close(folder)
        rel = target.relative_to(self.root)
        noun = "occurrence" if found == 1 else "occurrences"
        return ToolResult(ok=True, output=f"replaced {found} {noun} in {rel}")

    def _list(self, args: ListArgs) -> ToolResult:
        target = self.resolve(args.path)
        if not target.is_dir():
            return ToolResult(ok=False, error=f"fs.list: {args.path!r} is not a directory")
        root = str(self.root)
        stats = fswalk.WalkStats()
        if args.recursive:  # budgeted, and never into a symlinked directory
            walked = fswalk.walk(root, str(target), stats)
            entries = [rel + ("/" if is_dir else "") for rel, is_dir in walked]
        else:
            entries = []
            for path in target.iterdir():
                rel = str(path.relative_to(self.root))
                if path.is_symlink() and not fswalk.inside(root, str(path)):
                    stats.outside.append(rel)
                else:
                    entries.append(rel + ("/" if path.is_dir() else ""))
        lines = sorted(entries) + _walk_notes(stats.outside, stats.budget_exhausted)
        text, truncated = _cap("\n".join(lines))
        return ToolResult(ok=True, output=text, truncated=truncated)

    def _glob(self, args: GlobArgs) -> ToolResult:
        pattern = _vet_pattern(args.pattern, "pattern")
        matches, stats, more = fswalk.glob(str(self.root), pattern, args.max_results)
        lines = matches or [f"no paths match {args.pattern!r}"]
        if more:
            lines.append(f"[more than {args.max_results} paths match; showing the first ones]")
        lines.extend(_walk_notes(stats.outside, stats.budget_exhausted))
        text, truncated = _cap("\n".join(lines))
        return ToolResult(ok=True, output=text, truncated=truncated or more)

    async def _search(self, args: SearchArgs, timeout_s: float | None) -> ToolResult:
        if not args.literal:
            try:
                re.compile(args.pattern)
            except re.error as exc:
                shown = f"{args.pattern!r}: {exc}"
                raise WorkspaceError(f"invalid regular expression {shown}") from None
        include = _vet_pattern(args.include, "include") if args.include else None
        start = self.resolve(args.path)
        if not start.exists():
            raise WorkspaceError(f"{args.path!r} does not exist")
        request = fswalk.SearchRequest(
            root=str(self.root),
            start=str(start),
            pattern=args.pattern,
            literal=args.literal,
            ignore_case=args.ignore_case,
            include=include,
            max_matches=args.max_matches,
        )
        limit = self._limit(args.timeout_s, timeout_s)
        # Matching runs in a child process: `re` holds the GIL, so a pathological pattern in
        # this process would stall the event loop past any timeout. The child may not write
        # files at all, and gets a CPU limit a little past the wall-clock one.
        limits = ProcessLimits(
            cpu_s=int(limit) + 1,
            memory_bytes=self.python_limits.memory_bytes,
            file_size_bytes=0,
            open_files=64,
        )
        argv = _limited_argv(limits, [sys.executable, "-I", fswalk.__file__])
        finished = await _run_process(
            argv,
            cwd=self.root,
            sandbox=self.sandbox,
            stdin_data=json.dumps(dataclasses.asdict(request)).encode(),
            limit_s=limit,
        )
        if finished.returncode != 0:
            failure = _process_result("fs.search", finished, limit, limits)
            if not finished.timed_out:  # the worker broke: its last words say why
                last = failure.output.strip().splitlines()[-1:] or [""]
                failure.error = f"fs.search: search failed ({failure.error}) {last[0]}".strip()
            failure.output = ""
            return failure
        report = fswalk.SearchReport(**json.loads(finished.output))
        return _search_result(args, report)

    # -- processes ----------------------------------------------------------------------------

    async def _shell(self, args: ShellArgs, timeout_s: float | None) -> ToolResult:
        limit = self._limit(args.timeout_s, timeout_s)

        argv = ["/bin/sh", "-c", SHELL_GATE, "sh", args.command]
        finished = await _run_process(
            argv, cwd=self.root, sandbox=self.sandbox, stdin_data=None, limit_s=limit
        )
        return _process_result("shell.run", finished, limit)

    async def _python(self, args: PythonArgs, timeout_s: float | None) -> ToolResult:
        limit = self._limit(args.timeout_s, timeout_s)
        # `-I`: no user site-packages, no PYTHON* variables, no script directory on sys.path.
        # `-`: the script comes on stdin, which has no size limit (argv has one).
        argv = _limited_argv(self.python_limits, [sys.executable, "-I", "-"])
        finished = await _run_process(
            argv,
            cwd=self.root,
            sandbox=self.sandbox,
            stdin_data=args.code.encode("utf-8"),
            limit_s=limit,
        )
        return _process_result("python.run", finished, limit, self.python_limits)

    # -- network --------------------------------------------------------------------------------

    async def _fetch(self, args: FetchArgs, timeout_s: float | None) -> ToolResult:
        from trinity.tools.builtin import web  # httpx is loaded by the first fetch

        limit = self._limit(args.timeout_s, timeout_s)
        max_bytes = min(args.max_bytes or self.max_fetch_bytes, self.max_fetch_bytes)
        return await web.fetch(
            args,
            limit=limit,
            max_bytes=max_bytes,
            allow=self.allow,
            resolver=self.resolver,
            transport=self.http_transport,
        )
