"""MCP call overhead and crash recovery: Trinity's ToolHub beside a bare SDK client session.

    python bench/mcp_calls.py              # 1,000 calls per side, 5 crashes per server
    python bench/mcp_calls.py --quick      # 200 calls, 2 crashes

Part 1: per-call latency of a trivial tool (``echo`` of server-everything, over stdio). One side
is the official SDK's ``ClientSession`` used directly; the other is ``ToolHub.call`` on its own
process of the same server, doing what the hub adds: name routing, argument validation
against the tool's JSON schema, the timeout, result conversion and the restart bookkeeping.
The calls alternate in blocks of ten (bare, hub, bare, hub, …) so that the drift of this noisy
VM hits both sides alike; two bare sessions measured this way differ by a few per cent.
Target: the hub's median at most 1.15x the bare session's.

Part 2: time to recover from a crash. The server's process is SIGKILLed while idle, and the
clock runs from the kill until a call succeeds again (calls are made back to back; a call that
lands on the dead session before its end is noticed fails, and is counted).

Needs the npm servers: ``cd tests/mcp_servers && npm ci``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from trinity.tools.hub import RestartPolicy, ToolHub
from trinity.tools.mcp_config import StdioServerConfig

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = (
    ROOT / "tests/mcp_servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
ECHO_ARGS = {"message": "hello"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join([line, rule, *body])


# -- part 1 ------------------------------------------------------------------------------------


async def bare_block(session: ClientSession, n: int, out: list[float]) -> None:
    for _ in range(n):
        started = time.perf_counter()
        result = await session.call_tool("echo", ECHO_ARGS)
        out.append(time.perf_counter() - started)
        assert not result.is_error


async def hub_block(hub: ToolHub, n: int, out: list[float]) -> None:
    for _ in range(n):
        started = time.perf_counter()
        result = await hub.call("everything.echo", ECHO_ARGS)
        out.append(time.perf_counter() - started)
        assert result.ok, result.error


async def part1(calls: int, block: int = 10) -> None:
    params = StdioServerParameters(command="node", args=[str(EVERYTHING), "stdio"])
    hub = ToolHub([StdioServerConfig(name="everything", command="node", args=params.args)])
    bare: list[float] = []
    hubbed: list[float] = []
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.list_tools()  # as the hub does: the SDK checks results against it
            await hub.list_tools()
            await bare_block(session, 50, [])  # warm-up, not measured
            await hub_block(hub, 50, [])
            for _ in range(calls // block):
                await bare_block(session, block, bare)
                await hub_block(hub, block, hubbed)
    await hub.aclose()

    rows = []
    for name, values in (("bare SDK ClientSession", bare), ("ToolHub.call", hubbed)):
        rows.append(
            [
                name,
                str(len(values)),
                f"{statistics.median(values) * 1e6:.0f}",
                f"{percentile(values, 0.99) * 1e6:.0f}",
                f"{statistics.fmean(values) * 1e6:.0f}",
            ]
        )
    ratio_median = statistics.median(hubbed) / statistics.median(bare)
    ratio_p99 = percentile(hubbed, 0.99) / percentile(bare, 0.99)
    print("Part 1: per-call latency, server-everything `echo` over stdio (µs)\n")
    print(table(["client", "calls", "median", "p99", "mean"], rows))
    verdict = "met" if ratio_median <= 1.15 else "NOT met"
    print(
        f"\nratio hub / bare: median {ratio_median:.3f}x, p99 {ratio_p99:.3f}x "
        f"(target median <= 1.15x: {verdict})\n"
    )


# -- part 2 ------------------------------------------------------------------------------------


def kill_server(hub: ToolHub, server: str) -> float:
    pid = hub.server_pid(server)
    assert pid is not None, "server not running"
    os.kill(pid, signal.SIGKILL)
    return time.perf_counter()


async def back_to_back(hub: ToolHub, server: str, tool: str, args: dict) -> tuple[float, int]:
    """Kill, then call at once and again until a call succeeds: (seconds, failed calls)."""
    killed = kill_server(hub, server)
    failures = 0
    while not (await hub.call(f"{server}.{tool}", args, timeout_s=30)).ok:
        failures += 1
        assert failures < 20, f"{server} did not recover"
    return time.perf_counter() - killed, failures


async def after_notice(hub: ToolHub, server: str, tool: str, args: dict) -> tuple[float, float]:
    """Kill, wait until the hub has noticed by itself, then call: (notice s, call s)."""
    killed = kill_server(hub, server)
    while hub.server_pid(server) is not None:
        await asyncio.sleep(0.0005)
    noticed = time.perf_counter()
    result = await hub.call(f"{server}.{tool}", args, timeout_s=30)
    assert result.ok, result.error
    return noticed - killed, time.perf_counter() - noticed


async def part2(crashes: int) -> None:
    servers = [
        (
            StdioServerConfig(name="everything", command="node", args=[str(EVERYTHING), "stdio"]),
            "echo",
            ECHO_ARGS,
        ),
        (
            StdioServerConfig(name="time", command=sys.executable, args=["-m", "mcp_server_time"]),
            "get_current_time",
            {"timezone": "UTC"},
        ),
    ]
    rows = []
    for config, tool, args in servers:
        # Every kill counts against the restart cap; lift it, or the bench would measure it.
        async with ToolHub([config], restart=RestartPolicy(max_failures=1000)) as hub:
            started = time.perf_counter()
            first = await hub.call(f"{config.name}.{tool}", args)
            cold = time.perf_counter() - started
            assert first.ok, first.error
            at_once, failed, notice, restart = [], 0, [], []
            for _ in range(crashes):
                await asyncio.sleep(0.2)  # between calls, as in a run
                elapsed, failures = await back_to_back(hub, config.name, tool, args)
                at_once.append(elapsed)
                failed += failures
                await asyncio.sleep(0.2)
                noticed, called = await after_notice(hub, config.name, tool, args)
                notice.append(noticed)
                restart.append(called)
            ms = lambda values: f"{statistics.median(values) * 1e3:.1f}"  # noqa: E731
            rows.append(
                [
                    f"{config.name} ({Path(config.command).name})",
                    f"{cold * 1e3:.0f}",
                    str(crashes),
                    f"{ms(at_once)} (max {max(at_once) * 1e3:.0f})",
                    f"{failed}/{crashes}",
                    ms(notice),
                    ms(restart),
                ]
            )
    print("Part 2: recovery after SIGKILL of an idle server (ms, medians)\n")
    headers = [
        "server",
        "cold start + 1st call",
        "crashes",
        "kill -> next ok call (back to back)",
        "calls failed",
        "kill -> hub notices",
        "then 1st call (restart)",
    ]
    print(table(headers, rows))
    print(
        "\nBack to back, the call made right after the kill reaches the dead session before its "
        "end is read, and fails (counted); the next one restarts the server. Once the hub has "
        "noticed, the first call restarts the server and succeeds."
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and crashes")
    options = parser.parse_args()
    if not EVERYTHING.exists():
        sys.exit(f"missing {EVERYTHING}; run `npm ci` in tests/mcp_servers first")
    await part1(calls=200 if options.quick else 1000)
    await part2(crashes=2 if options.quick else 5)


if __name__ == "__main__":
    asyncio.run(main())
