"""The API's request and response bodies. Requests are strict: an unknown field is refused
with its name, and sizes are capped."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trinity.limits import RunLimits
from trinity.state import VerificationLevel
from trinity.views import RunSummary

MAX_TASK_CHARS = 20_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateRun(Strict):
    """A run to start: a task in words (with a model), or an inline plan."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["task"]}, {"required": ["plan"]}]},
    )

    task: str | None = Field(default=None, min_length=1, max_length=MAX_TASK_CHARS)
    plan: dict[str, Any] | None = Field(
        default=None, description="A plan file's content (task, steps…), as JSON"
    )
    model: str | None = Field(default=None, max_length=500)
    verification: VerificationLevel | None = None
    limits: RunLimits = Field(
        default_factory=RunLimits,
        description="The run's limits; a field left out takes the server's setting",
    )
    max_replans: int | None = Field(
        default=None, ge=0, le=100, description="New plans Atlas may make; unset: it chooses"
    )
    permissions: dict[str, Any] | None = Field(
        default=None, description="A permission policy (the YAML file's content, as JSON)"
    )
    mcp_servers: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        max_length=100,
        description="The server's configured MCP servers this run may use, by name; unset: all",
    )


class RunCreated(BaseModel):
    run: RunSummary
    created: bool
    """False when the Idempotency-Key had already started this run."""


class Decision(Strict):
    note: str | None = Field(default=None, max_length=2_000)


class Answer(Strict):
    text: str = Field(min_length=1, max_length=20_000)
    """The answer to the run's question."""


class CancelBody(Strict):
    grace_s: float = Field(default=5.0, ge=0, le=3600)
    """Seconds the current step may finish in before the run is stopped by force."""


class Accepted(BaseModel):
    run_id: str
    status: Literal["accepted"] = "accepted"
    detail: str = ""


class ToolInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]
    server: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer, as problem details."""
    said = {
        400: "The body is not JSON (or not UTF-8)",
        401: "No valid token (missing, unknown, revoked or expired)",
        403: "The token lacks the scope this route needs",
        404: "No run with that id",
        409: "The run is busy elsewhere or waits for an approval",
        413: "The request body is too large",
        422: "The request is not valid: the detail names what",
        429: "Rate limit reached: see Retry-After",
        503: "The database cannot be written",
    }
    return {
        status: {
            "model": Problem,
            "description": said[status],
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }


COMMON_PROBLEMS = problems(400, 401, 403, 413, 422, 429, 503)
RUN_PROBLEMS = problems(400, 401, 403, 404, 409, 413, 422, 429, 503)
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: one message per event (id, event = its kind, data = "
        "the event as JSON), and a comment every 15 s",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
