"""The ToolHub against real MCP servers nobody here wrote, plus two deliberately bad ones.

Reference servers: ``@modelcontextprotocol/server-everything`` (stdio and streamable HTTP) and
``@modelcontextprotocol/server-filesystem`` from npm (installed into tests/mcp_servers by a
session fixture), ``mcp-server-time`` and ``mcp-server-git`` from PyPI. The bad servers live in
tests/mcp_servers: ``crash_server.py`` dies on request, ``hang_server.py`` never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema.validators import validator_for

from mcp_fixtures import (
    CRASH_SERVER,
    EVERYTHING_JS,
    FILESYSTEM_JS,
    HANG_SERVER,
)
from trinity.errors import ConfigError
from trinity.tools.base import ToolProvider
from trinity.tools.builtin import MAX_OUTPUT_CHARS, BuiltinTools
from trinity.tools.hub import RestartPolicy, ToolHub, _quick_object_check
from trinity.tools.mcp_config import (
    HttpServerConfig,
    StdioServerConfig,
    load_mcp_config,
    parse_mcp_config,
)

# -- helpers (the `node` fixture is in conftest.py) ---------------------------------------------


def everything(node: str, **options: object) -> StdioServerConfig:
    return StdioServerConfig(
        name="everything", command=node, args=[str(EVERYTHING_JS), "stdio"], **options
    )


def crashy(**options: object) -> StdioServerConfig:
    options.setdefault("name", "crashy")
    return StdioServerConfig(command=sys.executable, args=[str(CRASH_SERVER)], **options)


def hanging(name: str = "hang", *, handshake: bool = False, **options: object) -> StdioServerConfig:
    args = [str(HANG_SERVER), *(["--handshake"] if handshake else [])]
    return StdioServerConfig(name=name, command=sys.executable, args=args, **options)


def time_server() -> StdioServerConfig:
    return StdioServerConfig(name="time", command=sys.executable, args=["-m", "mcp_server_time"])


def proc_stat(pid: int) -> list[str] | None:
    """Fields after the command name in /proc/PID/stat (state, ppid, pgrp, …), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def living_in_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[0] != "Z" and int(stat[2]) == pgid:
                found.append(int(entry))
    return found


def children_running(script: Path) -> list[int]:
    """Our child processes whose command line mentions ``script``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if (
            stat
            and stat[0] != "Z"
            and int(stat[1]) == os.getpid()
            and str(script).encode() in cmdline
        ):
            found.append(int(entry))
    return found


async def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# -- configuration -----------------------------------------------------------------------------


def test_config_file_in_the_common_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "s3cret")
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": "python", "args": ["-m", "mcp_server_time"]},
                    "files": {
                        "command": "node",
                        "args": ["fs.js", "/data"],
                        "env": {"DEBUG": "1"},
                        "cwd": "/srv",
                        "start": "eager",
                        "timeout_s": 5,
                        "autoApprove": ["read_file"],  # another client's key: ignored
                    },
                    "docs": {
                        "url": "http://127.0.0.1:9000/mcp",
                        "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"},
                        "disabled": True,
                    },
                }
            }
        )
    )
    config = load_mcp_config(path)
    assert list(config.servers) == ["time", "files", "docs"]
    time_cfg, files, docs = config.servers.values()
    assert isinstance(time_cfg, StdioServerConfig) and time_cfg.start == "lazy"
    assert time_cfg.timeout_s is None and time_cfg.enabled
    assert isinstance(files, StdioServerConfig)
    assert (files.env, files.cwd, files.start, files.timeout_s) == (
        {"DEBUG": "1"},
        "/srv",
        "eager",
        5,
    )
    assert isinstance(docs, HttpServerConfig) and not docs.enabled
    assert docs.headers == {"Authorization": "Bearer s3cret"}
    assert [s.name for s in config.enabled()] == ["time", "files"]
    # the same model from a dict, as trinity.toml's [mcp.servers.NAME] tables give it
    from_toml = parse_mcp_config(
        {"servers": {"time": {"command": "python"}}}, source="trinity.toml"
    )
    assert from_toml.servers["time"].command == "python"
    hub = ToolHub.from_config({"mcpServers": {"a": {"command": "x"}, "b": {"url": "http://h/m"}}})
    assert hub.server_names == ["a", "b"]


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ({"bad.name": {"command": "x"}}, "server 'bad.name': invalid name"),
        ({"t": {"command": "x", "timout_s": 3}}, "server 't': field 'timout_s': unknown field"),
        ({"t": {"command": "x", "timeout_s": -1}}, "server 't': field 'timeout_s'"),
        ({"t": {"command": "x", "start": "now"}}, "server 't': field 'start'"),
        ({"t": {"args": ["x"]}}, "server 't': needs 'command'"),
        ({"t": {"command": "x", "url": "http://h/mcp"}}, "server 't': give either"),
        ({"t": {"url": "ftp://h/mcp"}}, "server 't': field 'url'"),
        ({"t": {"type": "sse", "url": "http://h/sse"}}, "server 't': field 'type'"),
        ({"t": {"command": "x", "env": {"K": "${TRINITY_NOT_SET_ANYWHERE}"}}}, "TRINITY_NOT_SET"),
        ({"t": "python -m x"}, "server 't': expected an object"),
    ],
)
def test_bad_config_names_file_server_and_field(
    tmp_path: Path, servers: dict, expected: str
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    with pytest.raises(ConfigError) as caught:
        load_mcp_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_unreadable_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read MCP config"):
        load_mcp_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {\n  "a": {"command": "x",}\n}}')
    with pytest.raises(ConfigError, match=rf"^{broken}:2:\d+: not valid JSON"):
        load_mcp_config(broken)


def test_hub_refuses_a_server_configured_twice() -> None:
    with pytest.raises(ConfigError, match="'crashy' is configured twice"):
        ToolHub([crashy(), crashy()])


# -- listing and calling -----------------------------------------------------------------------


async def test_two_servers_list_namespaced_tools_with_schemas(node: str) -> None:
    async with ToolHub([everything(node), time_server()]) as hub:
        assert isinstance(hub, ToolProvider)
        specs = {spec.name: spec for spec in await hub.list_tools()}
    assert {"everything.echo", "everything.get-sum", "time.convert_time"} <= set(specs)
    assert all(name.split(".")[0] in ("everything", "time") for name in specs)
    assert specs["everything.echo"].input_schema["required"] == ["message"]
    convert = specs["time.convert_time"].input_schema
    assert {"source_timezone", "time", "target_timezone"} <= set(convert["properties"])
    assert specs["time.convert_time"].description


async def test_calls_echo_sum_and_time_conversion(node: str) -> None:
    async with ToolHub([everything(node), time_server()]) as hub:
        echo = await hub.call("everything.echo", {"message": "hello hub"})
        total = await hub.call("everything.get-sum", {"a": 2, "b": 40})
        converted = await hub.call(
            "time.convert_time",
            {"source_timezone": "Europe/Paris", "time": "12:00", "target_timezone": "Asia/Tokyo"},
        )
        bad_zone = await hub.call("time.get_current_time", {"timezone": "Mars/Olympus_Mons"})
    assert echo.ok and echo.output == "Echo: hello hub" and echo.duration_s > 0
    assert total.ok and "42" in total.output
    assert converted.ok, converted.error
    data = json.loads(converted.output)
    assert data["source"]["datetime"].startswith(data["source"]["datetime"][:10])
    assert data["target"]["datetime"][11:16] in ("19:00", "20:00")  # DST-dependent offset
    assert data["target"]["timezone"] == "Asia/Tokyo"
    # an error the tool itself reports: an observation with its text, not an exception
    assert not bad_zone.ok and "Mars/Olympus_Mons" in (bad_zone.error or "")


async def test_filesystem_inside_its_allowed_dir(node: str, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    fs = StdioServerConfig(name="files", command=node, args=[str(FILESYSTEM_JS), str(root)])
    async with ToolHub([fs]) as hub:
        wrote = await hub.call(
            "files.write_file", {"path": str(root / "a.txt"), "content": "from the hub\n"}
        )
        read = await hub.call("files.read_text_file", {"path": str(root / "a.txt")})
        missing = await hub.call("files.read_text_file", {"path": str(root / "nope.txt")})
        outside = await hub.call(
            "files.write_file", {"path": str(tmp_path / "escape.txt"), "content": "x"}
        )
    assert wrote.ok, wrote.error
    assert (root / "a.txt").read_text() == "from the hub\n"
    assert read.ok and read.output == "from the hub\n"
    assert not missing.ok and "ENOENT" in (missing.error or "")
    assert not outside.ok and "outside allowed directories" in (outside.error or "")
    assert not (tmp_path / "escape.txt").exists()


async def test_git_status_of_a_temporary_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "untracked_note.txt").write_text("new\n")
    git = StdioServerConfig(name="git", command=sys.executable, args=["-m", "mcp_server_git"])
    async with ToolHub([git]) as hub:
        status = await hub.call("git.git_status", {"repo_path": str(repo)})
        not_a_repo = await hub.call("git.git_status", {"repo_path": str(tmp_path)})
    assert status.ok, status.error
    assert "untracked_note.txt" in status.output
    assert not not_a_repo.ok and not_a_repo.error


async def test_result_blocks_are_summarised(node: str) -> None:
    async with ToolHub([everything(node), crashy()]) as hub:
        image = await hub.call("everything.get-tiny-image", {})
        links = await hub.call("everything.get-resource-links", {"count": 2})
        embedded = await hub.call(
            "everything.get-resource-reference", {"resourceType": "Text", "resourceId": 1}
        )
        structured = await hub.call("crashy.structured", {})
    assert image.ok and "[image: image/png, " in image.output and "bytes]" in image.output
    assert "base64" not in image.output and len(image.output) < 500
    assert links.output.count("[resource link: demo://resource/dynamic/") == 2
    assert "[resource: demo://resource/dynamic/text/1" in embedded.output
    assert structured.ok and json.loads(structured.output) == {"answer": 42, "unit": "none"}


async def test_large_result_is_capped_and_flagged(node: str) -> None:
    config = everything(node, env={"TRINITY_BIG_VALUE": "x" * 100_000})
    async with ToolHub([config]) as hub:
        result = await hub.call("everything.get-env", {})
    assert result.ok and result.truncated
    assert len(result.output) < MAX_OUTPUT_CHARS + 100
    assert result.output.endswith("characters cut]")


async def test_invalid_arguments_are_caught_before_the_call() -> None:
    async with ToolHub([crashy()]) as hub:
        wrong_type = await hub.call("crashy.echo", {"text": 5})
        missing = await hub.call("crashy.echo", {})
        not_an_object = await hub.call("crashy.echo", ["text"])  # type: ignore[arg-type]
        stats = await hub.call("crashy.stats", {})
    assert not wrong_type.ok
    assert wrong_type.error == "invalid arguments for crashy.echo: text: 5 is not of type 'string'"
    assert missing.error == (
        "invalid arguments for crashy.echo: (arguments): 'text' is a required property"
    )
    assert not not_an_object.ok and "expected an object" in (not_an_object.error or "")
    assert "tools/call" not in json.loads(stats.output)  # nothing reached the server


async def test_unknown_tools_name_the_closest_ones(node: str) -> None:
    async with ToolHub([everything(node)]) as hub:
        typo = await hub.call("everything.ecko", {"message": "x"})
        wrong_namespace = await hub.call("evrything.echo", {"message": "x"})
        bare = await hub.call("nonsense", {})
    assert not typo.ok and "unknown tool 'everything.ecko'" in (typo.error or "")
    assert "did you mean everything.echo" in (typo.error or "")
    assert "did you mean everything.echo" in (wrong_namespace.error or "")
    assert "MCP servers: everything" in (bare.error or "")


@given(
    args=st.dictionaries(
        st.sampled_from(["name", "count", "flag", "ratio", "tags", "other"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text()
        | st.lists(st.integers(), max_size=2),
        max_size=5,
    ),
    extra=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_quick_argument_check_never_accepts_what_jsonschema_rejects(
    args: dict, extra: bool
) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "a name"},
            "count": {"type": "integer"},
            "flag": {"type": "boolean", "default": False},
            "ratio": {"type": "number"},
            "tags": {"type": ["array", "null"]},
        },
        "required": ["name"],
        "additionalProperties": extra,
    }
    quick = _quick_object_check(schema)
    assert quick is not None
    valid = validator_for(schema)(schema).is_valid(args)
    if quick(args):
        assert valid
    if isinstance(args.get("name"), str) and set(args) == {"name"}:
        assert quick(args)  # the common case takes the fast path


def test_quick_argument_check_leaves_richer_schemas_to_jsonschema() -> None:
    assert _quick_object_check({"type": "object", "properties": {"n": {"minimum": 1}}}) is None
    assert _quick_object_check({"type": "object", "anyOf": [{}]}) is None
    assert _quick_object_check({"type": "array"}) is None


# -- local providers ---------------------------------------------------------------------------


async def test_local_tools_keep_their_names_beside_servers(tmp_path: Path) -> None:
    builtin_names = [spec.name for spec in await BuiltinTools(tmp_path).list_tools()]
    async with ToolHub([crashy()], local=[BuiltinTools(tmp_path)]) as hub:
        names = [spec.name for spec in await hub.list_tools()]
        wrote = await hub.call("fs.write", {"path": "a.txt", "content": "local"})
        echoed = await hub.call("crashy.echo", {"text": "remote"})
    assert {"fs.write", "shell.run"} <= set(builtin_names)
    assert names[: len(builtin_names)] == builtin_names  # local first, names unchanged
    assert "crashy.echo" in names[len(builtin_names) :]
    assert wrote.ok and (tmp_path / "a.txt").read_text() == "local"
    assert echoed.ok and echoed.output == "remote"


async def test_name_clashes_are_clear_errors(tmp_path: Path) -> None:
    hub = ToolHub([crashy(name="fs")], local=[BuiltinTools(tmp_path)])
    with pytest.raises(
        ConfigError, match=r"local tool 'fs\.read' is in the namespace of MCP server 'fs'"
    ):
        await hub.start()
    clash = await hub.call("fs.read", {"path": "x"})
    assert not clash.ok and "tool name clash" in (clash.error or "")
    await hub.aclose()
    twice = ToolHub(local=[BuiltinTools(tmp_path), BuiltinTools(tmp_path)])
    with pytest.raises(ConfigError, match=r"'fs\.read' is provided by both"):
        await twice.list_tools()
    await twice.aclose()


# -- pooling, start-up and list changes --------------------------------------------------------


async def test_one_process_per_server_even_for_concurrent_first_calls() -> None:
    async with ToolHub([crashy()]) as hub:
        results = await asyncio.gather(
            *(hub.call("crashy.echo", {"text": str(i)}) for i in range(10))
        )
        assert [r.output for r in results] == [str(i) for i in range(10)]
        assert children_running(CRASH_SERVER) == [hub.server_pid("crashy")]
        for _ in range(5):
            await hub.call("crashy.echo", {"text": "again"})
        stats = json.loads((await hub.call("crashy.stats", {})).output)
    assert stats == {"initialize": 1, "tools/list": 1, "tools/call": 15}


async def test_tool_list_is_cached_until_the_server_says_it_changed() -> None:
    async with ToolHub([crashy()]) as hub:
        before = [spec.name for spec in await hub.list_tools()]
        await hub.list_tools()
        assert "crashy.extra" not in before
        grown = await hub.call("crashy.grow", {})
        assert grown.ok
        extra = await hub.call("crashy.extra", {})
        after = [spec.name for spec in await hub.list_tools()]
        stats = json.loads((await hub.call("crashy.stats", {})).output)
    assert extra.ok and extra.output == "extra tool here"
    assert "crashy.extra" in after
    assert stats["tools/list"] == 2  # once at first, once after notifications/tools/list_changed


async def test_eager_servers_start_at_start_and_lazy_ones_on_use(tmp_path: Path) -> None:
    broken = StdioServerConfig(
        name="broken", command=str(tmp_path / "no-such-binary"), start="eager"
    )
    config = [crashy(name="eager", start="eager"), crashy(name="lazy"), broken]
    async with ToolHub(config) as hub:
        problems = await hub.start()
        assert hub.server_pid("eager") is not None and alive(hub.server_pid("eager") or 0)
        assert hub.server_pid("lazy") is None
        assert list(problems) == ["broken"] and "could not start" in problems["broken"]
        call = await hub.call("broken.anything", {})
        assert not call.ok and "MCP server 'broken' could not start" in (call.error or "")
        assert "no-such-binary" in (call.error or "")


async def test_disabled_server_is_known_but_never_started() -> None:
    async with ToolHub([crashy(name="off", enabled=False)]) as hub:
        result = await hub.call("off.echo", {"text": "x"})
        assert await hub.list_tools() == []
    assert not result.ok and "disabled" in (result.error or "")
    assert children_running(CRASH_SERVER) == []


# -- failures ----------------------------------------------------------------------------------


async def test_server_killed_mid_call_fails_cleanly_then_restarts(node: str) -> None:
    async with ToolHub([everything(node)]) as hub:
        assert (await hub.call("everything.echo", {"message": "warm"})).ok
        first_pid = hub.server_pid("everything")
        assert first_pid is not None
        slow = asyncio.create_task(
            hub.call("everything.trigger-long-running-operation", {"duration": 20, "steps": 20})
        )
        await asyncio.sleep(0.5)
        assert not slow.done()
        os.kill(first_pid, signal.SIGKILL)
        result = await asyncio.wait_for(slow, 5)
        assert not result.ok and result.duration_s < 5
        assert "MCP server 'everything' crashed" in (result.error or "")
        assert "everything.trigger-long-running-operation" in (result.error or "")

        again = await hub.call("everything.echo", {"message": "back"})
        assert again.ok and again.output == "Echo: back"
        second_pid = hub.server_pid("everything")
        assert second_pid is not None and second_pid != first_pid and alive(second_pid)
        assert not alive(first_pid)


async def test_server_that_died_while_idle_is_restarted_by_the_next_call() -> None:
    async with ToolHub([crashy()]) as hub:
        assert (await hub.call("crashy.echo", {"text": "one"})).ok
        old_pid = hub.server_pid("crashy")
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        assert await wait_until(lambda: not alive(old_pid))
        await asyncio.sleep(0.1)  # idle: the hub notices the end of the pipe by itself
        assert hub.server_pid("crashy") is None
        result = await hub.call("crashy.echo", {"text": "two"})
        assert result.ok and result.output == "two"  # no failed call: restarted first
        assert hub.server_pid("crashy") not in (None, old_pid)


async def test_crash_reason_carries_the_servers_last_words() -> None:
    async with ToolHub([crashy()]) as hub:
        crashed = await hub.call("crashy.crash", {})
    assert not crashed.ok
    assert "crashing as asked" in (crashed.error or "")


async def test_restarts_back_off_and_stop_at_the_cap() -> None:
    policy = RestartPolicy(base_delay_s=0.3, max_delay_s=5, max_failures=3, window_s=2.5)
    async with ToolHub([crashy()], restart=policy) as hub:
        assert not (await hub.call("crashy.crash", {})).ok  # failure 1
        started = time.monotonic()
        assert not (await hub.call("crashy.crash", {})).ok  # failure 2, restarted at once
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        assert not (await hub.call("crashy.crash", {})).ok  # failure 3, after 0.3 s backoff
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        capped = await hub.call("crashy.echo", {"text": "x"})
        assert time.monotonic() - started < 0.1 and children_running(CRASH_SERVER) == []
        assert not capped.ok
        assert "failed 3 times in the last 2.5s; not restarting it" in (capped.error or "")
        await asyncio.sleep(2.6)  # the window passes
        recovered = await hub.call("crashy.echo", {"text": "x"})
        assert recovered.ok, recovered.error


async def test_server_that_never_answers_is_cut_at_the_timeout(node: str) -> None:
    servers = [hanging(timeout_s=30), everything(node)]
    async with ToolHub(servers, default_timeout_s=60) as hub:
        started = time.monotonic()
        hung, echoed = await asyncio.gather(
            hub.call("hang.anything", {}, timeout_s=1),  # the call's own timeout wins
            hub.call("everything.echo", {"message": "not blocked"}),
        )
        assert 0.9 < time.monotonic() - started < 3
        assert not hung.ok and "timed out after 1s" in (hung.error or "")
        assert echoed.ok  # the other server was not held up
        assert (await hub.call("everything.echo", {"message": "still fine"})).ok


async def test_wedged_server_is_replaced_after_a_timeout() -> None:
    async with ToolHub([hanging("wedge", handshake=True, timeout_s=0.5)]) as hub:
        started = time.monotonic()
        first = await hub.call("wedge.wait", {})  # the server config's timeout
        assert not first.ok and first.error == "wedge.wait: timed out after 0.5s"
        assert time.monotonic() - started < 2
        (old_pid,) = children_running(HANG_SERVER)
        # it ignores SIGTERM; the hub kills it anyway and starts a fresh one on next use
        assert await wait_until(lambda: not alive(old_pid))
        second = await hub.call("wedge.wait", {}, timeout_s=0.3)
        assert not second.ok and "timed out after 0.3s" in (second.error or "")
        assert old_pid not in children_running(HANG_SERVER)


async def test_default_timeout_applies_without_call_or_config(tmp_path: Path) -> None:
    async with ToolHub([hanging("wedge", handshake=True)], default_timeout_s=0.4) as hub:
        result = await hub.call("wedge.wait", {})
    assert result.error == "wedge.wait: timed out after 0.4s"


async def test_start_failures_carry_the_servers_stderr_and_the_startup_limit() -> None:
    dies = StdioServerConfig(
        name="dies", command=sys.executable, args=["-c", "raise SystemExit('fatal: no config')"]
    )
    async with ToolHub([dies, hanging(startup_timeout_s=0.5)]) as hub:
        died = await hub.call("dies.anything", {})
        started = time.monotonic()
        never_ready = await hub.call("hang.anything", {}, timeout_s=10)
        assert time.monotonic() - started < 2
        assert await wait_until(lambda: children_running(HANG_SERVER) == [])
    assert not died.ok and "MCP server 'dies' could not start" in (died.error or "")
    assert "its stderr: fatal: no config" in (died.error or "")
    assert "did not finish starting within 0.5s" in (never_ready.error or "")


async def test_missing_command_is_an_observation(tmp_path: Path) -> None:
    config = StdioServerConfig(name="ghost", command=str(tmp_path / "nothing-here"))
    async with ToolHub([config]) as hub:
        result = await hub.call("ghost.tool", {})
        assert await hub.list_tools() == []
        assert "could not start" in (hub.server_error("ghost") or "")
    assert not result.ok and "MCP server 'ghost' could not start" in (result.error or "")


# -- streamable HTTP ---------------------------------------------------------------------------


class HttpEverything:
    """server-everything in its streamable HTTP mode on a free loopback port."""

    def __init__(self, node: str) -> None:
        self.node = node
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.node, str(EVERYTHING_JS), "streamableHttp"],
            env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, "server-everything (HTTP) exited at start"
                assert time.monotonic() < deadline, "server-everything (HTTP) did not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def http_everything(node: str) -> Iterator[HttpEverything]:
    server = HttpEverything(node)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_streamable_http_server(http_everything: HttpEverything) -> None:
    config = HttpServerConfig(name="web", url=http_everything.url, headers={"X-Trace": "test"})
    async with ToolHub([config]) as hub:
        names = [spec.name for spec in await hub.list_tools()]
        total = await hub.call("web.get-sum", {"a": 1.5, "b": 2})
        echo = await hub.call("web.echo", {"message": "over http"})
        invalid = await hub.call("web.get-sum", {"a": "one"})
    assert "web.echo" in names and "web.get-sum" in names
    assert total.ok and "3.5" in total.output
    assert echo.ok and echo.output == "Echo: over http"
    assert not invalid.ok and (invalid.error or "").startswith("invalid arguments for web.get-sum")


async def test_http_session_is_renewed_after_the_server_restarts(
    http_everything: HttpEverything,
) -> None:
    async with ToolHub([HttpServerConfig(name="web", url=http_everything.url)]) as hub:
        assert (await hub.call("web.echo", {"message": "before"})).ok
        http_everything.stop()
        http_everything.start()  # a new process: it has never heard of our session
        stale = await hub.call("web.echo", {"message": "stale session"})
        renewed = await hub.call("web.echo", {"message": "after"})
        http_everything.stop()
        down = await hub.call("web.echo", {"message": "server down"})
    assert not stale.ok and "will be renewed on next use" in (stale.error or "")
    assert renewed.ok and renewed.output == "Echo: after"
    assert not down.ok and "MCP server 'web'" in (down.error or "")


# -- shutdown and output -----------------------------------------------------------------------


async def test_aclose_leaves_no_child_processes(node: str, tmp_path: Path) -> None:
    servers = [
        everything(node, start="eager"),
        StdioServerConfig(
            name="files", command=node, args=[str(FILESYSTEM_JS), str(tmp_path)], start="eager"
        ),
        crashy(start="eager"),
        hanging("wedge", handshake=True, start="eager"),
    ]
    hub = ToolHub(servers)
    assert await hub.start() == {}
    pids = {name: hub.server_pid(name) for name in hub.server_names}
    grandchild = int((await hub.call("crashy.spawn", {})).output)
    assert alive(grandchild)
    assert all(pid is not None and alive(pid) for pid in pids.values()), pids
    in_flight = [
        asyncio.create_task(
            hub.call("everything.trigger-long-running-operation", {"duration": 20, "steps": 20})
        ),
        asyncio.create_task(hub.call("wedge.wait", {}, timeout_s=60)),
    ]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await hub.aclose()
    assert time.monotonic() - started < 5
    for pid in pids.values():
        assert pid is not None
        assert not alive(pid)
        assert living_in_group(pid) == []  # nothing the server started survives either
    assert not alive(grandchild)  # the crash server's own child, killed with its group
    for task in in_flight:
        result = await asyncio.wait_for(task, 1)
        assert not result.ok and "shut down" in (result.error or "")
    after = await hub.call("crashy.echo", {"text": "x"})
    assert not after.ok and "closed" in (after.error or "")


async def test_nothing_reaches_our_stdout_or_stderr(
    node: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # server-everything greets on stderr; crash_server writes its last words there
    async with ToolHub([everything(node), crashy()]) as hub:
        assert (await hub.call("everything.echo", {"message": "quiet"})).ok
        assert not (await hub.call("crashy.crash", {})).ok
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""
