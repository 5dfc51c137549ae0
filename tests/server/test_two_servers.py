"""Two ``trinity serve`` processes on one database: a run is executed by one of them only;
when that one is killed (SIGKILL) the other, started with --resume-orphans, takes the run over
and finishes it without repeating a side effect."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Serve, admin_token, plan, sleep


def _append(name: str, line: str) -> dict[str, Any]:
    args = {"path": "ledger.txt", "content": line + "\n", "append": True}
    return {"id": name, "tool": "fs.write", "args": args}


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Serve, Serve, str]]:
    env = {
        **os.environ,
        "TRINITY_WORKSPACE": str(tmp_path / "ws"),
        "TRINITY_ON_INTERRUPTED": "rerun",
        "TRINITY_ORPHAN_SCAN_S": "0.3",
        "TRINITY_SANDBOX": "off",
    }
    secret = admin_token(tmp_path, env)
    a = Serve(tmp_path, env, "--resume-orphans")
    b = Serve(tmp_path, env, "--resume-orphans")
    try:
        yield a, b, secret
    finally:
        a.stop()
        b.stop()


def test_a_killed_server_s_run_is_taken_over_once(
    two: tuple[Serve, Serve, str], tmp_path: Path
) -> None:
    a, b, secret = two
    headers = {"Authorization": f"Bearer {secret}"}
    steps = [_append("one", "one"), sleep(3, "nap"), _append("two", "two")]
    with httpx.Client(headers=headers, timeout=10) as http:
        run_id = http.post(f"{a.url}/v1/runs", json={"plan": plan(*steps)}).json()["run"]["id"]
        until = time.monotonic() + 20
        while not any(
            e["kind"] == "tool_call" and e["data"]["step"] == "nap"
            for e in http.get(f"{a.url}/v1/runs/{run_id}/events").json()
        ):
            assert time.monotonic() < until, "the run never reached its second step"
            time.sleep(0.05)
        # A executes it: B, scanning for orphans, leaves it alone
        time.sleep(1.0)
        owner = json.loads(http.get(f"{b.url}/v1/runs/{run_id}").json()["lease_owner"])
        assert owner["pid"] == a.proc.pid
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        until = time.monotonic() + 40
        while (run := http.get(f"{b.url}/v1/runs/{run_id}").json())["status"] != "succeeded":
            assert time.monotonic() < until, f"B did not finish the run: {run['status']}"
            time.sleep(0.2)
        events = http.get(f"{b.url}/v1/runs/{run_id}/events").json()
    assert (tmp_path / "ws" / "ledger.txt").read_text() == "one\ntwo\n"  # nothing twice
    assert json.loads(run["lease_owner"] or "null") is None
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sum(e["kind"] == "run_started" for e in events) == 2  # started, then resumed once


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_workers_share_the_port_and_the_database(tmp_path: Path) -> None:
    """`trinity serve --workers 2`: two processes answer on one port; every run is executed
    by one of them, once, and can be read and followed from either."""
    env = {**os.environ, "TRINITY_WORKSPACE": str(tmp_path / "ws"), "TRINITY_SANDBOX": "off"}
    secret = admin_token(tmp_path, env)
    server = Serve(tmp_path, env, "--workers", "2")
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        until = time.monotonic() + 30
        while len(workers := _children(server.proc.pid)) < 2:
            assert time.monotonic() < until, f"workers: {workers}"
            time.sleep(0.1)
        ids = []
        for n in range(6):  # a connection each: the workers take turns accepting
            with httpx.Client(headers=headers, timeout=10) as http:
                steps = [sleep(1.0, "nap"), _append(f"w{n}", f"run {n}")]
                created = http.post(f"{server.url}/v1/runs", json={"plan": plan(*steps)})
                assert created.status_code == 201, created.text
                ids.append(created.json()["run"]["id"])
        owners: set[int] = set()
        until = time.monotonic() + 60
        pending = set(ids)
        while pending:
            assert time.monotonic() < until, f"runs not finished: {pending}"
            for run_id in list(pending):
                with httpx.Client(headers=headers, timeout=10) as http:
                    run = http.get(f"{server.url}/v1/runs/{run_id}").json()
                if run["lease_owner"]:
                    owners.add(json.loads(run["lease_owner"])["pid"])
                if run["status"] == "succeeded":
                    pending.discard(run_id)
                else:
                    assert run["status"] == "running", run
            time.sleep(0.1)
        assert owners and owners <= workers, (owners, workers)
        lines = sorted((tmp_path / "ws" / "ledger.txt").read_text().splitlines())
        assert lines == [f"run {n}" for n in range(6)]  # each run's write made once
        with httpx.Client(headers=headers, timeout=10) as http:
            listed = http.get(f"{server.url}/v1/runs", params={"limit": 10}).json()["runs"]
            assert {run["id"] for run in listed} == set(ids)
        for _ in range(4):  # whichever worker answers, /metrics counts every worker's runs
            with httpx.Client(headers=headers, timeout=10) as http:
                text = http.get(f"{server.url}/metrics").text
            assert 'trinity_runs_finished_total{stop_reason="completed"} 6.0' in text, text
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.proc.stderr.read() if server.proc.stderr else ""
