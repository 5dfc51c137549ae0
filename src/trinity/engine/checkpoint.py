"""Where the engine puts a checkpoint after every step."""

from __future__ import annotations

import asyncio
from typing import Protocol

from trinity.store.sqlite import Store


class Checkpointer(Protocol):
    def save(
        self, run_id: str, step: int, next_node: str | None, state_json: str, *, durable: bool
    ) -> asyncio.Future[None] | None:
        """Store a checkpoint. With ``durable=True`` return a future that resolves once it is on
        disk; otherwise the write may be pending until the next :meth:`flush`."""
        ...

    async def flush(self) -> None:
        """Wait until every checkpoint saved so far is durable."""
        ...

    def latest(self, run_id: str) -> tuple[int, str | None, str] | None:
        """``(step, next_node, state_json)`` of the newest checkpoint, or ``None``."""
        ...


class MemoryCheckpointer:
    """Keeps every checkpoint in a dict. For tests and throwaway runs."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, list[tuple[int, str | None, str]]] = {}

    def save(
        self, run_id: str, step: int, next_node: str | None, state_json: str, *, durable: bool
    ) -> asyncio.Future[None] | None:
        self.checkpoints.setdefault(run_id, []).append((step, next_node, state_json))
        return None

    async def flush(self) -> None:
        return None

    def latest(self, run_id: str) -> tuple[int, str | None, str] | None:
        history = self.checkpoints.get(run_id)
        return history[-1] if history else None


class StoreCheckpointer:
    """Checkpoints in the SQLite store, group-committed by its writer thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def save(
        self, run_id: str, step: int, next_node: str | None, state_json: str, *, durable: bool
    ) -> asyncio.Future[None] | None:
        return self.store.save_checkpoint(run_id, step, next_node, state_json, durable=durable)

    async def flush(self) -> None:
        await self.store.writer.flush()

    def latest(self, run_id: str) -> tuple[int, str | None, str] | None:
        return self.store.latest_checkpoint(run_id)
