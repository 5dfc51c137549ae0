"""The five agents: Meta-Planner, Atlas, Tetyana, Grisha and Knowledge."""

from trinity.agents.context import AgentContext
from trinity.agents.graph import build_graph

__all__ = ["AgentContext", "build_graph"]
