"""A run started over the API joins the caller's trace (its traceparent header)."""

from __future__ import annotations

from pathlib import Path

import httpx
from server_helpers import Serve, admin_token, plan, wait_for_status, write

from test_tracing import Receiver, receiver, traced_env

__all__ = ["receiver"]  # the fixture


async def test_a_run_started_over_the_api_joins_the_callers_trace(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = traced_env(receiver) | {"TRINITY_WORKSPACE": str(tmp_path / "ws")}
    secret = admin_token(tmp_path, env)
    server = Serve(tmp_path, env)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        headers = {
            "Authorization": f"Bearer {secret}",
            "traceparent": f"00-{caller_trace}-{caller_span}-01",
        }
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as api:
            created = await api.post("/v1/runs", json={"plan": plan(write("a"))})
            await wait_for_status(api, created.json()["run"]["id"], "succeeded")
    finally:
        server.stop()  # its exporter flushes as it exits
    [run] = receiver.by_name("trinity.run")
    assert (run["trace"], run["parent"]) == (caller_trace, caller_span)
