"""The sandbox around ``shell.run`` and ``python.run``, tried as a hostile step would: reading the
parent's environment through ``/proc``, leaving a background process behind, writing outside the
workspace, reaching a loopback service, reading the home folder and the database. Every attempt
runs through the real built-in tools under the real bubblewrap (installed by ``.ci/run``)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinity.tools import sandbox as sandbox_module
from trinity.tools.builtin import BuiltinTools
from trinity.tools.sandbox import Sandbox, probe

needs_bwrap = pytest.mark.skipif(
    not probe().available, reason=f"LOUD SKIP: no working bubblewrap here: {probe().reason}"
)

PLANTED = "planted-secret-7f3a9c2e51"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A folder holding a database file, as the sandboxes' ``hidden`` folder."""
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "trinity.db").write_text("runs")
    return folder


@pytest.fixture
def strict(workspace: Path, tmp_path: Path) -> BuiltinTools:
    return BuiltinTools(workspace, sandbox=Sandbox("strict", hidden=(tmp_path / "db",)))


@pytest.fixture
def loose(workspace: Path, tmp_path: Path) -> BuiltinTools:
    return BuiltinTools(workspace, sandbox=Sandbox("workspace-write", hidden=(tmp_path / "db",)))


@pytest.fixture(params=["strict", "workspace-write"])
def boxed(request: pytest.FixtureRequest, workspace: Path, tmp_path: Path) -> BuiltinTools:
    return BuiltinTools(workspace, sandbox=Sandbox(request.param, hidden=(tmp_path / "db",)))


@needs_bwrap
async def test_the_parent_environment_cannot_be_read(
    boxed: BuiltinTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planted in this process's environ block (what /proc/PID/environ shows) by a child that
    # runs the shell: the block of a process is fixed when it starts.
    monkeypatch.setenv("SOME_API_KEY", PLANTED)
    command = (
        "cat /proc/$PPID/environ; cat /proc/1/environ; "
        "for p in /proc/[0-9]*; do cat $p/environ; done; "
        f"cat /proc/{os.getpid()}/environ; env; echo; echo procs=$(ls /proc | grep -c '^[0-9]')"
    )
    result = await boxed.call("shell.run", {"command": command})
    assert PLANTED not in result.output
    # Only the sandbox's own processes are there: its init, the shell, ls, grep.
    [count] = [line for line in result.output.splitlines() if line.startswith("procs=")]
    assert int(count.removeprefix("procs=")) <= 6, result.output


@needs_bwrap
async def test_a_background_process_dies_with_the_step(
    boxed: BuiltinTools, workspace: Path
) -> None:
    marker = _unique_seconds(1)
    command = f"(sleep {marker}; echo late > late.txt) >/dev/null 2>&1 & echo started"
    result = await boxed.call("shell.run", {"command": command})
    assert result.ok and "started" in result.output
    await asyncio.sleep(0.3)
    assert _alive_with(marker) == [], "a background process outlived the step"
    await asyncio.sleep(1.8)  # past the sleep: what survived would have written by now
    assert not (workspace / "late.txt").exists()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@needs_bwrap
async def test_writes_outside_the_workspace_fail(
    boxed: BuiltinTools, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    home_file = Path.home() / f".trinity-sandbox-test-{os.getpid()}"
    command = (
        f"echo x > {outside}; echo x > {home_file}; echo x > /etc/trinity-test; "
        "echo x > /tmp/private.txt && echo tmp-ok; echo x > inside.txt && echo ws-ok"
    )
    result = await boxed.call("shell.run", {"command": command})
    assert not outside.exists()
    assert not home_file.exists()
    assert not Path("/etc/trinity-test").exists()
    assert not Path("/tmp/private.txt").exists()  # the sandbox's /tmp is its own
    assert "tmp-ok" in result.output and "ws-ok" in result.output
    assert (workspace / "inside.txt").read_text() == "x\n"


@needs_bwrap
async def test_python_runs_inside_and_cannot_write_outside(
    boxed: BuiltinTools, tmp_path: Path
) -> None:
    target = tmp_path / "py-outside.txt"
    code = (
        "import sys, pathlib\n"
        "print(sys.version_info[:2])\n"
        "pathlib.Path('ok.txt').write_text('in')\n"
        "for path in ('/usr/py-outside.txt', " + repr(str(target)) + "):\n"
        "    try:\n        pathlib.Path(path).write_text('out')\n"
        "    except OSError as exc:\n        print('refused', type(exc).__name__)\n"
    )
    result = await boxed.call("python.run", {"code": code})
    assert result.ok, result.error
    assert "refused" in result.output  # /usr is read-only
    # The temp folder's write lands in the sandbox's own /tmp, gone with it.
    assert not target.exists() and not Path("/usr/py-outside.txt").exists()


class _Listener:
    """A TCP server on this machine's loopback that counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.close()


@needs_bwrap
async def test_loopback_services_are_out_of_reach(boxed: BuiltinTools, listener: _Listener) -> None:
    code = (
        "import socket\n"
        "for host in ('127.0.0.1', 'localhost'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {listener.port}), timeout=2).close()\n"
        "        print('connected', host)\n"
        "    except OSError as exc:\n"
        "        print('refused', host, type(exc).__name__)\n"
    )
    result = await boxed.call("python.run", {"code": code})
    assert "connected" not in result.output, result.output
    assert result.output.count("refused") == 2
    assert listener.connections == 0


@needs_bwrap
async def test_the_network_can_be_given_on_purpose(workspace: Path, listener: _Listener) -> None:
    tools = BuiltinTools(workspace, sandbox=Sandbox("strict", network=True))
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {listener.port})).close()"
    result = await tools.call("python.run", {"code": code})
    assert result.ok, result.output
    deadline = time.monotonic() + 2
    while listener.connections == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert listener.connections == 1


@needs_bwrap
async def test_strict_shows_no_home_no_project_and_no_database(
    strict: BuiltinTools, database: Path
) -> None:
    project = Path(__file__).resolve().parent.parent  # this checkout, with its .env if any
    home = Path.home()
    command = (
        f"echo home: $(ls -A {home}); ls {database} && echo db-visible; "
        f"ls {project}/pyproject.toml && echo project-visible; ls /var/log && echo var-visible; "
        "ls /usr/bin/env && echo usr-visible"
    )
    result = await strict.call("shell.run", {"command": command})
    for leak in ("db-visible", "project-visible", "var-visible"):
        assert leak not in result.output, result.output
    assert "usr-visible" in result.output
    # Of the home folder, only the way to Python's own installation (a pyenv there) shows.
    [line] = [line for line in result.output.splitlines() if line.startswith("home:")]
    shown = set(line.removeprefix("home:").split())
    needed = {
        Path(path).relative_to(home).parts[0]
        for path in sandbox_module._python_paths()
        if Path(path).is_relative_to(home)
    }
    assert shown <= needed, f"home entries visible: {shown - needed}"


@needs_bwrap
async def test_workspace_write_reads_the_host_but_hides_the_database(
    loose: BuiltinTools, database: Path
) -> None:
    command = f"ls -d /var/lib && echo var-visible; cat {database}/trinity.db || echo db-hidden"
    result = await loose.call("shell.run", {"command": command})
    assert "var-visible" in result.output  # the host's files can be read
    assert "runs" not in result.output and "db-hidden" in result.output


@needs_bwrap
async def test_resource_limits_still_hold_inside(workspace: Path) -> None:
    from trinity.tools.builtin import ProcessLimits

    tools = BuiltinTools(workspace, python_limits=ProcessLimits(cpu_s=1, memory_bytes=256 << 20))
    result = await tools.call("python.run", {"code": "x = bytearray(512 << 20)"})
    assert not result.ok and result.error is not None and "MemoryError" in result.error


@needs_bwrap
async def test_the_timeout_kills_everything_in_the_sandbox(boxed: BuiltinTools) -> None:
    marker = _unique_seconds()
    started = time.monotonic()
    command = f"trap '' TERM; sleep {marker} & sleep {marker}"
    result = await boxed.call("shell.run", {"command": command, "timeout_s": 0.5})
    assert not result.ok and result.error == "shell.run: timed out after 0.5s"
    assert time.monotonic() - started < 5
    assert _alive_with(marker) == [], "a process of the sandbox outlived its timeout"


def _unique_seconds(whole: int = 30) -> str:
    """A sleep length no other process uses: it names this test's sleeps in /proc (dash has
    no ``exec -a``)."""
    return f"{whole}.{os.getpid()}{time.monotonic_ns() % 1_000_000:06d}"


def _alive_with(marker: str) -> list[int]:
    return [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and marker.encode() in _cmdline(int(pid))
    ]


async def test_without_bubblewrap_it_warns_loudly_and_runs_unsandboxed(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    probe.cache_clear()
    sandbox_module._warn_unavailable.cache_clear()
    try:
        tools = BuiltinTools(workspace, sandbox=Sandbox("strict"))
        with caplog.at_level(logging.WARNING):
            result = await tools.call("shell.run", {"command": "echo ran"})
        assert result.ok and result.output == "ran\n"
        assert "SANDBOX OFF" in caplog.text and "not installed" in caplog.text
        assert "UNSANDBOXED" in Sandbox("strict").describe()

        required = BuiltinTools(workspace, sandbox=Sandbox("strict", required=True))
        refused = await required.call("shell.run", {"command": "echo ran > ran.txt"})
        assert not refused.ok and refused.error is not None
        assert "sandbox_required" in refused.error and "nothing was run" in refused.error
        assert not (workspace / "ran.txt").exists()
    finally:
        monkeypatch.undo()
        probe.cache_clear()
        sandbox_module._warn_unavailable.cache_clear()


async def test_the_child_environment_is_an_allow_list(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw-77@db/app")
    monkeypatch.setenv("MY_DB_PASS", "hunter22")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/abcdef123")
    monkeypatch.setenv("MY_PLAIN_SETTING", "visible-789")
    monkeypatch.setenv("LC_TIME", "C")
    tools = BuiltinTools(workspace, sandbox=Sandbox("off", child_env=("MY_PLAIN_SETTING",)))
    result = await tools.call("shell.run", {"command": "env"})
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert {"PATH", "LC_TIME", "MY_PLAIN_SETTING"} <= names
    assert not names & {"DATABASE_URL", "MY_DB_PASS", "SLACK_WEBHOOK_URL"}


@needs_bwrap
async def test_an_mcp_server_can_be_sandboxed_on_request(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trinity's own built-in tools served over stdio, started sandboxed: their shell can see
    neither this process's environment nor anything outside the server's folder."""
    from trinity.tools.hub import ToolHub
    from trinity.tools.mcp_config import parse_mcp_config

    monkeypatch.setenv("HUB_PARENT_TOKEN", PLANTED)  # (the hub's child env is minimal anyway)
    outside = tmp_path / "outside.txt"
    server = {
        "command": sys.executable,
        "args": [
            "-m",
            "trinity.tools.builtin_server",
            "--workspace",
            str(workspace),
            "--sandbox",
            "off",
        ],
        "cwd": str(workspace),
        "env": {"PYTHONPATH": str(Path(sandbox_module.__file__).parents[2])},  # this trinity
        "sandbox": "strict",
    }
    config = parse_mcp_config({"mcpServers": {"boxed": server}})
    async with ToolHub(config) as hub:
        command = (
            f"cat /proc/{os.getpid()}/environ; echo procs=$(ls /proc | grep -c '^[0-9]'); "
            f"echo x > {outside}; echo x > inside.txt && echo wrote-inside"
        )
        result = await hub.call("boxed.shell.run", {"command": command})
    assert PLANTED not in result.output
    assert "wrote-inside" in result.output and (workspace / "inside.txt").exists()
    assert not outside.exists()
    [count] = [line for line in result.output.splitlines() if line.startswith("procs=")]
    assert int(count.removeprefix("procs=")) <= 8, result.output
