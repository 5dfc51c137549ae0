"""The API's contract, in process: every route, its errors as problem details, idempotency,
validation and size caps."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from server_helpers import plan, sleep, wait_for_status, write

from trinity.config import Settings
from trinity.server import create_app
from trinity.store.writer import Statement


async def test_a_run_from_an_inline_plan_runs_and_can_be_read(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/runs", json={"plan": plan(write("a"), task="write a")})
    assert created.status_code == 201, created.text
    body = created.json()
    run_id = body["run"]["id"]
    assert body["created"] is True and created.headers["location"] == f"/v1/runs/{run_id}"
    run = await wait_for_status(client, run_id, "succeeded")
    assert run["stop_reason"] == "completed" and "all 1 step verified" in run["report"]
    assert run["state"]["plan"]["steps"][0]["status"] == "succeeded"
    events = (await client.get(f"/v1/runs/{run_id}/events")).json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    later = (await client.get(f"/v1/runs/{run_id}/events", params={"after_seq": 3})).json()
    assert [e["seq"] for e in later] == [e["seq"] for e in events[3:]]
    listed = (await client.get("/v1/runs", params={"status": "succeeded"})).json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    assert (await client.get("/v1/runs", params={"text": "nothing like it"})).json()["runs"] == []
    audit = await client.get(f"/v1/runs/{run_id}/audit")
    assert audit.status_code == 200 and audit.json() == []


async def test_pages_of_runs(client: httpx.AsyncClient) -> None:
    ids = []
    for n in range(5):
        created = await client.post("/v1/runs", json={"plan": plan(write(f"p{n}"))})
        ids.append(created.json()["run"]["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/runs", params=params)).json()
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5


async def test_an_idempotency_key_starts_one_run_even_when_requests_race(
    client: httpx.AsyncClient,
) -> None:
    body = {"plan": plan(write("once"))}
    headers = {"Idempotency-Key": "retry-me-123"}
    answers = await asyncio.gather(
        *[client.post("/v1/runs", json=body, headers=headers) for _ in range(5)]
    )
    ids = {answer.json()["run"]["id"] for answer in answers}
    assert len(ids) == 1, [a.text for a in answers]
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    assert [a.json()["created"] for a in answers].count(True) == 1
    again = await client.post("/v1/runs", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["run"]["id"] in ids
    listed = (await client.get("/v1/runs")).json()["runs"]
    assert len(listed) == 1


async def test_bad_requests_are_problems_that_name_what_was_wrong(
    client: httpx.AsyncClient,
) -> None:
    unknown = await client.post("/v1/runs", json={"plan": plan(write("a")), "colour": "red"})
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "colour" in unknown.json()["detail"]
    both = await client.post("/v1/runs", json={"task": "x", "plan": plan(write("a"))})
    assert both.status_code == 422 and "either 'task'" in both.json()["detail"]
    bad_plan = await client.post("/v1/runs", json={"plan": {"steps": [{"tool": "fs.write"}]}})
    assert (
        bad_plan.status_code == 422 and "steps[0].id: Field required" in bad_plan.json()["detail"]
    )
    no_model = await client.post("/v1/runs", json={"task": "do a thing"})
    assert no_model.status_code == 422 and "needs a model" in no_model.json()["detail"]
    missing = await client.get("/v1/runs/nope-nope")
    assert missing.status_code == 404 and "no run with id" in missing.json()["detail"]
    huge = await client.post(
        "/v1/runs",
        content=b'{"task": "' + b"x" * 1_100_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and "api_max_body_bytes" in huge.json()["detail"]
    servers = await client.post("/v1/runs", json={"plan": plan(write("a")), "mcp_servers": ["x"]})
    assert servers.status_code == 422
    assert "unknown MCP server(s) ['x']; configured: none" in servers.json()["detail"]
    limits = await client.post(
        "/v1/runs", json={"plan": plan(write("a")), "limits": {"max_steps": 0}}
    )
    assert limits.status_code == 422 and "limits.max_steps" in limits.json()["detail"]


async def test_cancel_a_running_run(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/runs", json={"plan": plan(sleep(30))})
    run_id = created.json()["run"]["id"]
    await asyncio.sleep(0.5)
    cancelled = await client.post(f"/v1/runs/{run_id}/cancel", json={"grace_s": 0.5})
    assert cancelled.status_code == 202, cancelled.text
    run = await wait_for_status(client, run_id, "cancelled", timeout=15)
    assert run["stop_reason"] == "cancelled"


async def test_approve_a_paused_run_over_the_api(client: httpx.AsyncClient) -> None:
    policy = {"rules": [{"tool": "fs.write", "action": "ask", "reason": "a person checks"}]}
    created = await client.post(
        "/v1/runs", json={"plan": plan(write("asked")), "permissions": policy}
    )
    run_id = created.json()["run"]["id"]
    run = await wait_for_status(client, run_id, "awaiting_approval")
    assert run["state"]["pending_approval"]["tool"] == "fs.write"
    approved = await client.post(f"/v1/runs/{run_id}/approve", json={"note": "fine"})
    assert approved.status_code == 202, approved.text
    run = await wait_for_status(client, run_id, "succeeded")
    audit = (await client.get(f"/v1/runs/{run_id}/audit")).json()
    assert any(e["decision"] == "approve" and e["actor"] == "token:test" for e in audit), audit
    again = await client.post(f"/v1/runs/{run_id}/approve")
    assert again.status_code == 422 and "not awaiting approval" in again.json()["detail"]


async def test_tools_and_health(client: httpx.AsyncClient) -> None:
    tools = (await client.get("/v1/tools")).json()
    assert {"fs.write", "shell.run"} <= {t["name"] for t in tools}
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    schema = (await client.get("/openapi.json")).json()
    assert "/v1/runs" in schema["paths"] and "/v1/runs/{run_id}/approve" in schema["paths"]


async def test_the_dashboard_pages_through_runs(client: httpx.AsyncClient) -> None:
    ids = [
        (
            await client.post("/v1/runs", json={"plan": plan(write(f"d{n}"), task=f"page {n}")})
        ).json()["run"]["id"]
        for n in range(5)
    ]
    for run_id in ids:
        await wait_for_status(client, run_id, "succeeded")
    seen: list[str] = []
    url = "/?limit=2"
    for _ in range(5):
        html = (await client.get(url)).text
        seen += [run_id for run_id in ids if f'data-run="{run_id}"' in html]
        if 'id="older"' not in html:
            break
        url = html.split('id="older"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    bad = await client.get("/?cursor=!!nope!!")
    assert "bad cursor" in bad.text
    # the time range: the runs of the last hour, and the Older link keeps it
    recent = (await client.get("/?since=1h&limit=2")).text
    assert '<option value="1h" selected>' in recent and "since=1h" in recent.split('id="older"')[0]
    store = client._transport.app.state.trinity.runtime.store  # type: ignore[attr-defined]
    await store.writer.write_all(  # one run made a day ago
        [Statement("UPDATE runs SET created_at = created_at - 86400 WHERE id = ?", (ids[0],))]
    )
    hour = (await client.get("/?since=1h")).text
    day = (await client.get("/?since=7d")).text
    assert f'data-run="{ids[0]}"' not in hour and f'data-run="{ids[1]}"' in hour
    assert f'data-run="{ids[0]}"' in day
    unknown = (await client.get("/?since=forever")).text  # not a range: all runs
    assert f'data-run="{ids[0]}"' in unknown


async def test_a_runs_limits_are_the_ones_given_over_the_servers_settings(
    client: httpx.AsyncClient,
) -> None:
    body = {"plan": plan(write("a")), "limits": {"timeout_s": 77, "max_steps": 40}}
    created = await client.post("/v1/runs", json={**body, "max_replans": 0})
    assert created.status_code == 201, created.text
    run = await wait_for_status(client, created.json()["run"]["id"], "succeeded")
    policy = run["state"]["policy"]
    assert (policy["timeout_s"], policy["max_steps"], policy["max_replans"]) == (77, 40, 0)
    assert policy["tool_timeout_s"] == 120  # the server's setting
    old_name = await client.post("/v1/runs", json={**body, "limits": {"deadline_s": 5}})
    assert old_name.status_code == 422 and "limits.deadline_s" in old_name.json()["detail"]


async def test_answer_the_question_a_run_asks(client: httpx.AsyncClient) -> None:
    ask = {
        "id": "name",
        "tool": "person.ask",
        "args": {"question": "What is the file called?"},
    }
    created = await client.post("/v1/runs", json={"plan": plan(ask)})
    run_id = created.json()["run"]["id"]
    run = await wait_for_status(client, run_id, "awaiting_approval")
    pending = run["state"]["pending_approval"]
    assert (pending["question"], pending["reason"]) == ("input", "What is the file called?")
    approve = await client.post(f"/v1/runs/{run_id}/approve")
    assert approve.status_code == 422 and "asks a question" in approve.json()["detail"]
    empty = await client.post(f"/v1/runs/{run_id}/answer", json={"text": ""})
    assert empty.status_code == 422 and "text" in empty.json()["detail"]
    answered = await client.post(f"/v1/runs/{run_id}/answer", json={"text": "notes.md"})
    assert answered.status_code == 202 and answered.json()["detail"] == "answered"
    run = await wait_for_status(client, run_id, "succeeded")
    assert run["state"]["plan"]["steps"][0]["attempts"][0]["result"]["output"] == "notes.md"
    audit = (await client.get(f"/v1/runs/{run_id}/audit")).json()
    assert [(e["decision"], e["actor"]) for e in audit] == [("answer", "token:test")]


async def test_readyz_starts_the_eager_mcp_servers_and_names_the_one_that_fails(
    server_settings: Settings, tmp_path: Path
) -> None:
    ws = tmp_path / "mcp-ws"
    servers = {
        "mcpServers": {
            "builtin": {
                "command": sys.executable,
                "args": ["-m", "trinity", "mcp", "serve", "--workspace", str(ws)],
                "start": "eager",
            },
            "ghost": {"command": str(tmp_path / "no-such-server"), "start": "eager"},
            "later": {"command": str(tmp_path / "not-started-by-readyz")},  # lazy
        }
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(servers))
    made = create_app(server_settings.model_copy(update={"mcp_servers_file": str(path)}))
    async with (
        made.router.lifespan_context(made),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=made), base_url="http://trinity.test"
        ) as plain,
    ):
        ready = await plain.get("/readyz")
        assert ready.status_code == 503, ready.text
        checks = ready.json()["checks"]
        assert checks["database"] == "ok" and set(checks["mcp_servers"]) == {"builtin", "ghost"}
        assert checks["mcp_servers"]["builtin"] == "ok"
        assert checks["mcp_servers"]["ghost"].startswith("failing: ")
        assert "no-such-server" in checks["mcp_servers"]["ghost"]
        again = await plain.get("/readyz")  # within 10 s: the same answer, nothing started
        assert again.json()["checks"]["mcp_servers"] == checks["mcp_servers"]
