"""Helpers of the service's tests: plans, waiting for a run's status over the API, and
`trinity serve` processes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
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


TRINITY = [sys.executable, "-m", "trinity"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin_token(folder: Path, env: dict[str, str]) -> str:
    """An admin token made with `trinity tokens create` on ``folder``'s t.db."""
    made = subprocess.run(
        [
            *TRINITY,
            "tokens",
            "create",
            "--name",
            "test",
            "--scope",
            "admin",
            "--json",
            "--db",
            str(folder / "t.db"),
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(made.stdout)["token"])


class Serve:
    def __init__(self, tmp: Path, env: dict[str, str], *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*TRINITY, "serve", "--port", str(self.port), "--db", str(tmp / "t.db"), *extra],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        until = time.monotonic() + 30
        while time.monotonic() < until:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.proc.stderr}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
