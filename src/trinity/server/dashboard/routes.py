"""The dashboard's pages. A person logs in with an API token, which is kept in an http-only,
same-site cookie; every form carries a CSRF token derived from it."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from html import escape
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from trinity.decisions import Decision
from trinity.errors import TrinityError
from trinity.security.tokens import AuthError, verify_token
from trinity.server.auth import COOKIE, Caller, presented_token, require
from trinity.server.dashboard.lanes import agent_lanes
from trinity.views import RunFilter

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["timestamp"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
templates.env.filters["brief"] = lambda data: json.dumps(
    {key: value for key, value in data.items() if key != "changes"}, ensure_ascii=False
)[:240]
router = APIRouter(include_in_schema=False)
_PROCESS_SECRET = secrets.token_bytes(32)
"""Signs the CSRF tokens of a server without authentication."""


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


def csrf_token(request: Request) -> str:
    presented = presented_token(request) or ""
    key = hashlib.sha256(presented.encode()).digest() if presented else _PROCESS_SECRET
    return hmac.new(key, b"trinity-dashboard-csrf", hashlib.sha256).hexdigest()


def check_csrf(request: Request, given: str) -> None:
    if not hmac.compare_digest(csrf_token(request), given or ""):
        raise AuthError("the form's CSRF token is missing or wrong: reload the page", status=403)


async def page_caller(request: Request) -> Caller | None:
    """The person looking, or ``None`` (then the page sends them to log in)."""
    server = request.app.state.trinity
    if not server.auth:
        return Caller(None)
    presented = presented_token(request)
    if not presented:
        return None
    try:
        token = await run_in_threadpool(verify_token, server.runtime.store, presented)
    except AuthError:
        return None
    return Caller(token)


Viewer = Annotated[Caller | None, Depends(page_caller)]


SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
"""The runs list's time ranges: created in the last hour, day, week, month."""
DECISIONS: dict[str, Decision] = {"approve": "approve", "deny": "deny", "answer": "answer"}


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    server = request.app.state.trinity
    return templates.TemplateResponse(
        request,
        name,
        {
            "csrf": csrf_token(request),
            "auth": server.auth,
            "logged_in": True,
            "now": time.time(),
            **context,
        },
    )


def _login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, error: str = "") -> HTMLResponse:
    return _render(request, "login.html", error=error, logged_in=False)


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form(max_length=200)]) -> Response:
    server = request.app.state.trinity
    # Guessing a token is hopeless (256 random bits), but each try reads the database:
    # tries count against the write limit of the client's address.
    address = request.client.host if request.client else "unknown"
    await server.limits.hit(Caller(None, address), "write")
    try:
        await run_in_threadpool(verify_token, server.runtime.store, token)
    except AuthError as exc:
        return _render(request, "login.html", error=str(exc), logged_in=False)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=7 * 86400,
    )
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    response = _login()
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
async def runs_page(
    request: Request,
    viewer: Viewer,
    status: str = "",
    text: str = "",
    since: str = "",
    cursor: str = "",
    limit: int = 100,
) -> Response:
    if viewer is None:
        return _login()
    runtime = request.app.state.trinity.runtime
    window = SINCE.get(since)
    where = RunFilter(
        status=[status] if status else None,
        text=text[:500] or None,
        since=time.time() - window if window else None,
    )
    try:
        page = await run_in_threadpool(
            runtime.list_runs, where, limit=max(1, min(limit, 500)), cursor=cursor or None
        )
    except TrinityError as exc:
        return _render(request, "error.html", message=str(exc))
    filters = {"status": status, "text": text, "since": since if window else ""}
    older = None
    if page.next_cursor:
        query = {**filters, "cursor": page.next_cursor, "limit": limit}
        older = "/?" + urlencode({key: value for key, value in query.items() if value})
    newest = "/?" + urlencode({key: value for key, value in filters.items() if value})
    return _render(
        request,
        "runs.html",
        runs=page.runs,
        status=status,
        text=text,
        since=since if window else "",
        windows=SINCE,
        older=older,
        newest=newest if cursor else None,
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str, viewer: Viewer) -> Response:
    if viewer is None:
        return _login()
    runtime = request.app.state.trinity.runtime
    try:
        run = await run_in_threadpool(runtime.get_run, run_id)
        events = await run_in_threadpool(runtime.events, run.id, 0, 2000)
    except TrinityError as exc:
        return _render(request, "error.html", message=str(exc))
    lanes = agent_lanes(events)
    return _render(request, "run.html", run=run, state=run.state, events=events, lanes=lanes)


@router.get("/runs/{run_id}/lanes", response_class=HTMLResponse)
async def run_lanes(request: Request, run_id: str, viewer: Viewer) -> Response:
    """The run page's agent lanes alone (the page refreshes them while the run goes on)."""
    if viewer is None:
        return _login()
    runtime = request.app.state.trinity.runtime
    try:
        events = await run_in_threadpool(
            lambda: runtime.events(runtime.find_run(run_id).id, 0, 2000)
        )
    except TrinityError as exc:
        return HTMLResponse(f'<p class="error">{escape(str(exc))}</p>', status_code=404)
    return _render(request, "lanes.html", lanes=agent_lanes(events))


@router.get("/monitor", response_class=HTMLResponse)
async def monitor_page(request: Request, viewer: Viewer, hours: int = 24) -> Response:
    """Runs over time (runs, error rate, p95 run time, tokens, cost), the alerts, and the
    performance report of the same hours."""
    if viewer is None:
        return _login()
    from trinity.server.dashboard.charts import bars, buckets

    hours = max(1, min(hours, 24 * 30))
    runtime = request.app.state.trinity.runtime
    now = time.time()
    since = now - hours * 3600
    rows = await run_in_threadpool(runtime.store.ended_series, since)
    width = 600 if hours <= 6 else 3600 if hours <= 72 else 86400
    made = buckets(rows, now, hours, width)
    labels = [time.strftime("%m-%d %H:%M", time.gmtime(b.start)) for b in made]
    charts = [
        ("Runs ended", bars([b.runs for b in made], labels, "")),
        ("Error rate", bars([b.error_rate for b in made], labels, "%", "bad")),
        ("p95 run time", bars([b.p95 for b in made], labels, "s")),
        ("Tokens", bars([b.tokens for b in made], labels, "")),
        ("Cost", bars([b.cost for b in made], labels, "$")),
    ]
    report = await run_in_threadpool(runtime.performance, since)
    states = await run_in_threadpool(runtime.store.alert_states)
    rules = request.app.state.trinity.runtime.settings.alerts
    return _render(
        request,
        "monitor.html",
        charts=charts,
        hours=hours,
        width=width,
        report=report,
        rules=rules,
        states=states,
    )


@router.get("/approvals", response_class=HTMLResponse)
async def approvals_page(request: Request, viewer: Viewer) -> Response:
    if viewer is None:
        return _login()
    runtime = request.app.state.trinity.runtime
    page = await run_in_threadpool(
        runtime.list_runs, RunFilter(status=["awaiting_approval"]), limit=200
    )
    waiting = [await run_in_threadpool(runtime.get_run, run.id) for run in page.runs]
    return _render(request, "approvals.html", runs=waiting)


@router.get("/new", response_class=HTMLResponse)
async def new_run_page(request: Request, viewer: Viewer) -> Response:
    if viewer is None:
        return _login()
    return _new_page(request)


def _new_page(request: Request, **context: Any) -> HTMLResponse:
    """The new-run form; its limits' placeholders are the server's settings."""
    from trinity.limits import RunLimits

    defaults = RunLimits().resolve(request.app.state.trinity.runtime.settings)
    return _render(request, "new.html", defaults=defaults, **{"error": "", **context})


@router.post("/new")
async def new_run(
    request: Request,
    viewer: Viewer,
    task: Annotated[str, Form(max_length=20_000)] = "",
    plan: Annotated[str, Form(max_length=1_000_000)] = "",
    model: Annotated[str, Form(max_length=500)] = "",
    max_steps: Annotated[str, Form(max_length=20)] = "",
    timeout_s: Annotated[str, Form(max_length=20)] = "",
    token_budget: Annotated[str, Form(max_length=20)] = "",
    cost_budget_usd: Annotated[str, Form(max_length=20)] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    if viewer is None:
        return _login()
    check_csrf(request, csrf)
    await require("runs:write", "write")(request)
    from trinity.limits import RunLimits
    from trinity.plans import parse_plan_data
    from trinity.security.inputs import load_yaml

    server = request.app.state.trinity
    try:
        if model.startswith("scripted:") and not server.allow_scripted:
            raise AuthError("this server does not allow scripted: models", status=403)
        target: Any = task.strip()
        if plan.strip():
            target = parse_plan_data(load_yaml(plan), "plan")
        given = {
            "max_steps": max_steps,
            "timeout_s": timeout_s,
            "token_budget": token_budget,
            "cost_budget_usd": cost_budget_usd,
        }
        limits = RunLimits.given(**{k: v.strip() or None for k, v in given.items()})
        prepared = server.runtime.prepare(target, model=model.strip() or None, limits=limits)
        run_id = await server.executor.launch(prepared)
    except (TrinityError, ValueError) as exc:
        return _new_page(request, error=str(exc), task=task, plan=plan, model=model, limits=given)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


@router.post("/runs/{run_id}/{action}")
async def act(
    request: Request,
    run_id: str,
    action: str,
    viewer: Viewer,
    csrf: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    if viewer is None:
        return _login()
    check_csrf(request, csrf)
    server = request.app.state.trinity
    runtime = server.runtime
    try:
        run = await run_in_threadpool(runtime.find_run, run_id)
        if action == "cancel":
            await require("runs:write", "write")(request)
            await runtime.cancel_run(run.id, 5.0)
        elif action in DECISIONS:
            caller = await require("approvals", "write")(request)
            await server.executor.decide(run.id, DECISIONS[action], note or None, caller.actor)
        else:
            return _render(request, "error.html", message=f"unknown action {action!r}")
    except TrinityError as exc:
        return _render(request, "error.html", message=str(exc))
    return RedirectResponse(f"/runs/{run.id}", status_code=303)
