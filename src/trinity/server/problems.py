"""Errors as RFC 9457 problem details (``application/problem+json``): a status, a title, and a
detail that says what was wrong. Never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from trinity.errors import (
    ApprovalPendingError,
    ConfigError,
    InputError,
    NotFoundError,
    RunBusyError,
    StoreError,
    TrinityError,
)
from trinity.security.tokens import AuthError
from trinity.server.auth import RateLimited

log = logging.getLogger(__name__)
TITLES = {
    400: "Bad request",
    405: "Method not allowed",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Request too large",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {
            "type": "about:blank",
            "title": TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
        },
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def status_of(exc: TrinityError) -> int:
    if isinstance(exc, AuthError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ApprovalPendingError | RunBusyError):
        return 409
    if isinstance(exc, InputError | ConfigError):
        return 422
    if isinstance(exc, StoreError):
        return 503
    return 500


def install(app: FastAPI) -> None:
    async def trinity_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TrinityError)
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return problem(status, str(exc), headers)

    async def rate_limited(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RateLimited)
        return problem(429, str(exc), {"Retry-After": str(exc.retry_after_s)})

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        lines = []
        for error in exc.errors()[:10]:
            where = ".".join(str(part) for part in error["loc"])
            lines.append(f"{where}: {error['msg']}")
        return problem(422, "; ".join(lines))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Every method the path has, not only those of the first route that matched it.
            allowed = set()
            for route in request.app.routes:
                match = getattr(route, "path_regex", None)
                if match is not None and match.match(request.url.path):
                    allowed |= set(getattr(route, "methods", None) or ())
            headers["Allow"] = ", ".join(sorted(allowed))
        return problem(exc.status_code, str(exc.detail), headers or None)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, f"internal error ({type(exc).__name__}); the server log has details")

    app.add_exception_handler(TrinityError, trinity_error)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
