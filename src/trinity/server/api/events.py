"""Live events over Server-Sent Events: one run's, or every run's.

A stream subscribes to the live events first, then sends what the store holds after
``Last-Event-ID`` (the backfill), then the live ones, skipping any it already sent: a client
that reconnects with the id of the last event it saw misses nothing and gets nothing twice.
Ids: a run's stream uses the event's ``seq``; the stream of all runs ``<run_id>:<seq>``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from trinity.server.auth import Caller, require
from trinity.server.schemas import EVENT_STREAM, RUN_PROBLEMS
from trinity.views import EventRecord

router = APIRouter(prefix="/v1", tags=["events"], responses=RUN_PROBLEMS)
READ = Depends(require("runs:read"))
HEARTBEAT_S = 15
POLL_S = 1.0
"""A run's stream with no live event for this long looks in the store (a run another process
executes reaches this server only there)."""


def _message(event: dict[str, Any], event_id: str) -> dict[str, str]:
    data = {key: value for key, value in event["data"].items() if key != "changes"}
    return {"id": event_id, "event": event["kind"], "data": json.dumps({**event, "data": data})}


def _plain(record: EventRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


@router.get(
    "/runs/{run_id}/events/stream", response_class=EventSourceResponse, responses=EVENT_STREAM
)
async def run_stream(
    run_id: str,
    request: Request,
    caller: Annotated[Caller, READ],
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
    after_seq: Annotated[int | None, Query(ge=0)] = None,
) -> EventSourceResponse:
    """The run's events as they happen (``text/event-stream``), after ``Last-Event-ID`` (or
    ``after_seq``; 0: from its first event)."""
    server = request.app.state.trinity
    run = await run_in_threadpool(server.runtime.find_run, run_id)
    after = after_seq or 0
    if last_event_id and last_event_id.strip().isdigit():
        after = int(last_event_id)
    subscription = server.live.subscribe(run.id)

    async def stored(after: int) -> list[EventRecord]:
        # Everything queued for the store so far is committed first: an event emitted just
        # before this stream subscribed, and still in the group commit, is not missed.
        await server.runtime.store.writer.flush()
        return list(await run_in_threadpool(server.runtime.events, run.id, after))

    async def messages() -> AsyncIterator[dict[str, str]]:
        try:
            last = after
            for record in await stored(last):
                yield _message(_plain(record), str(record.seq))
                last = record.seq
            while True:
                try:
                    item = await asyncio.wait_for(subscription.get(), POLL_S)
                except TimeoutError:
                    # Quiet here: the run may be executing in another process (another
                    # server on the same database), whose events only the store has.
                    for record in await run_in_threadpool(server.runtime.events, run.id, last):
                        yield _message(_plain(record), str(record.seq))
                        last = record.seq
                    continue
                if item is None:
                    return  # the server stops, or this client fell behind: it reconnects
                if item["seq"] <= last:
                    continue
                if item["seq"] > last + 1:  # a gap: fill it from the store, in order
                    for record in await stored(last):
                        if record.seq < item["seq"]:
                            yield _message(_plain(record), str(record.seq))
                            last = record.seq
                yield _message(item, str(item["seq"]))
                last = item["seq"]
        finally:
            server.live.unsubscribe(subscription)

    return EventSourceResponse(messages(), ping=HEARTBEAT_S)


@router.get("/events/stream", response_class=EventSourceResponse, responses=EVENT_STREAM)
async def all_runs_stream(
    request: Request,
    caller: Annotated[Caller, READ],
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> EventSourceResponse:
    """Every run's events as they happen; with ``Last-Event-ID`` (``<run_id>:<seq>``), what
    was written after that event first."""
    server = request.app.state.trinity
    subscription = server.live.subscribe(None)
    after: tuple[str, int] | None = None
    if last_event_id and ":" in last_event_id:
        run_id, _, seq = last_event_id.rpartition(":")
        if seq.isdigit():
            after = (run_id, int(seq))

    async def messages() -> AsyncIterator[dict[str, str]]:
        sent: dict[str, int] = {}
        try:
            if after is not None:
                sent[after[0]] = after[1]
                await server.runtime.store.writer.flush()  # see run_stream
                backlog = await run_in_threadpool(server.runtime.events_of_all_runs, after)
                for record in backlog:
                    sent[record.run_id] = record.seq
                    yield _message(_plain(record), f"{record.run_id}:{record.seq}")
            while True:
                item = await subscription.get()
                if item is None:
                    return
                if item["seq"] <= sent.get(item["run_id"], 0):
                    continue
                sent[item["run_id"]] = item["seq"]
                yield _message(item, f"{item['run_id']}:{item['seq']}")
        finally:
            server.live.unsubscribe(subscription)

    return EventSourceResponse(messages(), ping=HEARTBEAT_S)
