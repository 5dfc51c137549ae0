"""``/v1/runs``: start, list, read, cancel, resume, approve and deny runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from trinity.errors import DuplicateRunError, InputError
from trinity.observability.spans import incoming_trace
from trinity.security.tokens import AuthError
from trinity.server.auth import Caller, require
from trinity.server.schemas import (
    RUN_PROBLEMS,
    Accepted,
    Answer,
    CancelBody,
    CreateRun,
    Decision,
    RunCreated,
)
from trinity.views import AuditEntry, EventRecord, RunDetail, RunFilter, RunPage

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=RUN_PROBLEMS)
READ = Depends(require("runs:read"))
WRITE = Depends(require("runs:write", "write"))
APPROVE = Depends(require("approvals", "write"))


def _server(request: Request) -> Any:
    return request.app.state.trinity


@router.post("", status_code=201, response_model=RunCreated)
async def create_run(
    body: CreateRun,
    request: Request,
    response: Response,
    caller: Annotated[Caller, WRITE],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunCreated:
    """Start a run: a task in words with a model, or an inline plan. With an
    ``Idempotency-Key`` header, a retried request returns the run the first one started."""
    from trinity.plans import parse_plan_data
    from trinity.tools.permissions import PermissionPolicy

    server = _server(request)
    runtime = server.runtime
    if (body.task is None) == (body.plan is None):
        raise InputError("give either 'task' (words, with a model) or 'plan' (an inline plan)")
    target = body.task if body.task is not None else parse_plan_data(body.plan, "plan")
    if body.permissions is not None and not (caller.token is None or caller.token.grants("admin")):
        raise AuthError("a run's own permission policy needs the 'admin' scope", status=403)
    if body.model and body.model.startswith("scripted:") and not server.allow_scripted:
        raise InputError(
            "scripted: models read files on the server; this server does not allow them "
            "(api_allow_scripted)"
        )
    policy = (
        PermissionPolicy.from_data(body.permissions, source="the request's permissions")
        if body.permissions is not None
        else None
    )
    prepared = runtime.prepare(
        target,
        model=body.model,
        limits=body.limits,
        verification=body.verification,
        max_replans=body.max_replans,
        mcp_servers=body.mcp_servers,
    )
    if policy is not None:
        prepared.permissions = policy
    key = f"{caller.key}:{idempotency_key}" if idempotency_key else None
    try:
        with incoming_trace(request.headers):  # the run joins the caller's trace
            run_id = await server.executor.launch(prepared, idempotency_key=key)
        created = True
    except DuplicateRunError as exc:
        run_id, created = exc.run_id, False
        response.status_code = 200
    run = await run_in_threadpool(runtime.find_run, run_id)
    response.headers["Location"] = f"/v1/runs/{run_id}"
    return RunCreated(run=run, created=created)


@router.get("", response_model=RunPage)
async def list_runs(
    request: Request,
    caller: Annotated[Caller, READ],
    status: Annotated[list[str] | None, Query(max_length=10)] = None,
    stop_reason: Annotated[list[str] | None, Query(max_length=20)] = None,
    since: float | None = None,
    until: float | None = None,
    text: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RunPage:
    """Runs newest first; ``next_cursor`` fetches the next page."""
    where = RunFilter(status=status, stop_reason=stop_reason, since=since, until=until, text=text)
    runtime = _server(request).runtime
    return await run_in_threadpool(runtime.list_runs, where, limit=limit, cursor=cursor)


@router.get("/{run_id}", response_model=RunDetail)
async def get_run(run_id: str, request: Request, caller: Annotated[Caller, READ]) -> RunDetail:
    """One run: steps, verdicts, usage (in ``state``) and its report."""
    return await run_in_threadpool(_server(request).runtime.get_run, run_id)


@router.get("/{run_id}/events", response_model=list[EventRecord])
async def run_events(
    run_id: str,
    request: Request,
    caller: Annotated[Caller, READ],
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[EventRecord]:
    """The run's events after ``after_seq``, in order."""
    return await run_in_threadpool(_server(request).runtime.events, run_id, after_seq, limit)


@router.get("/{run_id}/audit", response_model=list[AuditEntry])
async def run_audit(
    run_id: str, request: Request, caller: Annotated[Caller, READ]
) -> list[AuditEntry]:
    """Every permission decision of the run."""
    return await run_in_threadpool(_server(request).runtime.audit, run_id)


@router.post("/{run_id}/cancel", status_code=202, response_model=Accepted)
async def cancel_run(
    run_id: str, request: Request, caller: Annotated[Caller, WRITE], body: CancelBody | None = None
) -> Accepted:
    """Stop the run after its current step, or by force after ``grace_s``; resumable."""
    runtime = _server(request).runtime
    run = await run_in_threadpool(runtime.find_run, run_id)
    said = await runtime.cancel_run(run.id, (body or CancelBody()).grace_s)
    return Accepted(run_id=run.id, detail=said)


@router.post("/{run_id}/resume", status_code=202, response_model=Accepted)
async def resume_run(run_id: str, request: Request, caller: Annotated[Caller, WRITE]) -> Accepted:
    """Continue a run that was cancelled, crashed or stopped by an error."""
    server = _server(request)
    run = await run_in_threadpool(server.runtime.find_run, run_id)
    await server.executor.continue_run(
        run.id, lambda subscribers: server.runtime.resume(run.id, subscribers=subscribers)
    )
    return Accepted(run_id=run.id, detail="resumed")


async def _decide(
    request: Request,
    run_id: str,
    decision: Literal["approve", "deny", "answer"],
    text: str | None,
    caller: Caller,
) -> Accepted:
    server = _server(request)
    run = await run_in_threadpool(server.runtime.find_run, run_id)
    await server.executor.decide(run.id, decision, text, caller.actor)
    said = {"approve": "approved", "deny": "denied", "answer": "answered"}
    return Accepted(run_id=run.id, detail=said[decision])


@router.post("/{run_id}/approve", status_code=202, response_model=Accepted)
async def approve_run(
    run_id: str, request: Request, caller: Annotated[Caller, APPROVE], body: Decision | None = None
) -> Accepted:
    """Approve the tool call the run waits for; the run goes on (the call is made once)."""
    return await _decide(request, run_id, "approve", body.note if body else None, caller)


@router.post("/{run_id}/deny", status_code=202, response_model=Accepted)
async def deny_run(
    run_id: str, request: Request, caller: Annotated[Caller, APPROVE], body: Decision | None = None
) -> Accepted:
    """Refuse the tool call the run waits for (or decline its question); that step fails and
    the run goes on."""
    return await _decide(request, run_id, "deny", body.note if body else None, caller)


@router.post("/{run_id}/answer", status_code=202, response_model=Accepted)
async def answer_run(
    run_id: str, request: Request, caller: Annotated[Caller, APPROVE], body: Answer
) -> Accepted:
    """Answer the question the run's ``person.ask`` step waits on (one of its choices, if it
    has some); the answer is that step's output and the run goes on."""
    return await _decide(request, run_id, "answer", body.text, caller)
