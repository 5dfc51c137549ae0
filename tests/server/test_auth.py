"""Tokens, scopes and rate limits: every route refuses a missing, wrong, revoked or expired
token (401) and a token without the scope (403); a burst past the limit gets 429s."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from server_helpers import plan, write

from trinity.config import Settings
from trinity.errors import ConfigError
from trinity.server import create_app

ROUTES: list[tuple[str, str, str]] = [
    # method, path, scope it needs
    ("GET", "/v1/runs", "runs:read"),
    ("GET", "/v1/runs/RUN", "runs:read"),
    ("GET", "/v1/runs/RUN/events", "runs:read"),
    ("GET", "/v1/runs/RUN/audit", "runs:read"),
    ("GET", "/v1/tools", "runs:read"),
    ("POST", "/v1/runs", "runs:write"),
    ("POST", "/v1/runs/RUN/cancel", "runs:write"),
    ("POST", "/v1/runs/RUN/resume", "runs:write"),
    ("POST", "/v1/runs/RUN/approve", "approvals"),
    ("POST", "/v1/runs/RUN/deny", "approvals"),
    ("POST", "/v1/runs/RUN/answer", "approvals"),
]
WEAKER = {"runs:read": "approvals", "runs:write": "runs:read", "approvals": "runs:write"}


def _client(app: Any, secret: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080", headers=headers
    )


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
async def test_every_route_needs_a_valid_token_with_its_scope(
    app: Any, token: Callable[..., str], method: str, path: str, scope: str
) -> None:
    store = app.state.trinity.runtime.store
    revoked = token("admin")
    store.revoke_token(revoked.split("_")[1], time.time())
    expired = token("admin", expires_in_s=0.001)
    await store.writer.flush()
    time.sleep(0.01)
    body = {"json": {"plan": plan(write("a"))}} if path == "/v1/runs" and method == "POST" else {}
    for secret, words in [
        (None, "no token"),
        ("trn_000000000000_" + "x" * 43, "invalid token"),
        ("sk-not-ours", "not a Trinity API token"),
        (revoked, "was revoked"),
        (expired, "has expired"),
    ]:
        async with _client(app, secret) as client:
            answer = await client.request(method, path, **body)
        assert answer.status_code == 401, (secret, answer.text)
        assert words in answer.json()["detail"] and answer.headers["www-authenticate"] == "Bearer"
    weaker, enough = token(WEAKER[scope]), token(scope)
    await store.writer.flush()  # made on the loop: durable once the writer has committed them
    async with _client(app, weaker) as client:
        answer = await client.request(method, path, **body)
    assert answer.status_code == 403 and f"lacks the scope {scope!r}" in answer.json()["detail"]
    async with _client(app, enough) as client:
        answer = await client.request(method, path, **body)
    assert answer.status_code not in (401, 403), answer.text


async def test_health_needs_no_token(app: Any) -> None:
    async with _client(app, None) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_a_run_s_own_policy_needs_admin(app: Any, token: Callable[..., str]) -> None:
    policy = {"rules": [{"tool": "*", "action": "allow"}]}
    async with _client(app, token("runs:write")) as client:
        answer = await client.post(
            "/v1/runs", json={"plan": plan(write("a")), "permissions": policy}
        )
    assert answer.status_code == 403 and "'admin'" in answer.json()["detail"]


async def test_a_burst_past_the_limit_gets_exactly_the_excess_as_429(
    server_settings: Settings, token: Callable[..., str]
) -> None:
    limited = server_settings.model_copy(update={"api_rate_limits": {"read": "20/minute"}})
    app = create_app(limited)
    async with app.router.lifespan_context(app):
        from trinity.security.tokens import create_token

        secret = create_token(app.state.trinity.runtime.store, "burst", ["runs:read"])[1]
        async with _client(app, secret) as client:
            answers = [await client.get("/v1/runs") for _ in range(30)]
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) == 10 and all(a.status_code == 200 for a in answers[:20])
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)
    assert "rate limit 20 per 1 minute" in refused[0].json()["detail"]


def test_no_auth_only_on_loopback(server_settings: Settings) -> None:
    create_app(server_settings, auth=False, host="127.0.0.1")
    create_app(server_settings, auth=False, host="::1")
    with pytest.raises(ConfigError, match="only on a loopback address"):
        create_app(server_settings, auth=False, host="0.0.0.0")


async def test_scripted_models_are_refused_unless_allowed(
    server_settings: Settings, tmp_path: Any
) -> None:
    closed = server_settings.model_copy(update={"api_allow_scripted": False})
    app = create_app(closed, auth=False)
    async with app.router.lifespan_context(app), _client(app, None) as client:
        answer = await client.post("/v1/runs", json={"task": "x", "model": "scripted:/etc/passwd"})
    assert answer.status_code == 422 and "api_allow_scripted" in answer.json()["detail"]


async def test_without_tokens_only_loopback_names_are_answered(server_settings: Settings) -> None:
    """DNS rebinding: a page on evil.example that resolves its name to 127.0.0.1 sends
    Host: evil.example (and its Origin); a no-auth server must refuse it."""
    app = create_app(server_settings, auth=False, host="127.0.0.1")
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        for base, origin, status in [
            ("http://127.0.0.1:8080", None, 200),
            ("http://localhost:8080", "http://localhost:8080", 200),
            ("http://[::1]:8080", None, 200),
            ("http://evil.example:8080", None, 421),
            ("http://127.0.0.1:8080", "http://evil.example", 421),
        ]:
            headers = {"origin": origin} if origin else {}
            async with httpx.AsyncClient(transport=transport, base_url=base) as client:
                answer = await client.get("/v1/runs", headers=headers)
            assert answer.status_code == status, (base, origin, answer.text)
            if status == 421:
                assert "DNS-rebinding" in answer.json()["detail"]


async def test_login_tries_are_rate_limited(server_settings: Settings) -> None:
    limited = server_settings.model_copy(update={"api_rate_limits": {"write": "5/minute"}})
    app = create_app(limited)
    async with app.router.lifespan_context(app), _client(app, None) as client:
        answers = [await client.post("/login", data={"token": "trn_guess"}) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    assert "invalid" in answers[0].text or "not a Trinity API token" in answers[0].text
