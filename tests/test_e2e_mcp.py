"""Whole runs whose plans use tools from MCP servers: two at once, and Trinity's own."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from mcp_fixtures import EVERYTHING_JS, HANG_SERVER
from trinity.config import Settings
from trinity.errors import ConfigError, InputError, PlanFileError
from trinity.events import EventBase, ToolServerProblem
from trinity.llm.scripted import ScriptedProvider
from trinity.runtime import Runtime
from trinity.state import StepStatus, StopReason
from trinity.tools import ToolHub, parse_mcp_config


def servers_file(tmp_path: Path, node: str) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {
                        "command": sys.executable,
                        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
                    },
                    "everything": {"command": node, "args": [str(EVERYTHING_JS), "stdio"]},
                }
            }
        )
    )
    return path


PLAN = {
    "rationale": "ask one server for the time, have the other echo it, keep a note",
    "steps": [
        {
            "id": "now",
            "tool": "time.convert_time",
            "args": {"source_timezone": "UTC", "time": "12:30", "target_timezone": "Asia/Tokyo"},
            "checks": [{"output_contains": "21:30"}],
        },
        {
            "id": "echo",
            "tool": "everything.echo",
            "args": {"message": "Tokyo is at 21:30"},
            "checks": [{"output_contains": "Echo: Tokyo is at 21:30"}],
        },
        {
            "id": "note",
            "tool": "fs.write",
            "args": {"path": "note.txt", "content": "Tokyo is at 21:30"},
            "checks": [{"file_contains": {"path": "note.txt", "text": "21:30"}}],
        },
    ],
}


async def test_atlas_plans_with_tools_from_two_servers_at_once(
    tmp_path: Path, workspace: Path, node: str
) -> None:
    settings = Settings(
        database_url=str(tmp_path / "t.db"),
        workspace=workspace,
        mcp_servers_file=servers_file(tmp_path, node),
    )
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(PLAN)},
            {
                "match": {"purpose": "grisha"},
                "text": '{"passed": true, "reason": "ok"}',
                "repeat": True,
            },
        ]
    )
    runtime = Runtime(settings, llm=llm)
    try:
        state = await runtime.start(runtime.prepare("What time is 12:30 UTC in Tokyo?"))
    finally:
        runtime.close()

    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert [s.status for s in state.plan.steps] == [StepStatus.SUCCEEDED] * 3
    # Atlas was offered the tools of both servers and the built-in ones, with their schemas
    offered = llm.requests[0].messages[0].content
    for name in ("time.convert_time", "everything.echo", "fs.write"):
        assert f"- {name}:" in offered
    assert "target_timezone: string" in offered  # the MCP tool's arguments, as a signature
    assert (workspace / "note.txt").read_text() == "Tokyo is at 21:30"
    assert json.loads(state.plan.steps[0].attempts[-1].result.output)["target"][
        "datetime"
    ].endswith("21:30:00+09:00")


async def test_a_plan_file_naming_an_unknown_server_is_refused(
    tmp_path: Path, workspace: Path, node: str
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("steps:\n  - id: a\n    tool: weather.today\n")
    settings = Settings(
        database_url=str(tmp_path / "t.db"),
        workspace=workspace,
        mcp_servers_file=servers_file(tmp_path, node),
    )
    runtime = Runtime(settings)
    try:
        with pytest.raises(PlanFileError, match=r"unknown tool 'weather\.today'"):
            runtime.prepare(str(plan))
    finally:
        runtime.close()


async def test_a_run_uses_only_the_servers_it_names_and_keeps_them_when_resumed(
    tmp_path: Path, workspace: Path, node: str
) -> None:
    settings = Settings(
        database_url=str(tmp_path / "t.db"),
        workspace=workspace,
        mcp_servers_file=servers_file(tmp_path, node),
    )
    llm = ScriptedProvider(
        [
            {"match": {"purpose": "atlas.plan"}, "text": json.dumps(PLAN), "repeat": True},
            {"match": {"purpose": "grisha"}, "text": '{"passed": true, "reason": "ok"}'},
        ]
    )
    runtime = Runtime(settings, llm=llm)
    try:
        with pytest.raises(InputError, match=r"unknown MCP server\(s\) \['weather'\]; configured"):
            runtime.prepare("What time is it?", mcp_servers=["weather"])
        request = runtime.prepare("What time is it in Tokyo?", mcp_servers=["everything"])
        state = await runtime.start(request)
    finally:
        runtime.close()
    # Atlas was offered the chosen server's tools only; its plan on `time.*` cannot run
    offered = llm.requests[0].messages[0].content
    assert "- everything.echo:" in offered and "time.convert_time" not in offered
    assert state.mcp_servers == ["everything"]
    assert state.stop_reason != StopReason.COMPLETED
    reader = Runtime(settings)
    try:
        stored = reader.get_run(state.run_id).state
    finally:
        reader.close()
    assert stored is not None and stored.mcp_servers == ["everything"]


async def test_the_built_in_tools_also_run_as_a_child_mcp_server(workspace: Path) -> None:
    """`trinity mcp serve` is the same implementation the runtime uses in-process."""
    config = parse_mcp_config(
        {
            "mcpServers": {
                "trinity": {
                    "command": sys.executable,
                    "args": ["-m", "trinity", "mcp", "serve", "--workspace", str(workspace)],
                }
            }
        }
    )
    async with ToolHub(config) as hub:
        names = {spec.name for spec in await hub.list_tools()}
        assert {"trinity.fs.write", "trinity.shell.run", "trinity.http.fetch"} <= names
        wrote = await hub.call("trinity.fs.write", {"path": "a.txt", "content": "from a child"})
        assert wrote.ok, wrote.error
        escaped = await hub.call("trinity.fs.read", {"path": "../outside.txt"})
        assert not escaped.ok and "outside the workspace" in (escaped.error or "")
        ran = await hub.call("trinity.shell.run", {"command": "cat a.txt"})
        assert ran.ok and ran.output.strip() == "from a child" and ran.exit_code == 0
        failed = await hub.call("trinity.shell.run", {"command": "exit 3"})
        assert not failed.ok and failed.exit_code == 3  # exit_code checks work behind MCP
    assert (workspace / "a.txt").read_text() == "from a child"


async def test_a_server_that_cannot_start_is_reported_and_the_run_goes_on(
    tmp_path: Path, workspace: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "ghost": {"command": str(tmp_path / "no-such-binary"), "start": "eager"}
                }
            }
        )
    )
    settings = Settings(
        database_url=str(tmp_path / "t.db"), workspace=workspace, mcp_servers_file=config
    )
    events: list[EventBase] = []
    runtime = Runtime(settings)
    try:
        request = runtime.prepare(str(Path(__file__).parent.parent / "examples" / "hello.yaml"))
        state = await runtime.start(request, subscribers=[events.append])
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    problems = [e for e in events if isinstance(e, ToolServerProblem)]
    assert len(problems) == 1 and problems[0].server == "ghost"


async def test_a_servers_own_timeout_applies_inside_a_run(tmp_path: Path, workspace: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "stuck": {
                        "command": sys.executable,
                        "args": [str(HANG_SERVER), "--handshake"],
                        "timeout_s": 1,
                    }
                }
            }
        )
    )
    plan = tmp_path / "p.yaml"
    plan.write_text("steps:\n  - id: s\n    tool: stuck.wait\n")
    settings = Settings(database_url=str(tmp_path / "t.db"), workspace=workspace, timeout_s=30)
    runtime = Runtime(settings)
    try:
        request = runtime.prepare(str(plan), mcp_servers_file=config)
        started = time.monotonic()
        state = await runtime.start(request)
        took = time.monotonic() - started
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.FAILED
    assert "timed out after 1s" in state.stop_detail
    assert took < 10  # the server's 1 s, twice (a retry), not the tool default or the deadline


def test_server_names_may_not_shadow_built_in_namespaces(tmp_path: Path, workspace: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"fs": {"command": "true"}}}))
    settings = Settings(database_url=str(tmp_path / "t.db"), workspace=workspace)
    runtime = Runtime(settings)
    try:
        with pytest.raises(ConfigError, match=r"clash with the built-in tools"):
            runtime.prepare(
                str(Path(__file__).parent.parent / "examples" / "hello.yaml"),
                mcp_servers_file=config,
            )
    finally:
        runtime.close()


def test_the_servers_file_is_remembered_by_absolute_path(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {}}))
    monkeypatch.chdir(tmp_path)
    runtime = Runtime(Settings(database_url=str(tmp_path / "t.db"), workspace=workspace))
    try:
        request = runtime.prepare(
            str(Path(__file__).parent.parent / "examples" / "hello.yaml"),
            mcp_servers_file="mcp.json",
        )
    finally:
        runtime.close()
    assert request.mcp_servers_file == str(tmp_path / "mcp.json")
