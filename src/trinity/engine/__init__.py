"""A small asyncio graph executor: nodes, a router, limits and a journal entry per step."""

from trinity.engine.aio import run_main
from trinity.engine.graph import END, Graph, StopRun
from trinity.engine.journal import Journal, MemoryJournal
from trinity.engine.runner import Durability, Engine, Limits, resume_point

__all__ = [
    "END",
    "Durability",
    "Engine",
    "Graph",
    "Journal",
    "Limits",
    "MemoryJournal",
    "StopRun",
    "resume_point",
    "run_main",
]
