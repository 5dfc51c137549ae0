"""Built-in tools: files confined to a workspace directory, shell commands, Python snippets and
HTTP fetches that cannot reach private networks.

Arguments are pydantic models, so each tool's JSON schema comes from one place and a bad
argument is a clear message rather than a crash. Every tool failure, refusal included, comes
back as a ``ToolResult(ok=False, error=...)``: an observation for the planner.

The same :class:`BuiltinTools` object serves Tetyana directly and backs the MCP server in
:mod:`trinity.tools.builtin_server`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import inspect
import json
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trinity.state import ToolResult
from trinity.tools import fswalk, netguard
from trinity.tools.base import ToolSpec
from trinity.tools.netguard import AllowList, NetworkPolicyError, Resolver

MAX_OUTPUT_CHARS = 64_000
MAX_WRITE_CHARS = 5_000_000
MAX_PATH_CHARS = 4096
MAX_PATTERN_CHARS = 1000
MAX_COMMAND_CHARS = 20_000
MAX_CODE_CHARS = 100_000
MAX_EDIT_FILE_BYTES = 10_000_000
MAX_FETCH_BYTES = 2_000_000
MAX_REDIRECTS = 5
MAX_HEADERS = 32
MAX_HEADER_VALUE_CHARS = 4096
_CAPTURE_BYTES = MAX_OUTPUT_CHARS * 4  # enough bytes for MAX_OUTPUT_CHARS of any UTF-8 text
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers the fetch tool owns: overriding them would change where or how the request goes.
_MANAGED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")


# -- arguments ----------------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


_PathField = Field(max_length=MAX_PATH_CHARS, description="File path relative to the workspace")
_TimeoutField = Field(
    default=None, gt=0, le=3600, description="Seconds before it is killed (default: the tools')"
)


class ReadArgs(_Args):
    path: str = _PathField


class WriteArgs(_Args):
    path: str = _PathField
    content: str = Field(max_length=MAX_WRITE_CHARS, description="Text to write")
    append: bool = Field(default=False, description="Append instead of replacing")


class EditArgs(_Args):
    path: str = _PathField
    old: str = Field(min_length=1, max_length=MAX_WRITE_CHARS, description="Exact text to replace")
    new: str = Field(max_length=MAX_WRITE_CHARS, description="Replacement text")
    count: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="How many occurrences of `old` there must be (all are replaced); "
        "default: exactly one",
    )
    all: bool = Field(default=False, description="Replace every occurrence, however many")

    @model_validator(mode="after")
    def _count_or_all(self) -> EditArgs:
        if self.all and self.count is not None:
            raise ValueError("give `count` or `all`, not both")
        return self


class ListArgs(_Args):
    path: str = Field(
        default=".", max_length=MAX_PATH_CHARS, description="Directory relative to the workspace"
    )
    recursive: bool = False


class GlobArgs(_Args):
    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Glob relative to the workspace: `*`, `?`, `[..]`, and `**` for any "
        "number of directories (e.g. `src/**/*.py`)",
    )
    max_results: int = Field(default=500, ge=1, le=10_000)


class SearchArgs(_Args):
    pattern: str = Field(
        min_length=1, max_length=MAX_PATTERN_CHARS, description="Regular expression (Python)"
    )
    path: str = Field(
        default=".", max_length=MAX_PATH_CHARS, description="File or directory to search"
    )
    literal: bool = Field(default=False, description="Match `pattern` as plain text")
    ignore_case: bool = False
    include: str | None = Field(
        default=None,
        max_length=MAX_PATTERN_CHARS,
        description="Only files matching this glob (`*.py` matches the name anywhere; a "
        "pattern with `/` matches the path from the workspace root)",
    )
    max_matches: int = Field(default=100, ge=1, le=1000)
    timeout_s: float | None = _TimeoutField


class ShellArgs(_Args):
    command: str = Field(
        min_length=1, max_length=MAX_COMMAND_CHARS, description="Shell command line"
    )
    timeout_s: float | None = _TimeoutField


class PythonArgs(_Args):
    code: str = Field(
        min_length=1, max_length=MAX_CODE_CHARS, description="Python source to run as a script"
    )
    timeout_s: float | None = _TimeoutField


class FetchArgs(_Args):
    url: str = Field(
        min_length=1, max_length=netguard.MAX_URL_CHARS, description="http:// or https:// URL"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_HEADERS, description="Extra request headers"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=300)
    max_bytes: int | None = Field(
        default=None, gt=0, description="Read at most this many bytes of the body"
    )


class WorkspaceError(ValueError):
    """A path, pattern or file the workspace rules refuse."""


@dataclass(frozen=True, slots=True)
class ProcessLimits:
    """Kernel resource limits for child Python processes (``python.run``, the search worker).

    Applied with ``setrlimit`` in the child before the interpreter that runs the untrusted
    code starts, so neither the code nor anything it spawns can raise them.
    """

    cpu_s: int = 60
    """CPU seconds; the kernel sends SIGXCPU when they are spent."""
    memory_bytes: int = 1 << 30
    """Address space: allocations past it fail (``MemoryError``)."""
    file_size_bytes: int = 256 << 20
    """Largest file the process may write (SIGXFSZ past it)."""
    open_files: int = 256


# -- the tool table -----------------------------------------------------------------------------


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


_DEFINITIONS: tuple[_Definition, ...] = (
    _Definition("fs.read", "Read a text file", ReadArgs, "_read", read_only=True),
    _Definition("fs.write", "Write (or append to) a text file", WriteArgs, "_write"),
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
)
BUILTIN_SPECS: tuple[ToolSpec, ...] = tuple(
    ToolSpec(d.name, d.description, _schema(d.args)) for d in _DEFINITIONS
)
"""The built-in tools' names, descriptions and argument schemas (no workspace needed)."""
BUILTIN_HINTS: dict[str, tuple[bool, bool]] = {
    d.name: (d.read_only, d.open_world) for d in _DEFINITIONS
}
"""``name -> (read_only, open_world)``, for MCP tool annotations."""


def _cap(text: str, dropped_bytes: int = 0) -> tuple[str, bool]:
    """``text`` cut to MAX_OUTPUT_CHARS, saying how much was cut (``dropped_bytes`` more were
    never decoded: the producer wrote far past the cap)."""
    if len(text) <= MAX_OUTPUT_CHARS and not dropped_bytes:
        return text, False
    cut = max(0, len(text) - MAX_OUTPUT_CHARS)
    more = f", and {dropped_bytes} more bytes" if dropped_bytes else ""
    return text[:MAX_OUTPUT_CHARS] + f"\n[… {cut} characters cut{more}]", True


def scrubbed_env() -> dict[str, str]:
    """The environment minus anything that looks like a secret."""
    return {
        name: value
        for name, value in os.environ.items()
        if not any(marker in name.upper() for marker in _SECRET_MARKERS)
    }


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
    ) -> None:
        self.root = Path(workspace).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_timeout_s = default_timeout_s
        self.allow = AllowList.parse(allow_hosts)
        self.resolver = resolver
        self.http_transport = http_transport
        self.max_fetch_bytes = max_fetch_bytes
        self.python_limits = python_limits or ProcessLimits()
        self._tools: dict[str, tuple[type[_Args], Callable[..., Any]]] = {
            d.name: (d.args, getattr(self, d.method)) for d in _DEFINITIONS
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
        limit = timeout_s or self.default_timeout_s
        try:
            if inspect.iscoroutinefunction(run):
                result = await run(parsed, timeout_s)
            else:
                async with asyncio.timeout(limit):
                    result = await _off_loop(run, parsed)
        except TimeoutError:
            result = ToolResult(ok=False, error=f"{name}: timed out after {limit:g}s")
        except (WorkspaceError, NetworkPolicyError, OSError, UnicodeDecodeError) as exc:
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

    def _read(self, args: ReadArgs) -> ToolResult:
        target = self.resolve(args.path)
        _require_regular(target, args.path, must_exist=True)
        limit = _CAPTURE_BYTES
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

    def _edit(self, args: EditArgs) -> ToolResult:
        target = self.resolve(args.path)
        _require_regular(target, args.path, must_exist=True)
        if target.stat().st_size > MAX_EDIT_FILE_BYTES:
            raise WorkspaceError(f"{args.path!r} is larger than {MAX_EDIT_FILE_BYTES} bytes")
        try:
            text = target.read_bytes().decode("utf-8")  # bytes: keep \r\n line ends as they are
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
                f"`old` text occurs {found} times in {args.path!r}; include more context to "
                f"make it unique, or pass count={found} or all=true; nothing changed"
            )
        _replace_file(target, text.replace(args.old, args.new).encode("utf-8"))
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
            lambda: _spawn_exec(argv, cwd=self.root, stdin=True),
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

        def spawn() -> Coroutine[Any, Any, asyncio.subprocess.Process]:
            # A new session makes the command a process group we can kill whole on timeout.
            return asyncio.create_subprocess_shell(
                args.command,
                cwd=self.root,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=scrubbed_env(),
                start_new_session=True,
            )

        finished = await _run_process(spawn, stdin_data=None, limit_s=limit)
        return _process_result("shell.run", finished, limit)

    async def _python(self, args: PythonArgs, timeout_s: float | None) -> ToolResult:
        limit = self._limit(args.timeout_s, timeout_s)
        # `-I`: no user site-packages, no PYTHON* variables, no script directory on sys.path.
        # `-`: the script comes on stdin, which has no size limit (argv has one).
        argv = _limited_argv(self.python_limits, [sys.executable, "-I", "-"])
        finished = await _run_process(
            lambda: _spawn_exec(argv, cwd=self.root, stdin=True),
            stdin_data=args.code.encode("utf-8"),
            limit_s=limit,
        )
        return _process_result("python.run", finished, limit, self.python_limits)

    # -- network --------------------------------------------------------------------------------

    async def _fetch(self, args: FetchArgs, timeout_s: float | None) -> ToolResult:
        limit = self._limit(args.timeout_s, timeout_s)
        max_bytes = min(args.max_bytes or self.max_fetch_bytes, self.max_fetch_bytes)
        headers = _vet_headers(args.headers)
        target = netguard.parse_url(args.url)
        try:
            async with asyncio.timeout(limit):
                return await self._fetch_following(target, headers, max_bytes, limit)
        except TimeoutError:
            return ToolResult(ok=False, error=f"http.fetch: timed out after {limit:g}s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ToolResult(ok=False, error=f"http.fetch: {type(exc).__name__}: {exc}")

    async def _fetch_following(
        self, target: netguard.Target, headers: dict[str, str], max_bytes: int, limit: float
    ) -> ToolResult:
        """GET ``target``, following redirects by hand so that every hop is vetted and
        pinned like the first one."""
        first_origin = target.origin
        borrowed = _Borrowed(self.http_transport) if self.http_transport else None
        async with httpx.AsyncClient(
            transport=borrowed,
            trust_env=False,  # an environment proxy would connect on our behalf, unchecked
            follow_redirects=False,
            timeout=httpx.Timeout(limit),
        ) as client:
            for hop in range(MAX_REDIRECTS + 1):
                try:
                    address = await netguard.resolve_and_check(target, self.allow, self.resolver)
                except NetworkPolicyError as exc:
                    if hop == 0:
                        raise
                    raise NetworkPolicyError(f"redirect to {target.url!r}: {exc}") from None
                # Caller headers (say, a token) go to the origin they were meant for only.
                extra = headers if target.origin == first_origin else {}
                request = _pinned_request(client, target, address, extra)
                response = await client.send(request, stream=True)
                try:
                    location = response.headers.get("location")
                    if response.status_code not in _REDIRECT_STATUSES or not location:
                        return await _read_response(response, target, hop, max_bytes)
                finally:
                    await response.aclose()
                next_url = urljoin(target.url, location)
                try:
                    target = netguard.parse_url(next_url)
                except NetworkPolicyError as exc:
                    raise NetworkPolicyError(f"redirect to {next_url!r}: {exc}") from None
        return ToolResult(ok=False, error=f"http.fetch: more than {MAX_REDIRECTS} redirects")


# -- paths ----------------------------------------------------------------------------------


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


def _walk_notes(outside: list[str], budget_exhausted: bool) -> list[str]:
    notes = []
    if outside:
        outside = sorted(outside)
        shown = ", ".join(outside[:10]) + (", …" if len(outside) > 10 else "")
        what = "entry that leads" if len(outside) == 1 else "entries that lead"
        notes.append(f"[skipped {len(outside)} {what} outside the workspace: {shown}]")
    if budget_exhausted:
        notes.append(f"[stopped after scanning {fswalk.MAX_SCAN_ENTRIES} entries]")
    return notes


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("h") else "s")


def _search_result(args: SearchArgs, report: fswalk.SearchReport) -> ToolResult:
    lines = list(report.matches) or [f"no matches for {args.pattern!r}"]
    if report.truncated:
        lines.append(f"[stopped at {args.max_matches} matches]")
    skipped = [
        f"{count} {what}"
        for count, what in (
            (report.binary, "binary"),
            (report.too_large, f"over {fswalk.MAX_SEARCH_FILE_BYTES} bytes"),
            (report.unreadable, "unreadable"),
        )
        if count
    ]
    found = _plural(len(report.matches), "match")
    summary = f"[{found} in {_plural(report.files_scanned, 'file')} searched"
    lines.append(summary + (f"; skipped: {', '.join(skipped)}]" if skipped else "]"))
    lines.extend(_walk_notes(report.outside, report.budget_exhausted))
    text, truncated = _cap("\n".join(lines))
    return ToolResult(ok=True, output=text, truncated=truncated or report.truncated)


def _replace_file(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` all at once: a crash mid-write leaves the old file."""
    mode = stat.S_IMODE(target.stat().st_mode)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".edit")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


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


# -- processes ------------------------------------------------------------------------------

# Run as `python -I -c BOOTSTRAP cpu mem fsize nofile -- argv...`: it lowers its own limits and
# then becomes argv. Limits set this way (rather than in a `preexec_fn`, which the subprocess
# docs call unsafe in a process with threads, as this one is) hold for the untrusted code and
# everything it starts, and it cannot raise them again.
_LIMITS_BOOTSTRAP = """\
import os, resource, sys
cpu, memory, file_size, open_files = map(int, sys.argv[1:5])
def lower(which, soft, hard=None):
    hard = soft if hard is None else hard
    ceiling = resource.getrlimit(which)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(which, (soft, hard))
lower(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL 1s later
lower(resource.RLIMIT_AS, memory)
lower(resource.RLIMIT_FSIZE, file_size)
lower(resource.RLIMIT_NOFILE, open_files)
lower(resource.RLIMIT_CORE, 0)
os.execv(sys.argv[6], sys.argv[6:])
"""


def _limited_argv(limits: ProcessLimits, argv: list[str]) -> list[str]:
    numbers = (limits.cpu_s, limits.memory_bytes, limits.file_size_bytes, limits.open_files)
    return [sys.executable, "-I", "-c", _LIMITS_BOOTSTRAP, *map(str, numbers), "--", *argv]


def _spawn_exec(
    argv: list[str], *, cwd: Path, stdin: bool
) -> Coroutine[Any, Any, asyncio.subprocess.Process]:
    return asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=scrubbed_env(),
        start_new_session=True,  # its own process group, killed whole on timeout
    )


@dataclass
class _Finished:
    """What a child process left: its first bytes of output and how many more it wrote."""

    output: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    returncode: int | None = None
    timed_out: bool = False


async def _run_process(
    spawn: Callable[[], Coroutine[Any, Any, asyncio.subprocess.Process]],
    *,
    stdin_data: bytes | None,
    limit_s: float,
) -> _Finished:
    """Start a process, feed it ``stdin_data``, keep the first ``_CAPTURE_BYTES`` of its
    output (reading, and discarding, the rest so it never blocks on a full pipe), and kill
    its whole process group when ``limit_s`` passes or the caller is cancelled."""
    proc = await spawn()
    finished = _Finished()

    async def feed() -> None:
        if proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if stdin_data:
                proc.stdin.write(stdin_data)
                await proc.stdin.drain()
            proc.stdin.close()

    async def drain() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            room = _CAPTURE_BYTES - len(finished.output)
            finished.output += chunk[:room]
            finished.dropped += max(0, len(chunk) - room)

    try:
        async with asyncio.timeout(limit_s):
            await asyncio.gather(feed(), drain())
            finished.returncode = await proc.wait()
    except (TimeoutError, asyncio.CancelledError) as exc:
        _kill_group(proc.pid)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        finished.timed_out = True
    return finished


def _process_result(
    name: str, finished: _Finished, limit: float, limits: ProcessLimits | None = None
) -> ToolResult:
    text, truncated = _cap(finished.output.decode("utf-8", errors="replace"), finished.dropped)
    if finished.timed_out:
        return ToolResult(
            ok=False, output=text, truncated=truncated, error=f"{name}: timed out after {limit:g}s"
        )
    code = finished.returncode
    error = None if code == 0 else _exit_reason(code, text, limits)
    return ToolResult(ok=code == 0, output=text, exit_code=code, truncated=truncated, error=error)


def _exit_reason(code: int | None, output: str, limits: ProcessLimits | None) -> str:
    """``exit code N``, naming the resource limit that ended the process when one did."""
    if code is None or code >= 0:
        hint = ""
        tail = output[-2000:]
        # Python ignores SIGXFSZ: past the file size limit, a write fails with EFBIG instead.
        if limits is not None and "MemoryError" in tail:
            hint = f" (MemoryError: the memory limit is {limits.memory_bytes} bytes)"
        elif limits is not None and "File too large" in tail:
            hint = f" (File too large: the file size limit is {limits.file_size_bytes} bytes)"
        return f"exit code {code}{hint}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"exit code {code}: killed by signal {-code}"
    hint = ""
    if limits is not None and sig == signal.SIGXCPU:
        hint = f": CPU time limit of {limits.cpu_s}s exceeded"
    elif limits is not None and sig == signal.SIGXFSZ:
        hint = f": file size limit of {limits.file_size_bytes} bytes exceeded"
    elif limits is not None and sig == signal.SIGKILL:
        hint = " (the CPU hard limit, or out of memory)"
    return f"exit code {code}: killed by {sig.name}{hint}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# -- http -----------------------------------------------------------------------------------


class _Borrowed(httpx.AsyncBaseTransport):
    """A transport the client may use but not close: it belongs to whoever passed it in and
    serves every fetch, while each fetch's client is closed when the fetch ends."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None


def _vet_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise NetworkPolicyError(f"header name {name[:100]!r} is not a valid token")
        if name.lower() in _MANAGED_HEADERS or name.lower().startswith("proxy-"):
            raise NetworkPolicyError(f"header {name!r} is set by the tool and cannot be given")
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise NetworkPolicyError(
                f"header {name!r} is longer than {MAX_HEADER_VALUE_CHARS} characters"
            )
        if any(ch in value for ch in "\r\n\x00"):
            raise NetworkPolicyError(f"header {name!r} contains a line break or NUL")
    return headers


def _pinned_request(
    client: httpx.AsyncClient,
    target: netguard.Target,
    address: netguard.IPAddress,
    headers: dict[str, str],
) -> httpx.Request:
    """A request that connects to the vetted ``address`` itself, so no second DNS answer (a
    rebinding attack) can move it, while Host and TLS (SNI and certificate checks) still use
    the URL's host name."""
    host = f"[{address}]" if address.version == 6 else str(address)
    url = f"{target.scheme}://{host}:{target.port}{target.path}"
    sent = {"Accept-Encoding": "identity", "User-Agent": "trinity-http-fetch"} | headers
    sent["Host"] = target.host_header
    extensions = {}
    if target.scheme == "https" and target.ip is None:
        extensions["sni_hostname"] = target.host
    return client.build_request("GET", url, headers=sent, extensions=extensions)


async def _read_response(
    response: httpx.Response, target: netguard.Target, hops: int, max_bytes: int
) -> ToolResult:
    body = bytearray()
    cut = False
    async for chunk in response.aiter_bytes():
        room = max_bytes - len(body)
        body += chunk[:room]
        if len(chunk) > room:
            cut = True
            break
    content_type = response.headers.get("content-type", "no content-type")
    if b"\x00" in body[:8192]:
        text = f"[binary content: {len(body)} bytes not shown]"
    else:
        text = bytes(body).decode(_charset(response), errors="replace")
    text, truncated = _cap(text)
    if cut:
        text, truncated = text + f"\n[… response cut at {max_bytes} bytes]", True
    status = response.status_code
    head = f"HTTP {status} {response.reason_phrase}; {content_type}; {len(body)} bytes"
    if hops:
        head += f"; after {hops} redirect{'s' if hops > 1 else ''}, from {target.url}"
    ok = status < 400
    return ToolResult(
        ok=ok,
        output=f"{head}\n\n{text}",
        truncated=truncated,
        error=None if ok else f"http.fetch: HTTP {status} {response.reason_phrase}",
    )


def _charset(response: httpx.Response) -> str:
    name = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        return "utf-8"
    return name


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(arguments)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
