"""A graph: named async nodes and a router that picks the next node from the state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from trinity.errors import EngineError
from trinity.state import EngineState, StopReason

S = TypeVar("S", bound=EngineState)

END = "__end__"
"""Router result that ends the run."""

Update = Mapping[str, Any] | None
Node = Callable[[S], Awaitable[Update]]
"""A node reads the state and returns the fields it changes (or ``None``)."""
Router = Callable[[S, str], str]
"""``router(state, last_node)`` names the next node, or :data:`END`."""


class StopRun(Exception):
    """Raised by a node (or a service it calls) to end the run with a typed reason."""

    def __init__(self, reason: StopReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass
class Graph(Generic[S]):
    nodes: dict[str, Node[S]]
    router: Router[S]
    entry: str
    side_effect_nodes: frozenset[str] = field(default_factory=frozenset)
    """Nodes that act on the world (tool calls). Before one runs, the engine journals it as in
    flight and waits until that is on disk, so a resumed run knows the action may have
    happened."""
    durable_before: Callable[[S, str], bool] | None = None
    """``durable_before(state, node)``: whether a side-effect node's in-flight mark must be on
    disk before it runs (``None``: always). A graph may say no for an action that is safe to
    repeat: losing its mark in a crash only makes the resumed run do it again."""

    def __post_init__(self) -> None:
        if self.entry not in self.nodes:
            raise EngineError(f"entry node {self.entry!r} is not in the graph")
        unknown = self.side_effect_nodes - self.nodes.keys()
        if unknown:
            raise EngineError(f"side-effect nodes not in the graph: {sorted(unknown)}")
        if END in self.nodes:
            raise EngineError(f"{END!r} is reserved")
