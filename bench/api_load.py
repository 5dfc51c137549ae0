"""The service under load: requests per second and latency of the API, and the SSE fan-out.

    .venv/bin/python bench/api_load.py            # about two minutes
    .venv/bin/python bench/api_load.py --quick    # smaller counts

A real ``trinity serve`` process on loopback (its own database, rate limits raised out of the
way, one admin token), and clients in this process (httpx, asyncio). Measured, each at 10 and
100 concurrent clients:

* ``GET /healthz``: the server's floor beside the rest (no token, no database);
* ``GET /v1/runs``: a page of 50 runs from a database holding a few hundred (token check,
  one query, JSON);
* ``POST /v1/runs``: a one-step plan (an ``fs.write``, about a millisecond): token check,
  validation, the durable insert of the run, and the run itself going on in the server meanwhile.

Then the fan-out: 200 clients subscribe to one run's event stream, a run of 20 ``fs.write``
steps goes, and each event's delivery time is measured (the client's clock at receipt minus the
event's own timestamp, set by the server when it happened: one machine, one clock).

The clients share this machine's two cores with the server, so the figures are a floor of what
a separate client machine would see; the client side's own cost is in them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tables import table

TRINITY = [sys.executable, "-m", "trinity"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_step_plan(n: int) -> dict[str, Any]:
    step = {"id": "w", "tool": "fs.write", "args": {"path": f"out/{n}.txt", "content": "x"}}
    return {"plan": {"task": f"bench {n}", "steps": [step]}}


async def load(
    client: httpx.AsyncClient, method: str, path: str, total: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for n in counter:
            body = one_step_plan(n) if method == "POST" else None
            started = time.perf_counter()
            answer = await client.request(method, path, json=body)
            latencies.append(time.perf_counter() - started)
            if answer.status_code >= 400:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - started
    return {
        "rps": total / wall,
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "errors": errors,
    }


async def settle(client: httpx.AsyncClient) -> None:
    """Wait until the server runs nothing: each measurement starts on an idle server."""
    while (await client.get("/v1/runs", params={"status": "running", "limit": 1})).json()["runs"]:
        await asyncio.sleep(0.2)


async def fan_out(
    base: str, headers: dict[str, str], subscribers: int, steps: int
) -> dict[str, Any]:
    # the first step waits for a person, so the subscribers can join before anything happens
    gate = {"id": "gate", "tool": "shell.run", "args": {"command": "true"}}
    plan = {
        "task": "fan-out",
        "steps": [
            gate,
            *(
                {
                    "id": f"s{n}",
                    "tool": "fs.write",
                    "args": {"path": f"fan/{n}.txt", "content": "x"},
                }
                for n in range(steps)
            ),
        ],
    }
    limits = httpx.Limits(max_connections=subscribers + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=60, limits=limits
    ) as client:
        created = await client.post(
            "/v1/runs",
            json={"plan": plan, "permissions": {"rules": [{"tool": "shell.run", "action": "ask"}]}},
        )
        run_id = created.json()["run"]["id"]
        while (await client.get(f"/v1/runs/{run_id}")).json()["status"] != "awaiting_approval":
            await asyncio.sleep(0.05)
        last_seq = (await client.get(f"/v1/runs/{run_id}/events")).json()[-1]["seq"]
        delays: list[float] = []
        ready = 0
        all_ready = asyncio.Event()

        async def subscribe() -> None:
            nonlocal ready
            url = f"/v1/runs/{run_id}/events/stream?after_seq={last_seq}"
            async with client.stream("GET", url) as stream:
                ready += 1
                if ready == subscribers:
                    all_ready.set()
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        delays.append(time.time() - event["ts"])
                        if event["kind"] == "run_finished":
                            return

        tasks = [asyncio.create_task(subscribe()) for _ in range(subscribers)]
        await asyncio.wait_for(all_ready.wait(), 60)
        await client.post(f"/v1/runs/{run_id}/approve")  # the run goes on: the events flow
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    per_client = len(delays) / subscribers
    return {
        "events": per_client,
        "p50": percentile(delays, 0.5) * 1000,
        "p99": percentile(delays, 0.99) * 1000,
        "max": max(delays) * 1000,
    }


async def main(quick: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="trinity-api-load-"))
    env = {
        **os.environ,
        "TRINITY_WORKSPACE": str(folder / "ws"),
        "TRINITY_API_RATE_LIMITS": json.dumps(
            {"read": "10000000/minute", "write": "10000000/minute"}
        ),
        "TRINITY_SANDBOX": "off",
    }
    env.pop("TRINITY_MODEL", None)
    db = str(folder / "t.db")
    made = subprocess.run(
        [*TRINITY, "tokens", "create", "--name", "bench", "--scope", "admin", "--json", "--db", db],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
    )
    headers = {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
    port = free_port()
    server = subprocess.Popen(
        [*TRINITY, "serve", "--port", str(port), "--db", db],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        scale = 0.25 if quick else 1.0
        rows = []
        for concurrency in (10, 100):
            limits = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
            async with httpx.AsyncClient(
                base_url=base, headers=headers, timeout=120, limits=limits
            ) as client:
                if concurrency == 10:  # a few hundred runs in the database first
                    await load(client, "POST", "/v1/runs", int(300 * scale), 10)
                    await settle(client)
                for method, path, total in (
                    ("GET", "/healthz", 3000),
                    ("GET", "/v1/runs?limit=50", 2000),
                    ("POST", "/v1/runs", 1000),
                ):
                    count = max(50, int(total * scale))
                    result = await load(client, method, path, count, concurrency)
                    rows.append(
                        [
                            f"{method} {path.split('?')[0]}",
                            str(concurrency),
                            str(count),
                            f"{result['rps']:,.0f}",
                            f"{result['p50']:.1f}",
                            f"{result['p99']:.1f}",
                            str(result["errors"]),
                        ]
                    )
                    await settle(client)  # the POSTed runs finish before the next row
        print(
            table(
                "API load (trinity serve on loopback, clients in one asyncio process)",
                ["request", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"],
                rows,
            )
        )
        fan = await fan_out(base, headers, 200 if not quick else 50, 20)
        print(
            table(
                "SSE fan-out: one run's events to many subscribers",
                ["subscribers", "events each", "delivery p50 ms", "p99 ms", "max ms"],
                [
                    [
                        str(200 if not quick else 50),
                        f"{fan['events']:.0f}",
                        f"{fan['p50']:.1f}",
                        f"{fan['p99']:.1f}",
                        f"{fan['max']:.1f}",
                    ]
                ],
            )
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
