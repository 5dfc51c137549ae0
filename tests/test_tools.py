"""The built-in tools, called directly: workspace confinement, argument errors, the shell's
and Python's exit codes, timeouts (the whole process group dies), limits, scrubbed environment
and output caps; the edit, glob and search tools; ``http.fetch`` against a local server and
its address policy (``netguard``); and the hostile-argument corpus (``hostile_args.py``)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostile_args import (
    CORPUS,
    Hostile,
    LocalHTTPServer,
    NetworkLog,
    RecordingTransport,
    corpus_tools,
    fake_resolver,
    guard_network,
    make_escape_links,
)
from trinity.tools import netguard
from trinity.tools.builtin import MAX_OUTPUT_CHARS, BuiltinTools, ProcessLimits
from trinity.tools.netguard import AllowList, NetworkPolicyError
from trinity.tools.sandbox import Sandbox


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> NetworkLog:
    """No test here may reach, or even resolve, anything off this machine."""
    return guard_network(monkeypatch)


@pytest.fixture
def ws(workspace: Path) -> Path:
    """The shared ``workspace`` fixture (conftest.py), under its short local name."""
    return workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("top secret\n", encoding="utf-8")
    return path


@pytest.fixture
def tools(ws: Path) -> BuiltinTools:
    return BuiltinTools(ws)


# -- files -----------------------------------------------------------------------------------


async def test_write_read_list_round_trip(tools: BuiltinTools, ws: Path) -> None:
    wrote = await tools.call("fs.write", {"path": "notes/a.txt", "content": "line one\n"})
    assert wrote.ok, wrote.error
    assert wrote.output == f"wrote 9 characters to {Path('notes/a.txt')}"
    assert (ws / "notes" / "a.txt").read_text(encoding="utf-8") == "line one\n"

    appended = await tools.call(
        "fs.write", {"path": "notes/a.txt", "content": "line two\n", "append": True}
    )
    assert appended.ok and appended.output.startswith("appended 9 characters")

    read = await tools.call("fs.read", {"path": "notes/a.txt"})
    assert read.ok and read.output == "line one\nline two\n" and not read.truncated

    await tools.call("fs.write", {"path": "top.txt", "content": "x"})
    listed = await tools.call("fs.list", {"path": "."})
    assert listed.ok
    assert listed.output.splitlines() == ["notes/", "top.txt"]
    deep = await tools.call("fs.list", {"path": ".", "recursive": True})
    assert deep.output.splitlines() == ["notes/", "notes/a.txt", "top.txt"]

    # an absolute path that stays inside the workspace is fine
    absolute = await tools.call("fs.read", {"path": str(ws / "top.txt")})
    assert absolute.ok and absolute.output == "x"


async def test_read_missing_file_and_list_of_a_file_are_errors(tools: BuiltinTools) -> None:
    missing = await tools.call("fs.read", {"path": "nope.txt"})
    assert not missing.ok
    assert missing.error is not None and missing.error.startswith("fs.read:")
    assert "'nope.txt' does not exist" in missing.error

    await tools.call("fs.write", {"path": "f.txt", "content": "x"})
    not_dir = await tools.call("fs.list", {"path": "f.txt"})
    assert not not_dir.ok and not_dir.error == "fs.list: 'f.txt' is not a directory"


def _assert_refused(result, path: str) -> None:
    assert not result.ok
    assert result.error is not None
    assert "outside the workspace" in result.error
    assert repr(path) in result.error
    assert result.output == ""


@pytest.mark.parametrize("path", ["../escape.txt", "sub/../../escape.txt", "./../../escape.txt"])
async def test_dotdot_escape_is_refused(tools: BuiltinTools, tmp_path: Path, path: str) -> None:
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = await tools.call("fs.write", {"path": path, "content": "pwned"})
    _assert_refused(result, path)
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path.parent / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # not even a folder made

    read = await tools.call("fs.read", {"path": "../outside/secret.txt"})
    _assert_refused(read, "../outside/secret.txt")


async def test_absolute_path_outside_is_refused(
    tools: BuiltinTools, tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "abs.txt"
    result = await tools.call("fs.write", {"path": str(target), "content": "pwned"})
    _assert_refused(result, str(target))
    assert not target.exists()

    read = await tools.call("fs.read", {"path": str(outside / "secret.txt")})
    _assert_refused(read, str(outside / "secret.txt"))
    assert "top secret" not in (read.error or "")

    listed = await tools.call("fs.list", {"path": "/"})
    _assert_refused(listed, "/")


async def test_symlinks_leading_outside_are_refused(
    tools: BuiltinTools, ws: Path, outside: Path
) -> None:
    (ws / "dirlink").symlink_to(outside, target_is_directory=True)
    (ws / "filelink").symlink_to(outside / "secret.txt")
    (ws / "dangling").symlink_to(outside / "created.txt")  # target does not exist yet

    for path in ("dirlink/secret.txt", "filelink"):
        read = await tools.call("fs.read", {"path": path})
        _assert_refused(read, path)
        assert "top secret" not in read.output

    for path in ("dirlink/new.txt", "filelink", "dangling"):
        wrote = await tools.call("fs.write", {"path": path, "content": "pwned", "append": True})
        _assert_refused(wrote, path)

    listed = await tools.call("fs.list", {"path": "dirlink"})
    _assert_refused(listed, "dirlink")

    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text(encoding="utf-8") == "top secret\n"


async def test_nul_byte_in_path_is_refused(tools: BuiltinTools) -> None:
    result = await tools.call("fs.write", {"path": "a\x00b", "content": "x"})
    assert not result.ok and result.error == "fs.write: path contains a NUL byte"


# -- errors come back as results --------------------------------------------------------------


async def test_unknown_tool_is_a_result_naming_it(tools: BuiltinTools) -> None:
    result = await tools.call("fs.delete", {"path": "x"})
    assert not result.ok
    assert result.error == (
        "unknown tool 'fs.delete'; available: fs.edit, fs.glob, fs.list, fs.read, fs.search, "
        "fs.write, http.fetch, person.ask, python.run, shell.run"
    )


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("fs.write", {"content": "x"}, "invalid arguments for fs.write: path: Field required"),
        ("fs.read", {"path": "a", "mode": "rb"}, "mode: Extra inputs are not permitted"),
        ("fs.read", {"path": 5}, "path: Input should be a valid string"),
        ("shell.run", {"command": ""}, "command: String should have at least 1 character"),
        ("shell.run", {"command": "true", "timeout_s": 0}, "timeout_s: Input should be greater"),
        ("fs.list", "not a mapping", "invalid arguments for fs.list"),
    ],
)
async def test_invalid_arguments_are_a_result_naming_the_field(
    tools: BuiltinTools, ws: Path, name: str, args: object, expected: str
) -> None:
    result = await tools.call(name, args)  # type: ignore[arg-type]
    assert not result.ok
    assert result.error is not None and result.error.startswith(f"invalid arguments for {name}:")
    assert expected in result.error
    assert list(ws.iterdir()) == []


# -- shell -----------------------------------------------------------------------------------


async def test_shell_exit_code_and_output(tools: BuiltinTools, ws: Path) -> None:
    ok = await tools.call("shell.run", {"command": "pwd; echo hello"})
    assert ok.ok and ok.exit_code == 0 and ok.error is None
    assert ok.output.splitlines() == [str(ws), "hello"]

    bad = await tools.call("shell.run", {"command": "echo out; echo err >&2; exit 3"})
    assert not bad.ok
    assert bad.exit_code == 3
    assert bad.error == "exit code 3"
    assert bad.output.splitlines() == ["out", "err"]  # stderr goes into the output too


async def test_shell_stdin_is_closed(tools: BuiltinTools) -> None:
    result = await tools.call("shell.run", {"command": "cat; echo done", "timeout_s": 5})
    assert result.ok and result.output == "done\n"


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_shell_timeout_kills_the_whole_process_group(ws: Path) -> None:
    # Unsandboxed: the pids the command writes must be this machine's (test_sandbox.py has the
    # sandboxed case).
    tools = BuiltinTools(ws, sandbox=Sandbox.off())
    # The sleeps do not hold the output pipe: only killing the whole group stops them.
    command = (
        "echo $$ > pgid.txt; sleep 30 >/dev/null 2>&1 & echo $! > bg.txt; "
        "sleep 30 >/dev/null 2>&1; echo no"
    )
    started = time.monotonic()
    result = await tools.call("shell.run", {"command": command, "timeout_s": 1.0})
    elapsed = time.monotonic() - started

    assert not result.ok
    assert result.error == "shell.run: timed out after 1s"
    assert result.exit_code is None
    assert elapsed < 10, f"the call took {elapsed:.1f}s"

    pgid = int((ws / "pgid.txt").read_text())
    background = int((ws / "bg.txt").read_text())
    assert pgid != os.getpgrp()  # the command ran in its own group
    deadline = time.monotonic() + 3
    while (_group_members(pgid) or _alive(background)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _group_members(pgid) == [], "processes of the command's group survived the timeout"
    assert not _alive(background), "the backgrounded sleep survived the timeout"


async def test_shell_timeout_from_the_caller_wins_when_shorter(tools: BuiltinTools) -> None:
    started = time.monotonic()
    result = await tools.call("shell.run", {"command": "sleep 20"}, timeout_s=0.3)
    assert not result.ok and result.error == "shell.run: timed out after 0.3s"
    assert time.monotonic() - started < 5


async def test_shell_uses_the_default_timeout_given_to_the_tools(ws: Path) -> None:
    tools = BuiltinTools(ws, default_timeout_s=0.2)
    result = await tools.call("shell.run", {"command": "sleep 1.5"})
    assert not result.ok and result.error is not None and "timed out" in result.error


async def test_shell_env_is_an_allow_list(
    tools: BuiltinTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_KEY", "leak-me-123")
    monkeypatch.setenv("SERVICE_TOKEN", "leak-me-456")
    monkeypatch.setenv("MY_PLAIN_SETTING", "hidden-789")
    result = await tools.call("shell.run", {"command": "env"})
    assert result.ok
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert "PATH" in names
    assert "MY_PLAIN_SETTING" not in names  # not on the allow-list (child_env adds names)
    assert "MY_API_KEY" not in names and "SERVICE_TOKEN" not in names
    assert "leak-me" not in result.output


async def test_shell_output_over_the_cap_is_truncated(tools: BuiltinTools) -> None:
    size = MAX_OUTPUT_CHARS + 10_000
    result = await tools.call("shell.run", {"command": f"head -c {size} /dev/zero | tr '\\0' x"})
    assert result.ok and result.exit_code == 0
    assert result.truncated is True
    assert result.output.startswith("x" * MAX_OUTPUT_CHARS)
    assert "x" * (MAX_OUTPUT_CHARS + 1) not in result.output
    assert result.output.endswith("[… 10000 characters cut]")
    assert len(result.output) < MAX_OUTPUT_CHARS + 100

    small = await tools.call("shell.run", {"command": "echo short"})
    assert small.truncated is False and small.output == "short\n"


async def test_read_over_the_cap_is_truncated(tools: BuiltinTools, ws: Path) -> None:
    (ws / "big.txt").write_text("y" * (MAX_OUTPUT_CHARS + 5), encoding="utf-8")
    result = await tools.call("fs.read", {"path": "big.txt"})
    assert result.ok and result.truncated is True
    assert result.output.endswith("[… 5 characters cut]")


async def test_fifos_and_devices_are_refused_without_blocking(
    tools: BuiltinTools, ws: Path
) -> None:
    os.mkfifo(ws / "pipe")  # opening a FIFO for reading would block until a writer comes
    started = time.monotonic()
    read = await tools.call("fs.read", {"path": "pipe"}, timeout_s=5)
    write = await tools.call("fs.write", {"path": "pipe", "content": "x"}, timeout_s=5)
    assert time.monotonic() - started < 2
    for result in (read, write):
        assert not result.ok and "'pipe' is not a regular file" in (result.error or "")


async def test_reading_a_huge_file_reads_only_what_is_returned(
    tools: BuiltinTools, ws: Path
) -> None:
    with (ws / "big.txt").open("w") as handle:
        handle.write("y" * 5_000_000)
    result = await tools.call("fs.read", {"path": "big.txt"})
    assert result.ok and result.truncated
    assert len(result.output) < 70_000


async def test_shell_output_far_past_the_cap_is_drained_not_kept(tools: BuiltinTools) -> None:
    result = await tools.call("shell.run", {"command": "head -c 3000000 /dev/zero | tr '\\0' y"})
    assert result.ok and result.truncated
    assert len(result.output) < MAX_OUTPUT_CHARS + 200
    # 3 MB were written; the first 256 KB were kept and the rest counted, not stored
    assert result.output.endswith("characters cut, and 2744000 more bytes]")


# -- fs.edit ---------------------------------------------------------------------------------


async def test_edit_replaces_a_unique_text(tools: BuiltinTools, ws: Path) -> None:
    (ws / "app.py").write_bytes(b"name = 'old'\r\nprint(name)\r\n")
    (ws / "app.py").chmod(0o750)
    result = await tools.call("fs.edit", {"path": "app.py", "old": "'old'", "new": "'new'"})
    assert result.ok and result.output == "replaced 1 occurrence in app.py"
    assert (ws / "app.py").read_bytes() == b"name = 'new'\r\nprint(name)\r\n"  # CRLF kept
    assert stat.S_IMODE((ws / "app.py").stat().st_mode) == 0o750  # mode kept
    assert sorted(p.name for p in ws.iterdir()) == ["app.py"]  # no temp file left


async def test_edit_refuses_a_missing_or_ambiguous_text(tools: BuiltinTools, ws: Path) -> None:
    (ws / "f.txt").write_text("a-b-a-b-a", encoding="utf-8")
    missing = await tools.call("fs.edit", {"path": "f.txt", "old": "zzz", "new": "y"})
    assert not missing.ok
    assert missing.error == "fs.edit: `old` text not found in 'f.txt'; nothing changed"

    ambiguous = await tools.call("fs.edit", {"path": "f.txt", "old": "a", "new": "y"})
    assert not ambiguous.ok and ambiguous.error is not None
    assert "occurs 3 times in 'f.txt'" in ambiguous.error
    assert "pass count=3 or all=true" in ambiguous.error

    wrong_count = await tools.call("fs.edit", {"path": "f.txt", "old": "a", "new": "y", "count": 2})
    assert not wrong_count.ok and "occurs 3 times in 'f.txt', not 2" in (wrong_count.error or "")
    assert (ws / "f.txt").read_text(encoding="utf-8") == "a-b-a-b-a"  # untouched by failures

    counted = await tools.call("fs.edit", {"path": "f.txt", "old": "a", "new": "y", "count": 3})
    assert counted.ok and counted.output == "replaced 3 occurrences in f.txt"
    every = await tools.call("fs.edit", {"path": "f.txt", "old": "b", "new": "c", "all": True})
    assert every.ok and every.output == "replaced 2 occurrences in f.txt"
    assert (ws / "f.txt").read_text(encoding="utf-8") == "y-c-y-c-y"


async def test_edit_argument_and_file_errors(tools: BuiltinTools, ws: Path) -> None:
    both = await tools.call(
        "fs.edit", {"path": "f.txt", "old": "a", "new": "b", "count": 1, "all": True}
    )
    assert not both.ok and "give `count` or `all`, not both" in (both.error or "")
    empty_old = await tools.call("fs.edit", {"path": "f.txt", "old": "", "new": "b"})
    assert not empty_old.ok and "old: String should have at least 1 character" in (
        empty_old.error or ""
    )
    (ws / "latin.txt").write_bytes("café".encode("latin-1"))
    binary = await tools.call("fs.edit", {"path": "latin.txt", "old": "caf", "new": "x"})
    assert not binary.ok and binary.error == "fs.edit: 'latin.txt' is not UTF-8 text"
    absent = await tools.call("fs.edit", {"path": "nope.txt", "old": "a", "new": "b"})
    assert not absent.ok and absent.error == "fs.edit: 'nope.txt' does not exist"


# -- fs.glob ---------------------------------------------------------------------------------


@pytest.fixture
def tree(ws: Path) -> Path:
    for rel in ("a.py", "src/b.py", "src/pkg/c.py", "src/pkg/data.json", "docs/readme.md"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(f"# {rel}\n", encoding="utf-8")
    (ws / "inner-link").symlink_to(ws / "src")  # a symlink that stays inside is fine
    return ws


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**/*.py", ["a.py", "src/b.py", "src/pkg/c.py"]),
        ("*.py", ["a.py"]),
        ("src/*", ["src/b.py", "src/pkg/"]),
        ("src/**", ["src/b.py", "src/pkg/", "src/pkg/c.py", "src/pkg/data.json"]),
        ("src/**/*.json", ["src/pkg/data.json"]),
        ("*/readme.[mr]d", ["docs/readme.md"]),
        ("docs", ["docs/"]),
        ("inner-link/b.py", ["inner-link/b.py"]),
        ("inner-*", ["inner-link/"]),
    ],
)
async def test_glob_matches(tools: BuiltinTools, tree: Path, pattern: str, expected: list) -> None:
    result = await tools.call("fs.glob", {"pattern": pattern})
    assert result.ok, result.error
    assert result.output.splitlines() == expected


async def test_glob_no_match_and_result_cap(tools: BuiltinTools, tree: Path) -> None:
    none = await tools.call("fs.glob", {"pattern": "**/*.rs"})
    assert none.ok and none.output == "no paths match '**/*.rs'"
    nothing = await tools.call("fs.glob", {"pattern": "./"})
    assert (
        not nothing.ok and nothing.error == "fs.glob: pattern './' names no path; try '*' or '**'"
    )
    capped = await tools.call("fs.glob", {"pattern": "**", "max_results": 2})
    assert capped.ok and capped.truncated
    assert capped.output.splitlines()[-1] == "[more than 2 paths match; showing the first ones]"
    assert len(capped.output.splitlines()) == 3


# -- fs.search -------------------------------------------------------------------------------


async def test_search_regex_literal_case_and_include(tools: BuiltinTools, tree: Path) -> None:
    (tree / "src" / "pkg" / "c.py").write_text("x = 1\nPRICE = 2.5\nprice = 3\n", encoding="utf-8")
    regex = await tools.call("fs.search", {"pattern": r"^price = \d"})
    assert regex.ok, regex.error
    assert regex.output.splitlines() == [
        "src/pkg/c.py:3: price = 3",
        "[1 match in 5 files searched]",
    ]
    literal = await tools.call("fs.search", {"pattern": "2.5", "literal": True})
    assert literal.output.splitlines()[0] == "src/pkg/c.py:2: PRICE = 2.5"
    folded = await tools.call("fs.search", {"pattern": "price", "ignore_case": True})
    assert [line.split(":")[1] for line in folded.output.splitlines()[:2]] == ["2", "3"]
    by_name = await tools.call("fs.search", {"pattern": "#", "include": "*.md"})
    assert by_name.output.splitlines()[0] == "docs/readme.md:1: # docs/readme.md"
    by_path = await tools.call("fs.search", {"pattern": "#", "include": "src/*.py"})
    assert by_path.output.splitlines()[0] == "src/b.py:1: # src/b.py"
    one_file = await tools.call("fs.search", {"pattern": "x", "path": "src/pkg/c.py"})
    assert one_file.output.splitlines()[0] == "src/pkg/c.py:1: x = 1"


async def test_search_skips_binary_and_caps_matches(tools: BuiltinTools, ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"needle\x00needle")
    (ws / "many.txt").write_text("needle\n" * 50 + "x" * 1000 + "needle\n", encoding="utf-8")
    result = await tools.call("fs.search", {"pattern": "needle", "max_matches": 10})
    assert result.ok and result.truncated
    lines = result.output.splitlines()
    assert lines[:2] == ["many.txt:1: needle", "many.txt:2: needle"]
    assert lines[10:] == [
        "[stopped at 10 matches]",
        "[10 matches in 1 file searched; skipped: 1 binary]",
    ]
    long_line = await tools.call("fs.search", {"pattern": "x{1000}needle"})
    assert long_line.output.splitlines()[0].endswith("x […]")  # a long line is cut


async def test_search_errors(tools: BuiltinTools) -> None:
    bad = await tools.call("fs.search", {"pattern": "(unclosed"})
    assert not bad.ok and bad.error is not None
    assert bad.error.startswith("fs.search: invalid regular expression '(unclosed'")
    missing = await tools.call("fs.search", {"pattern": "x", "path": "nope"})
    assert not missing.ok and missing.error == "fs.search: 'nope' does not exist"


# -- python.run ------------------------------------------------------------------------------


async def test_python_runs_isolated_in_the_workspace(
    tools: BuiltinTools, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_KEY", "leak-me")
    monkeypatch.setenv("PYTHONSTARTUP", str(ws / "evil.py"))  # -I ignores PYTHON* variables
    code = (
        "import os, resource, sys\n"
        "print(os.getcwd())\n"
        "print(sys.flags.isolated, 'MY_API_KEY' in os.environ)\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[0])\n"
        "print(input.__name__, sys.stdin.read() == '')\n"
    )
    result = await tools.call("python.run", {"code": code})
    assert result.ok, result.error
    assert result.exit_code == 0
    assert result.output.splitlines() == [str(ws), "1 False", str(1 << 30), "input True"]


async def test_python_exit_code_and_traceback(tools: BuiltinTools) -> None:
    result = await tools.call("python.run", {"code": "print('before')\nraise SystemExit(4)"})
    assert not result.ok and result.exit_code == 4 and result.error == "exit code 4"
    assert result.output == "before\n"
    crash = await tools.call("python.run", {"code": "1 / 0"})
    assert crash.exit_code == 1 and "ZeroDivisionError" in crash.output


async def test_python_large_script_goes_through_stdin(tools: BuiltinTools) -> None:
    code = "total = 0\n" + "total += 1\n" * 8000 + "print(total)\n"  # ~90 KB: over argv limits
    result = await tools.call("python.run", {"code": code})
    assert result.ok and result.output == "8000\n"


async def test_python_limits_are_configurable(ws: Path) -> None:
    tools = BuiltinTools(ws, python_limits=ProcessLimits(cpu_s=1, memory_bytes=256 << 20))
    result = await tools.call(
        "python.run", {"code": "import resource\nprint(resource.getrlimit(resource.RLIMIT_CPU))"}
    )
    assert result.output == "(1, 2)\n"
    loop = await tools.call("python.run", {"code": "while True: pass"})
    assert loop.exit_code == -24 and "CPU time limit of 1s exceeded" in (loop.error or "")


# -- http.fetch ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as server:
        yield server


@pytest.fixture
def fetcher(ws: Path) -> BuiltinTools:
    return BuiltinTools(ws, allow_hosts={"127.0.0.1"}, resolver=fake_resolver)


async def test_fetch_text(fetcher: BuiltinTools, web: LocalHTTPServer) -> None:
    result = await fetcher.call("http.fetch", {"url": f"{web.origin}/hello"})
    assert result.ok, result.error
    head, body = result.output.split("\n\n", 1)
    assert head == "HTTP 200 OK; text/plain; charset=utf-8; 27 bytes"
    assert body == "hello from the test server\n"
    latin = await fetcher.call("http.fetch", {"url": f"{web.origin}/latin1"})
    assert latin.output.endswith("\n\ncafé\n")


async def test_fetch_sends_headers_to_the_pinned_address(ws: Path, web: LocalHTTPServer) -> None:
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    tools = BuiltinTools(ws, allow_hosts={"127.0.0.1"}, resolver=resolver)
    url = f"http://app.test:{web.port}/headers"
    result = await tools.call("http.fetch", {"url": url, "headers": {"X-Trace": "abc"}})
    assert result.ok, result.error
    echoed = result.output.split("\n\n", 1)[1].splitlines()
    assert f"host: app.test:{web.port}" in echoed  # the name, though we connected to the IP
    assert "x-trace: abc" in echoed
    assert "accept-encoding: identity" in echoed
    assert looked_up == ["app.test"]  # resolved once; the connection used that answer


async def test_fetch_https_is_pinned_with_sni_for_the_name(ws: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok", headers={"content-type": "text/plain"})

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]

    tools = BuiltinTools(ws, resolver=resolver, http_transport=httpx.MockTransport(handler))
    result = await tools.call("http.fetch", {"url": "https://Example.COM/caf\u00e9?q=1#frag"})
    assert result.ok, result.error
    again = await tools.call("http.fetch", {"url": "http://example.com:8080/"})
    assert again.ok, again.error  # the transport passed in outlives each fetch
    request, second = seen
    assert request.url.host == "93.184.216.34" and request.url.scheme == "https"
    assert request.url.raw_path == b"/caf%C3%A9?q=1"
    assert request.headers["host"] == "example.com"
    assert request.extensions["sni_hostname"] == "example.com"
    assert second.url.port == 8080 and second.headers["host"] == "example.com:8080"
    assert "sni_hostname" not in second.extensions  # plain http: no TLS


async def test_fetch_caps_size_time_and_reports_status(
    fetcher: BuiltinTools, web: LocalHTTPServer
) -> None:
    big = await fetcher.call("http.fetch", {"url": f"{web.origin}/big", "max_bytes": 1000})
    assert big.ok and big.truncated
    assert big.output.endswith("z" * 1000 + "\n[… response cut at 1000 bytes]")
    default_cap = await fetcher.call("http.fetch", {"url": f"{web.origin}/big"})
    assert default_cap.truncated and "2000000 bytes" in default_cap.output.splitlines()[0]

    started = time.monotonic()
    slow = await fetcher.call("http.fetch", {"url": f"{web.origin}/slow", "timeout_s": 0.5})
    assert not slow.ok and slow.error == "http.fetch: timed out after 0.5s"
    assert time.monotonic() - started < 2.5

    missing = await fetcher.call("http.fetch", {"url": f"{web.origin}/missing"})
    assert not missing.ok and missing.error == "http.fetch: HTTP 404 Not Found"
    assert missing.output.endswith("no such page\n")

    binary = await fetcher.call("http.fetch", {"url": f"{web.origin}/binary"})
    assert binary.ok and binary.output.endswith("[binary content: 13 bytes not shown]")


async def test_fetch_follows_redirects_and_drops_headers_across_origins(
    ws: Path, web: LocalHTTPServer
) -> None:
    tools = BuiltinTools(ws, allow_hosts={"127.0.0.1", "localhost"})
    same = await tools.call("http.fetch", {"url": f"{web.origin}/redirect?to=/hello"})
    assert same.ok and same.output.endswith("hello from the test server\n")
    assert f"after 1 redirect, from {web.origin}/hello" in same.output.splitlines()[0]

    other_origin = f"http://localhost:{web.port}/headers"
    crossed = await tools.call(
        "http.fetch",
        {"url": f"{web.origin}/redirect?to={other_origin}", "headers": {"X-Secret": "s3"}},
    )
    assert crossed.ok, crossed.error
    assert "x-secret" not in crossed.output  # a header meant for one origin stays there

    chained = await tools.call(
        "http.fetch", {"url": f"{web.origin}/redirect?to=/redirect%3Fto%3D/missing"}
    )
    assert chained.ok is False and chained.error == "http.fetch: HTTP 404 Not Found"


async def test_fetch_gives_up_after_too_many_redirects(ws: Path, web: LocalHTTPServer) -> None:
    tools = BuiltinTools(ws, allow_hosts={"127.0.0.1"})
    result = await tools.call("http.fetch", {"url": f"{web.origin}/loop"})
    assert not result.ok and result.error == "http.fetch: more than 5 redirects"


# -- netguard --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("10.255.0.1", "private address (10.0.0.0/8)"),
        ("172.31.255.255", "private address (172.16.0.0/12)"),
        ("192.168.0.1", "private address (192.168.0.0/16)"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local address"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::", "unspecified"),
        ("::1", "IPv6 loopback"),
        ("::ffff:10.0.0.1", "wrapping 10.0.0.1, a private address"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::a9fe:a9fe", "wrapping 169.254.169.254"),
        ("2002:7f00:1::", "wrapping 127.0.0.1"),
        ("fc00::1", "unique-local"),
        ("fdff:ffff::1", "unique-local"),
        ("fe80::1", "link-local IPv6"),
        ("febf::1", "link-local IPv6"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast IPv6"),
        ("2001:db8::1", "documentation"),
        ("2001:0:4136:e378::1", "Teredo"),
        ("100::1", "discard-only"),
    ],
)
def test_forbidden_addresses(address: str, reason: str) -> None:
    refusal = netguard.address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert netguard.address_refusal(ipaddress.ip_address(address)) is None


@given(st.ip_addresses(v=4))
def test_no_non_global_ipv4_is_ever_allowed(ip: ipaddress.IPv4Address) -> None:
    if netguard.address_refusal(ip) is None:
        assert ip.is_global
    # the same address wrapped in IPv6 gets the same verdict
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    assert (netguard.address_refusal(mapped) is None) == (netguard.address_refusal(ip) is None)


@given(st.ip_addresses(v=6))
def test_no_non_global_ipv6_is_ever_allowed(ip: ipaddress.IPv6Address) -> None:
    if netguard.address_refusal(ip) is None:
        assert ip.is_global or netguard.embedded_ipv4(ip) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.258", "10.1.1.2"),
        ("1.2.3.4", "1.2.3.4"),
        ("example.com", None),
        ("1.2.3.example", None),
    ],
)
def test_numeric_hosts_in_every_spelling(host: str, expected: str | None) -> None:
    parsed = netguard.parse_ipv4_host(host)
    assert (str(parsed) if parsed else None) == expected


@pytest.mark.parametrize("host", ["08.0.0.1", "1.2.3.4.5", "256.1.1.1", "1.08", "4294967296"])
def test_malformed_numeric_hosts_are_refused(host: str) -> None:
    with pytest.raises(NetworkPolicyError, match="numeric address"):
        netguard.parse_ipv4_host(host)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("//example.com/", "scheme none is not allowed"),
        ("http://exa mple.com/", "forbidden character ' '"),
        ("http://example.com\\@127.0.0.1/", "forbidden character"),
        ("http://a@b/", "credentials"),
        ("http:///path", "no host"),
        ("http://example.com:0/", "invalid port"),
        ("http://example.com:70000/", "invalid port"),
        ("http://[::1/", "does not parse"),
        ("http://ex%61mple.com/", "characters a host name cannot"),
        ("http://" + "a" * 9000, "longer than 8192"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(NetworkPolicyError, match=re.escape(message)):
        netguard.parse_url(url)


def test_url_parts() -> None:
    target = netguard.parse_url("HTTPS://Bücher.Example:8443/p?q=1#frag")
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "xn--bcher-kva.example",
        8443,
        "/p?q=1",
    )
    assert target.host_header == "xn--bcher-kva.example:8443"
    assert netguard.parse_url("http://[::1]:80/").host_header == "[::1]"


def test_allow_list() -> None:
    allow = AllowList.parse(["127.0.0.1", "10.0.0.0/8", "[::1]", "Intranet.Test"])
    assert allow.allows_address(ipaddress.ip_address("10.9.9.9"))
    assert allow.allows_address(ipaddress.ip_address("::ffff:127.0.0.1"))  # mapped = same
    assert not allow.allows_address(ipaddress.ip_address("127.0.0.2"))
    assert allow.allows_host("intranet.test")
    netguard.check_resolved("intranet.test", ["192.168.1.1"], allow)  # a named exception
    with pytest.raises(ValueError, match="not a host, address or CIDR"):
        AllowList.parse(["bad host!"])


async def test_resolution_checks_every_answer_and_skips_literals() -> None:
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return {"ok.test": ["8.8.8.8", "8.8.4.4"], "empty.test": []}[host]

    ip = await netguard.resolve_and_check(netguard.parse_url("http://ok.test/"), resolver=resolver)
    assert str(ip) == "8.8.8.8"
    with pytest.raises(NetworkPolicyError, match="did not resolve"):
        await netguard.resolve_and_check(
            netguard.parse_url("http://empty.test/"), resolver=resolver
        )
    with pytest.raises(NetworkPolicyError, match="could not be resolved"):
        await netguard.resolve_and_check(
            netguard.parse_url("http://x.test/"), resolver=fake_resolver
        )
    literal = await netguard.resolve_and_check(
        netguard.parse_url("http://1.1.1.1/"), resolver=resolver
    )
    assert str(literal) == "1.1.1.1" and calls == ["ok.test", "empty.test"]


# -- the hostile corpus ----------------------------------------------------------------------


def test_the_corpus_is_big_and_unique() -> None:
    ids = [row.id for row in CORPUS]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("row", CORPUS, ids=lambda row: row.id)
async def test_hostile_argument_is_refused(
    row: Hostile, ws: Path, outside: Path, web: LocalHTTPServer, network: NetworkLog
) -> None:
    make_escape_links(ws, outside)
    before = sorted(p.name for p in outside.parent.iterdir())
    transport = RecordingTransport()
    tools = corpus_tools(ws, transport, row.allow)
    args = {
        key: value.replace("{server}", web.origin).replace("{outside}", str(outside))
        if isinstance(value, str)
        else value
        for key, value in row.args.items()
    }

    started = time.monotonic()
    result = await tools.call(row.tool, args)
    elapsed = time.monotonic() - started

    if row.in_output:  # the tool did its job and left the hostile part out, saying so
        assert result.ok, result.error
        assert row.expect in result.output
    else:
        assert not result.ok, f"{row.id} was not refused: {result.output[:200]!r}"
        assert result.error is not None and row.expect in result.error, result.error
    assert elapsed < row.max_seconds, f"{row.id} took {elapsed:.1f}s"
    # nothing outside the workspace was read, written or created
    assert "top secret" not in result.output and "top secret" not in (result.error or "")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text(encoding="utf-8") == "top secret\n"
    assert sorted(p.name for p in outside.parent.iterdir()) == before
    # no traffic left this machine; the only requests sent went to the allowed local server
    assert network.blocked == []
    assert all(request.url.host == "127.0.0.1" for request in transport.requests)
    expected_requests = 1 if row.args.get("url", "").startswith("{server}") else 0
    assert len(transport.requests) == expected_requests
