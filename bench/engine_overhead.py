"""Engine overhead: Trinity's graph engine beside LangGraph, in one process run.

    python bench/engine_overhead.py            # full run (about a minute)
    python bench/engine_overhead.py --quick    # smaller numbers, for a smoke test

Part 1 — per-step cost of the same 5-node cycle (meta -> planner -> executor -> verifier ->
knowledge -> meta ...) with trivial nodes, about 1,000 steps per run: without a checkpointer,
and with SQLite in a file (synchronous=FULL, the default of both). Trinity writes its run
journal, as a Runtime run does: one event row per node, carrying what the step changed;
LangGraph writes one checkpoint per step. ``durability=sync`` waits for each step's commit
before the next step; ``durability=async`` writes behind the run and waits at the end.

Part 2 — N concurrent runs of 10 steps whose node awaits 10 ms (ideal wall time 0.1 s).

LangGraph is optional (``pip install -e .[bench]``); without it only Trinity's column is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

from tables import table
from trinity.engine import END, Engine, Graph
from trinity.events import EventBus
from trinity.state import EngineState
from trinity.store import Store
from trinity.store.journal import RunJournal

CYCLE = ["meta", "planner", "executor", "verifier", "knowledge"]
NEXT = {name: CYCLE[(i + 1) % len(CYCLE)] for i, name in enumerate(CYCLE)}

try:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END as LG_END
    from langgraph.graph import START, StateGraph

    LANGGRAPH = metadata.version("langgraph")
except ImportError:  # the bench extra is not installed
    LANGGRAPH = None


# -- Trinity -------------------------------------------------------------------------------------


class BenchState(EngineState):
    n: int = 0
    limit: int = 0


def trinity_graph(sleep_s: float) -> Graph[BenchState]:
    async def trivial(state: BenchState) -> dict[str, int]:
        return {"n": state.n + 1}

    async def waiting(state: BenchState) -> dict[str, int]:
        await asyncio.sleep(sleep_s)
        return {"n": state.n + 1}

    node = waiting if sleep_s else trivial

    def route(state: BenchState, last: str) -> str:
        return END if last == "knowledge" and state.n >= state.limit else NEXT[last]

    return Graph(nodes=dict.fromkeys(CYCLE, node), router=route, entry="meta")


class TrinityRunner:
    name = "Trinity"

    def __init__(self, folder: Path, sleep_s: float, checkpoints: bool, durability: str) -> None:
        self.store = Store(folder / "trinity.db") if checkpoints else None
        self.graph = trinity_graph(sleep_s)
        self.durability = durability
        self.count = 0

    async def run(self, steps: int) -> int:
        self.count += 1
        state = BenchState(run_id=f"r{self.count}", limit=steps)
        if self.store is None:
            engine = Engine(self.graph, durability=self.durability)  # type: ignore[arg-type]
        else:  # a run's journal, as the Runtime builds it: every event a row, the changes on
            bus = EventBus(state.run_id)  # the entries at each step's boundaries
            journal = RunJournal(self.store, state, bus, epoch=0)
            bus.subscribe(journal)
            engine = Engine(
                self.graph,
                journal=journal,
                events=bus.emit,
                durability=self.durability,  # type: ignore[arg-type]
            )
        await engine.run(state)
        return state.n

    async def close(self) -> None:
        if self.store:
            self.store.close()


# -- LangGraph -----------------------------------------------------------------------------------


class LGState(TypedDict):
    n: int
    limit: int


def langgraph_builder(sleep_s: float, *, asynchronous: bool) -> Any:
    """The same cycle for LangGraph. Under ``ainvoke`` the nodes are coroutines (a plain function
    would be sent to a thread pool at every step); under ``invoke`` they are plain functions."""

    def trivial(state: LGState) -> dict[str, int]:
        return {"n": state["n"] + 1}

    async def trivial_async(state: LGState) -> dict[str, int]:
        return {"n": state["n"] + 1}

    async def waiting(state: LGState) -> dict[str, int]:
        await asyncio.sleep(sleep_s)
        return {"n": state["n"] + 1}

    node = waiting if sleep_s else (trivial_async if asynchronous else trivial)
    builder = StateGraph(LGState)
    for name in CYCLE:
        builder.add_node(name, node)
    # Idiomatic and cheapest for LangGraph: fixed edges round the cycle, one conditional edge
    # (after knowledge, the last node) that ends the run. Step counts are multiples of 5.
    builder.add_edge(START, "meta")
    for name in CYCLE[:-1]:
        builder.add_edge(name, NEXT[name])
    builder.add_conditional_edges(
        "knowledge", lambda s: LG_END if s["n"] >= s["limit"] else "meta", ["meta", LG_END]
    )
    return builder


class LangGraphRunner:
    name = "LangGraph"

    def __init__(self, folder: Path, sleep_s: float, checkpoints: bool, durability: str) -> None:
        self.folder = folder
        self.builder = langgraph_builder(sleep_s, asynchronous=True)
        self.checkpoints = checkpoints
        self.durability = durability
        self.graph: Any = None
        self._saver_cm: Any = None
        self.count = 0

    async def open(self) -> None:
        saver = None
        if self.checkpoints:
            self._saver_cm = AsyncSqliteSaver.from_conn_string(str(self.folder / "lg.db"))
            saver = await self._saver_cm.__aenter__()
        self.graph = self.builder.compile(checkpointer=saver)

    async def run(self, steps: int) -> int:
        self.count += 1
        config = {"recursion_limit": steps + 10, "configurable": {"thread_id": f"t{self.count}"}}
        out = await self.graph.ainvoke(
            {"n": 0, "limit": steps},
            config,
            durability=self.durability if self.checkpoints else None,
        )
        return out["n"]

    async def close(self) -> None:
        if self._saver_cm is not None:
            await self._saver_cm.__aexit__(None, None, None)


class LangGraphSyncRunner:
    """LangGraph's synchronous API with the synchronous SqliteSaver (often its fastest path)."""

    name = "LangGraph (sync API)"

    def __init__(self, folder: Path, sleep_s: float, checkpoints: bool, durability: str) -> None:
        self.conn = (
            sqlite3.connect(folder / "lg-sync.db", check_same_thread=False) if checkpoints else None
        )
        saver = SqliteSaver(self.conn) if self.conn else None
        self.graph = langgraph_builder(0.0, asynchronous=False).compile(checkpointer=saver)
        self.durability = durability if checkpoints else None
        self.count = 0

    async def open(self) -> None:
        return None

    async def run(self, steps: int) -> int:
        # On a thread: the sync API is meant to be called where no event loop is running.
        return await asyncio.to_thread(self._run, steps)

    def _run(self, steps: int) -> int:
        self.count += 1
        config = {"recursion_limit": steps + 10, "configurable": {"thread_id": f"s{self.count}"}}
        return self.graph.invoke({"n": 0, "limit": steps}, config, durability=self.durability)["n"]

    async def close(self) -> None:
        if self.conn:
            self.conn.close()


# -- measuring -----------------------------------------------------------------------------------


async def per_step_us(factory: Callable[[], Any], steps: int, repeats: int) -> float:
    runner = factory()
    if hasattr(runner, "open"):
        await runner.open()
    try:
        assert await runner.run(20) == 20  # warm up
        samples = []
        for _ in range(repeats):
            gc.collect()
            started = time.perf_counter()
            done = await runner.run(steps)
            samples.append((time.perf_counter() - started) / done * 1e6)
            assert done == steps
        return statistics.median(samples)
    finally:
        await runner.close()


async def concurrent_wall_s(
    factory: Callable[[], Any], runs: int, steps: int, repeats: int
) -> float:
    """Median wall time of ``runs`` concurrent runs, over ``repeats`` fresh runners."""
    walls = []
    for _ in range(repeats):
        runner = factory()
        if hasattr(runner, "open"):
            await runner.open()
        try:
            await runner.run(steps)  # warm up
            gc.collect()
            started = time.perf_counter()
            results = await asyncio.gather(*(runner.run(steps) for _ in range(runs)))
            walls.append(time.perf_counter() - started)
            assert all(r == steps for r in results)
        finally:
            await runner.close()
    return statistics.median(walls)


RUNNERS = {
    "trinity": TrinityRunner,
    "langgraph": LangGraphRunner,
    "langgraph-sync": LangGraphSyncRunner,
}
MODES = [
    ("no checkpointer", False, "async"),
    ("SQLite, durability=sync", True, "sync"),
    ("SQLite, durability=async", True, "async"),
]


async def measure(cell: dict[str, Any]) -> float:
    """One table cell, measured in this (fresh) process."""
    folder = Path(tempfile.mkdtemp(prefix="trinity-bench-"))
    cls = RUNNERS[cell["runner"]]

    def build() -> Any:
        return cls(
            Path(tempfile.mkdtemp(dir=folder)),
            cell["sleep_s"],
            cell["checkpoints"],
            cell["durability"],
        )

    try:
        if cell["kind"] == "per_step":
            return await per_step_us(build, cell["steps"], cell["repeats"])
        return await concurrent_wall_s(build, cell["runs"], 10, cell["repeats"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_cell(**cell: Any) -> float:
    """Each cell in its own process, so no measurement inherits another's heap or GC state."""
    done = subprocess.run(
        [sys.executable, __file__, "--cell", json.dumps(cell)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"cell {cell} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(asyncio.run(measure(json.loads(args.cell))))
        return
    steps = 200 if args.quick else 1000
    repeats = 3 if args.quick else 5
    lg_repeats = 1 if args.quick else 3  # LangGraph's 1,000-run case takes 10-30 s a time
    fan = [1, 10, 100] if args.quick else [1, 100, 1000]

    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, SQLite {sqlite3.sqlite_version}"
    )
    print(f"LangGraph: {LANGGRAPH or 'not installed (pip install -e .[bench])'}")
    print("SQLite in WAL mode with synchronous=FULL; each cell measured in a fresh process")

    rows = []
    for label, checkpoints, durability in MODES:
        common = {
            "kind": "per_step",
            "sleep_s": 0.0,
            "checkpoints": checkpoints,
            "durability": durability,
            "steps": steps,
            "repeats": repeats,
        }
        ours = run_cell(runner="trinity", **common)
        row = [label, f"{ours:.1f}"]
        if LANGGRAPH:
            theirs = run_cell(runner="langgraph", **common)
            sync_api = run_cell(runner="langgraph-sync", **common)
            row += [f"{theirs:.1f}", f"{sync_api:.1f}", f"{min(theirs, sync_api) / ours:.1f}x"]
        rows.append(row)
    header = ["per-step cost, µs (median)", "Trinity"]
    if LANGGRAPH:
        header += ["LangGraph ainvoke", "LangGraph invoke", "LangGraph best / Trinity"]
    print(table(f"Part 1: {steps}-step run of a 5-node cycle, trivial nodes", header, rows))

    rows = []
    ideal = 10 * 0.010
    for runs in fan:
        for label, checkpoints, durability in MODES:
            common = {
                "kind": "concurrent",
                "sleep_s": 0.010,
                "checkpoints": checkpoints,
                "durability": durability,
                "runs": runs,
            }
            ours = run_cell(runner="trinity", repeats=repeats, **common)
            row = [str(runs), label, f"{ours:.3f}", f"{ours / ideal:.2f}x"]
            if LANGGRAPH:
                lg = lg_repeats if runs >= 1000 else repeats
                theirs = run_cell(runner="langgraph", repeats=lg, **common)
                row += [f"{theirs:.3f}", f"{theirs / ideal:.2f}x"]
            rows.append(row)
    header = ["runs", "mode", "Trinity wall s", "x ideal"]
    if LANGGRAPH:
        header += ["LangGraph wall s", "x ideal"]
    title = "Part 2: concurrent runs of 10 steps, each node awaits 10 ms (ideal 0.100 s)"
    print(table(title, header, rows))


if __name__ == "__main__":
    main()
