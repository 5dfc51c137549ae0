"""``/healthz``, ``/readyz`` and ``/v1/tools``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from trinity.server.auth import Caller, require
from trinity.server.schemas import COMMON_PROBLEMS, ToolInfo

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (no token needed)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready for work: the database takes a durable write, and the MCP servers configured with
    ``start = "eager"`` start (checked at most every 10 s; no token needed)."""
    server = request.app.state.trinity
    checks: dict[str, Any] = {}
    try:
        await server.runtime.store.writer.flush()
        checks["database"] = "ok"
    except Exception as exc:  # a full disk, a read-only or broken database
        checks["database"] = f"failing: {exc}"
    mcp = await server.mcp_readiness.check()
    if mcp:
        checks["mcp_servers"] = mcp
    checks["runs_in_progress"] = server.executor.running
    ready = checks["database"] == "ok" and all(said == "ok" for said in mcp.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/v1/tools", response_model=list[ToolInfo], responses=COMMON_PROBLEMS)
async def list_tools(
    request: Request, caller: Annotated[Caller, Depends(require("runs:read"))]
) -> list[ToolInfo]:
    """The tools runs can use: the built-in ones and those of the configured MCP servers."""
    server = request.app.state.trinity
    async with server.runtime.tool_hub(mcp_servers_file=server.mcp_servers_file) as hub:
        specs = await hub.list_tools()
    return [
        ToolInfo(
            name=spec.name,
            description=spec.description,
            input_schema=spec.input_schema,
            server=spec.name.split(".", 1)[0],
        )
        for spec in specs
    ]


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"},
        **COMMON_PROBLEMS,
    },
)
async def metrics(
    request: Request, caller: Annotated[Caller, Depends(require("runs:read"))]
) -> PlainTextResponse:
    """Prometheus metrics: this server's runs (every process's, with ``metrics_dir``) and the
    database's gauges (runs by status, pending approvals). Needs a ``runs:read`` token (in
    Prometheus: ``authorization: {credentials: trn_…}``)."""
    from trinity.observability.metrics import CONTENT_TYPE, exposition

    runtime = request.app.state.trinity.runtime
    text = await run_in_threadpool(exposition, runtime.metrics().registry, lambda: runtime.store)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
