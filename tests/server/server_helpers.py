"""Helpers of the service's tests: plans, and waiting for a run's status over the API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


def plan(*steps: dict[str, Any], task: str = "a task") -> dict[str, Any]:
    return {"task": task, "steps": list(steps)}


def write(name: str, content: str = "x") -> dict[str, Any]:
    return {"id": name, "tool": "fs.write", "args": {"path": f"{name}.txt", "content": content}}


def sleep(seconds: float, name: str = "nap") -> dict[str, Any]:
    return {
        "id": name,
        "tool": "python.run",
        "args": {"code": f"import time; time.sleep({seconds})"},
    }


async def wait_for_status(
    client: httpx.AsyncClient, run_id: str, *statuses: str, timeout: float = 20
) -> dict[str, Any]:
    until = asyncio.get_running_loop().time() + timeout
    while True:
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in statuses:
            return dict(run)
        if asyncio.get_running_loop().time() > until:
            raise AssertionError(f"run {run_id} stayed {run['status']}")
        await asyncio.sleep(0.05)
