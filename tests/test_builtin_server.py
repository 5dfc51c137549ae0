"""The built-in tools as an MCP server, driven by the SDK's own client: over the in-memory
transport, over stdio (a child process), and over streamable HTTP (a child process, and
:func:`serve_http` in this process). Each transport lists the tools with their schemas, calls
every tool, and gets failures back as ``isError`` results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp import types as mcp_types
from mcp.client.streamable_http import streamable_http_client

from hostile_args import LocalHTTPServer, NetworkLog, guard_network
from trinity.state import ToolResult
from trinity.tools.builtin import ASK_TOOL, BUILTIN_SPECS
from trinity.tools.builtin_server import (
    TOKEN_ENV,
    build_server,
    connect_in_process,
    in_memory_transport,
    serve_http,
    to_call_tool_result,
    tool_result_from_mcp,
)

TOOL_NAMES = [
    "fs.read",
    "fs.write",
    "fs.edit",
    "fs.list",
    "fs.glob",
    "fs.search",
    "shell.run",
    "http.fetch",
    "python.run",
]
SERVER_ENTRY = "from trinity.tools.builtin_server import main; main()"


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> NetworkLog:
    return guard_network(monkeypatch)


@pytest.fixture(scope="module")
def web() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def _text(result: mcp_types.CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, mcp_types.TextContent)
    return block.text


async def exercise(client: Client, ws: Path, web: LocalHTTPServer) -> None:
    """List the tools, call each one, and check that failures come back as results."""
    listed = await client.list_tools()
    assert [tool.name for tool in listed.tools] == TOOL_NAMES
    by_name = {tool.name: tool for tool in listed.tools}
    assert ASK_TOOL not in by_name  # nobody is there to answer it
    for spec in (spec for spec in BUILTIN_SPECS if spec.name != ASK_TOOL):
        tool = by_name[spec.name]
        assert tool.input_schema == spec.input_schema  # the pydantic models' schemas, as is
        assert tool.description == spec.description
        assert tool.output_schema == ToolResult.model_json_schema()
    assert by_name["fs.read"].input_schema["required"] == ["path"]
    assert by_name["fs.read"].input_schema["additionalProperties"] is False
    assert by_name["fs.search"].annotations is not None
    assert by_name["fs.search"].annotations.read_only_hint is True
    assert by_name["shell.run"].annotations is not None
    assert by_name["shell.run"].annotations.destructive_hint is True
    assert by_name["http.fetch"].annotations is not None
    assert by_name["http.fetch"].annotations.open_world_hint is True

    calls: list[tuple[str, dict[str, Any], str]] = [
        ("fs.write", {"path": "notes/a.txt", "content": "hello MCP\n"}, "wrote 10 characters"),
        ("fs.edit", {"path": "notes/a.txt", "old": "MCP", "new": "MCP!"}, "replaced 1 occurrence"),
        ("fs.read", {"path": "notes/a.txt"}, "hello MCP!\n"),
        ("fs.list", {"path": "notes"}, "notes/a.txt"),
        ("fs.glob", {"pattern": "**/*.txt"}, "notes/a.txt"),
        ("fs.search", {"pattern": r"MCP!$"}, "notes/a.txt:1: hello MCP!"),
        ("shell.run", {"command": "echo shell-ok"}, "shell-ok\n"),
        ("python.run", {"code": "print(6 * 7)"}, "42\n"),
        ("http.fetch", {"url": f"{web.origin}/hello"}, "hello from the test server\n"),
    ]
    assert sorted(name for name, _, _ in calls) == sorted(TOOL_NAMES)
    for name, args, expected in calls:
        result = await client.call_tool(name, args)
        assert result.is_error is False, _text(result)
        assert expected in _text(result), (name, _text(result))
        assert tool_result_from_mcp(result).ok
    assert (ws / "notes" / "a.txt").read_text(encoding="utf-8") == "hello MCP!\n"

    failures: list[tuple[str, Any, str]] = [
        ("fs.read", {"path": "../escape"}, "fs.read: path '../escape' is outside the workspace"),
        ("fs.read", {"path": 5}, "invalid arguments for fs.read: path: Input should be a valid"),
        ("fs.delete", {"path": "x"}, "unknown tool 'fs.delete'; available: fs.edit"),
        ("shell.run", {"command": "echo out; exit 3"}, "exit code 3\n\nout\n"),
        ("http.fetch", {"url": "http://169.254.169.254/"}, "cloud metadata endpoint"),
        ("python.run", {"code": "raise SystemExit(2)"}, "exit code 2"),
    ]
    for name, args, expected in failures:
        result = await client.call_tool(name, args)
        assert result.is_error is True, (name, _text(result))
        assert expected in _text(result)
        assert result.structured_content is not None
        assert result.structured_content["ok"] is False
        assert expected.split("\n")[0] in (tool_result_from_mcp(result).error or "")


# -- in memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_in_process(ws: Path, web: LocalHTTPServer, network: NetworkLog, mode: str) -> None:
    server = build_server(ws, allow_hosts=["127.0.0.1"])
    async with connect_in_process(server, mode=mode) as client:
        assert client.server_info is not None and client.server_info.name == "trinity-builtin"
        await exercise(client, ws, web)
    assert network.blocked == []


async def test_in_memory_transport_for_a_client_session(ws: Path, web: LocalHTTPServer) -> None:
    """The ToolHub's way in: a transport's streams, a ClientSession, the initialize handshake."""
    server = build_server(ws, allow_hosts=["127.0.0.1"])
    async with in_memory_transport(server) as (read, write), ClientSession(read, write) as session:
        initialized = await session.initialize()
        assert initialized.server_info.name == "trinity-builtin"
        listed = await session.list_tools()
        assert [tool.name for tool in listed.tools] == TOOL_NAMES
        result = await session.call_tool("python.run", {"code": "print('in memory')"})
        assert result.is_error is False and _text(result) == "in memory\n"
        refused = await session.call_tool("http.fetch", {"url": "http://[::1]/"})
        assert refused.is_error is True and "IPv6 loopback" in _text(refused)


async def test_one_server_serves_many_clients_one_after_another(ws: Path) -> None:
    server = build_server(ws)
    for n in range(2):
        async with connect_in_process(server) as client:
            result = await client.call_tool("fs.write", {"path": f"{n}.txt", "content": "x"})
            assert result.is_error is False
    assert sorted(p.name for p in ws.iterdir()) == ["0.txt", "1.txt"]


def test_results_convert_both_ways() -> None:
    failed = ToolResult(ok=False, output="partial", error="exit code 1", exit_code=1)
    converted = to_call_tool_result(failed)
    assert converted.is_error is True and _text(converted) == "exit code 1\n\npartial"
    assert tool_result_from_mcp(converted) == failed
    # a foreign server: no structured content, just text
    foreign = mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text="boom")], is_error=True
    )
    assert tool_result_from_mcp(foreign) == ToolResult(ok=False, error="boom")
    plain = mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text="fine")])
    assert tool_result_from_mcp(plain) == ToolResult(ok=True, output="fine")


# -- stdio ----------------------------------------------------------------------------------


async def test_stdio_child_process(ws: Path, web: LocalHTTPServer) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", SERVER_ENTRY, "--workspace", str(ws), "--allow-host", "127.0.0.1"],
    )
    async with Client(params) as client:
        await exercise(client, ws, web)
        # what a command reads or prints goes through its own pipes, never the protocol stream
        noisy = await client.call_tool("shell.run", {"command": "cat; echo to-stdout >&1"})
        assert noisy.is_error is False and _text(noisy) == "to-stdout\n"


# -- streamable HTTP ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_child(ws: Path, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """``main --transport http --port 0`` in a child process; yields its endpoint URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER_ENTRY,
        "--transport",
        "http",
        "--port",
        "0",
        "--workspace",
        str(ws),
        "--allow-host",
        "127.0.0.1",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            line = (await proc.stderr.readline()).decode()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+/mcp)$", line.strip())
        assert found, f"unexpected first line from the server: {line!r}"
        drain = asyncio.ensure_future(proc.stderr.read())  # never let a full pipe block it
        yield found.group(1)
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(15):
            await proc.wait()
        with contextlib.suppress(Exception):
            await drain


async def test_http_child_process(ws: Path, web: LocalHTTPServer) -> None:
    async with http_child(ws) as url, Client(url) as client:
        await exercise(client, ws, web)


async def test_http_rejects_foreign_hosts_and_wrong_tokens(ws: Path) -> None:
    async with http_child(ws, env={TOKEN_ENV: "s3cret-token"}) as url:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient() as http:
            anonymous = await http.post(url, json=body, headers=headers)
            assert anonymous.status_code == 401
            wrong = await http.post(
                url, json=body, headers={**headers, "Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            rebinding = await http.post(
                url,
                json=body,
                headers={
                    **headers,
                    "Authorization": "Bearer s3cret-token",
                    "Host": "attacker.example",
                },
            )
            assert rebinding.status_code == 421  # DNS-rebinding protection: foreign Host
        authed = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret-token"})
        async with authed, Client(streamable_http_client(url, http_client=authed)) as client:
            result = await client.call_tool("shell.run", {"command": "echo authed"})
            assert _text(result) == "authed\n"


async def test_serve_http_in_process_stops_cleanly_when_cancelled(
    ws: Path, web: LocalHTTPServer
) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_http(
            "127.0.0.1", 0, workspace=ws, on_ready=ready.set_result, allow_hosts=["127.0.0.1"]
        )
    )
    url = await asyncio.wait_for(ready, 10)
    async with Client(url) as client:
        await exercise(client, ws, web)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    with pytest.raises(httpx2.ConnectError):  # the port is closed again
        async with httpx2.AsyncClient() as http:
            await http.get(url)


async def test_serve_http_refuses_non_loopback_hosts(ws: Path, network: NetworkLog) -> None:
    with pytest.raises(ValueError, match=re.escape("non-loopback host '0.0.0.0'")):
        await serve_http("0.0.0.0", 0, workspace=ws)
