"""Live events over SSE against a real uvicorn: a client that disconnects mid-run and
reconnects with Last-Event-ID gets every event exactly once, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
from server_helpers import plan, sleep, wait_for_status, write


async def _read(
    response: httpx.Response, stop: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """SSE messages (id, event, data) until ``stop(messages)``; comments (pings) skipped."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in current:
                current["data"] = json.loads(current["data"])
                messages.append(current)
                if stop(messages):
                    return messages
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")
    return messages


def _finished(messages: list[dict[str, Any]]) -> bool:
    return messages[-1]["event"] == "run_finished"


async def test_reconnecting_with_last_event_id_misses_nothing(
    live: str, token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {token('admin')}"}
    steps = [sleep(0.15, f"nap{n}") for n in range(6)]
    async with httpx.AsyncClient(base_url=live, headers=headers, timeout=30) as client:
        created = await client.post("/v1/runs", json={"plan": plan(*steps)})
        run_id = created.json()["run"]["id"]
        url = f"/v1/runs/{run_id}/events/stream"
        async with client.stream("GET", url) as first:
            assert first.headers["content-type"].startswith("text/event-stream")
            part = await _read(first, lambda m: len(m) >= 8)
        # gone for a while: events happen meanwhile
        await asyncio.sleep(0.4)
        last = part[-1]["id"]
        async with client.stream("GET", url, headers={"Last-Event-ID": last}) as second:
            rest = await _read(second, _finished)
        await wait_for_status(client, run_id, "succeeded")
        stored = (await client.get(f"/v1/runs/{run_id}/events")).json()
    got = part + rest
    seqs = [int(m["id"]) for m in got]
    assert seqs == list(range(1, len(got) + 1)), seqs  # each once, in order
    finished_at = next(e["seq"] for e in stored if e["kind"] == "run_finished")
    assert [e["seq"] for e in stored if e["seq"] <= finished_at] == seqs
    assert [m["event"] for m in got] == [e["kind"] for e in stored if e["seq"] <= finished_at]
    assert all("changes" not in m["data"]["data"] for m in got)


async def test_the_stream_of_all_runs_resumes_too(live: str, token: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {token('runs:write')}"}
    async with httpx.AsyncClient(base_url=live, headers=headers, timeout=30) as client:
        async with client.stream("GET", "/v1/events/stream") as stream:
            await client.post("/v1/runs", json={"plan": plan(write("one"))})
            first = await _read(stream, lambda m: len(m) >= 3)
        marker = first[-1]["id"]
        runs = [
            (await client.post("/v1/runs", json={"plan": plan(write(f"w{n}"))})).json()["run"]["id"]
            for n in range(2)
        ]
        for run_id in runs:
            await wait_for_status(client, run_id, "succeeded")
        async with client.stream(
            "GET", "/v1/events/stream", headers={"Last-Event-ID": marker}
        ) as again:
            rest = await _read(again, lambda m: sum(x["event"] == "run_finished" for x in m) >= 3)
    ids = [m["id"] for m in first + rest]
    assert len(ids) == len(set(ids))
    for run_id in runs:
        seqs = [int(i.split(":")[1]) for i in ids if i.startswith(run_id)]
        assert seqs == sorted(seqs) and seqs[0] == 1
