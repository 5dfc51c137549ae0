"""The built-in tools: workspace confinement, argument errors, and the shell's exit codes,
timeouts (the whole process group dies), scrubbed environment and output cap."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from trinity.tools.builtin import MAX_OUTPUT_CHARS, BuiltinTools


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


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
        "unknown tool 'fs.delete'; available: fs.list, fs.read, fs.write, shell.run"
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
async def test_shell_timeout_kills_the_whole_process_group(tools: BuiltinTools, ws: Path) -> None:
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


async def test_shell_env_is_scrubbed_of_secrets(
    tools: BuiltinTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_KEY", "leak-me-123")
    monkeypatch.setenv("SERVICE_TOKEN", "leak-me-456")
    monkeypatch.setenv("MY_PLAIN_SETTING", "visible-789")
    result = await tools.call("shell.run", {"command": "env"})
    assert result.ok
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert "PATH" in names
    assert "MY_PLAIN_SETTING=visible-789" in result.output.splitlines()
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
