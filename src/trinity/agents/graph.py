"""The five agents wired into one graph."""

from __future__ import annotations

from trinity.agents.atlas import Atlas
from trinity.agents.context import AgentContext
from trinity.agents.grisha import Grisha
from trinity.agents.knowledge import Knowledge
from trinity.agents.meta_planner import MetaPlanner, route
from trinity.agents.tetyana import Tetyana
from trinity.engine import Graph
from trinity.state import RunState

TOOL_NODE = "tetyana"


class CallDurability:
    """Whether a tool call's in-flight mark must be on disk before the call is made.

    A call that can be repeated (an idempotent tool: reads, a write of the same content) needs
    none: if the run dies, the resumed run makes it again. But the mark's wait also puts on
    disk what earlier calls returned, so a call that cannot be repeated makes the next call
    wait too, whatever that one is. The first call after a start or resume always waits."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._unsafe = True
        """Since the last wait, a call was made that cannot be repeated (or we cannot tell)."""

    def __call__(self, state: RunState, node: str) -> bool:
        step = state.current_step
        repeatable = step is not None and not state.interrupted and self.ctx.repeatable(step)
        wait = self._unsafe or not repeatable
        self._unsafe = not repeatable
        return wait


def build_graph(ctx: AgentContext) -> Graph[RunState]:
    """``recall -> meta -> atlas -> meta -> (tetyana -> grisha -> meta)* -> learn``; after each
    verdict the Meta-Planner picks the next step, a retry, a replan (back to Atlas) or the end."""
    knowledge = Knowledge(ctx)
    return Graph(
        nodes={
            "recall": knowledge.recall,
            "meta": MetaPlanner(ctx),
            "atlas": Atlas(ctx),
            TOOL_NODE: Tetyana(ctx),
            "grisha": Grisha(ctx),
            "learn": knowledge.learn,
        },
        router=route,
        entry="recall",
        side_effect_nodes=frozenset({TOOL_NODE}),
        durable_before=CallDurability(ctx),
    )
