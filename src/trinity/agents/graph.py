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
    )
