"""Live events for the API's streams: every event of every run the server executes, handed to
the SSE subscribers that want it, newest-last.

A subscriber is a bounded queue. One that falls too far behind is dropped (its stream ends):
the client reconnects with ``Last-Event-ID`` and the backfill from the store gives it what it
missed, so a slow client never slows a run nor loses an event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from trinity.events import ENVELOPE, EventBase

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000


def record(event: EventBase) -> dict[str, Any]:
    """An event as the API sends it: ``run_id``, ``seq``, ``ts``, ``kind``, ``node`` and the
    kind's own fields in ``data`` (without the state changes journal entries carry)."""
    data = event.model_dump(mode="json", exclude={*ENVELOPE, "changes"})
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "ts": event.ts,
        "kind": event.kind,
        "node": event.node,
        "data": data,
    }


class Subscription:
    def __init__(self, hub: LiveEvents, run_id: str | None) -> None:
        self.hub = hub
        self.run_id = run_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, item: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.info("an event stream fell %d events behind: closing it", QUEUE_SIZE)
            self.hub.unsubscribe(self)
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)  # the stream ends; the client resumes from the store

    async def get(self) -> dict[str, Any] | None:
        return await self.queue.get()


class LiveEvents:
    """The fan-out: :meth:`publish` is an event sink (``Runtime.subscribe``)."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def publish(self, event: EventBase) -> None:
        if not self._subscriptions:
            return
        item = record(event)
        for subscription in list(self._subscriptions):
            if subscription.run_id in (None, event.run_id):
                subscription.offer(item)

    def subscribe(self, run_id: str | None = None) -> Subscription:
        """Events of one run, or of every run (``None``), from now on."""
        subscription = Subscription(self, run_id)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        for subscription in list(self._subscriptions):
            self.unsubscribe(subscription)
            subscription.queue.put_nowait(None)
