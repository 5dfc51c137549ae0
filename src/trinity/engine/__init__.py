"""A small asyncio graph executor: nodes, a router, limits and one checkpoint per step."""

from trinity.engine.aio import run_main
from trinity.engine.checkpoint import Checkpointer, MemoryCheckpointer, StoreCheckpointer
from trinity.engine.graph import END, Graph, StopRun
from trinity.engine.runner import Durability, Engine, Limits, load_state

__all__ = [
    "END",
    "Checkpointer",
    "Durability",
    "Engine",
    "Graph",
    "Limits",
    "MemoryCheckpointer",
    "StopRun",
    "StoreCheckpointer",
    "load_state",
    "run_main",
]
