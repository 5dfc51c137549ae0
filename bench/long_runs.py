"""Long runs: how the cost of a run grows with its length, through the full runtime.

    python bench/long_runs.py                          # sizes 50, 200, 800, 3200
    python bench/long_runs.py --quick                  # sizes 50, 200
    python bench/long_runs.py --sizes 50,200,800 --langgraph-sizes 50,200,800,3200 --timeout-s 300

Part 1 — Trinity. A plan file of N steps, each an ``fs.write`` of a small distinct file with a
``file_exists`` check, runs offline (no model) through ``Runtime.prepare`` + ``Runtime.start``,
with a fresh SQLite database in a temp folder (created before the clock starts: making a new
database file is not part of a run), the default durability and ``max_steps = 5*N + 100``. The
run's state grows with it: every step adds its attempt, result and verdict. Measured after
the imports: the wall time of prepare + start; the tool time (the sum of every attempt's
``result.duration_s`` in the final state); the runtime's overhead per plan step, (wall - tool
time) / N; and the database size after ``Runtime.close()`` (the .db file plus any -wal file).

The same plan with ``append: true`` (every step appends its line to one ledger, with a
``file_exists`` check) is measured too: such a call cannot be repeated, so the run waits before
each one until its in-flight mark is on disk (one fsync per step), where a plain ``fs.write``
(idempotent) needs no wait.

Part 2 — LangGraph beside it: a ``StateGraph`` with one node per plan step, in a chain, whose
state is a list that every node appends one record to (id, tool, args, result text) after the
same file write; the synchronous API with ``SqliteSaver`` (langgraph.checkpoint.sqlite), its
default durability, ``recursion_limit = N + 10``. Its wall time includes building and
compiling the graph, as Trinity's includes loading the plan.

Part 3 — start-up: ``trinity --help`` and ``trinity run examples/hello.yaml`` as whole
processes, each run with a fresh workspace and database; median, min and max of 10.

Every cell runs in a fresh Python process (median of ``--repeats`` such processes), with the
TRINITY_* environment variables removed and a temp folder as its working directory, so no
trinity.toml or setting of the caller's leaks in. A cell that takes longer than ``--timeout-s``
is killed and reported as timed out (the whole process, imports included), and the larger sizes
of that engine are then not run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import operator
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypedDict

from tables import table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRINITY = Path(sys.executable).with_name("trinity")
TARGETS = {"ratio": 1.3, "db_bytes_per_step": 4096, "overhead_ms": 1.0}
ENV = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
STARTUP_TARGETS_S = {"trinity --help": 0.25, "trinity run examples/hello.yaml": 0.6}


def plan_yaml(n: int, append: bool = False) -> str:
    lines = [f"task: Write {n} small files, one per step", "steps:"]
    for i in range(n):
        name = "ledger.txt" if append else f"f{i:05d}.txt"
        extra = ", append: true" if append else ""
        lines += [
            f"  - id: s{i:05d}",
            "    tool: fs.write",
            f'    args: {{path: {name}, content: "file {i}\\n"{extra}}}',
            "    checks:",
            f"      - file_exists: {name}",
        ]
    return "\n".join(lines) + "\n"


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


# -- the cells (each in a fresh process) ---------------------------------------------------------


async def trinity_cell(
    n: int, folder: Path, deadline_s: float, append: bool = False
) -> dict[str, Any]:
    from trinity.config import Settings
    from trinity.limits import RunLimits
    from trinity.runtime import Runtime

    plan, db, ws = folder / "plan.yaml", folder / "trinity.db", folder / "ws"
    plan.write_text(plan_yaml(n, append), encoding="utf-8")
    runtime = Runtime(Settings(database_url=str(db), workspace=ws))
    _ = runtime.store  # the database exists before the run, as in any installation
    started = time.perf_counter()
    request = runtime.prepare(
        str(plan), workspace=ws, limits=RunLimits(max_steps=5 * n + 100, timeout_s=deadline_s)
    )
    state = await runtime.start(request)
    wall = time.perf_counter() - started
    runtime.close()
    steps = state.plan.steps if state.plan else []
    attempts = [a for step in steps for a in step.attempts]
    tool_s = sum(a.result.duration_s for a in attempts if a.result)
    done = sum(step.status == "succeeded" for step in steps)
    if state.stop_reason != "completed" or done != n:
        raise SystemExit(f"run ended {state.stop_reason} ({state.stop_detail}), {done}/{n} steps")
    return {
        "wall_s": wall,
        "tool_s": tool_s,
        "graph_steps": state.step,
        "attempts": len(attempts),
        "db_bytes": db_bytes(db),
    }


class LGState(TypedDict):
    records: Annotated[list[dict[str, Any]], operator.add]


def langgraph_cell(n: int, folder: Path) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    db, ws = folder / "lg.db", folder / "ws"
    ws.mkdir()

    def node(i: int) -> Any:
        def write(state: LGState) -> dict[str, list[dict[str, Any]]]:
            args = {"path": f"f{i:05d}.txt", "content": f"file {i}\n"}
            with (ws / args["path"]).open("w", encoding="utf-8") as handle:
                handle.write(args["content"])
            result = f"wrote {len(args['content'])} characters to {args['path']}"
            return {
                "records": [{"id": f"s{i:05d}", "tool": "fs.write", "args": args, "result": result}]
            }

        return write

    conn = sqlite3.connect(db, check_same_thread=False)
    started = time.perf_counter()
    builder = StateGraph(LGState)
    for i in range(n):
        builder.add_node(f"s{i:05d}", node(i))
        builder.add_edge(START if i == 0 else f"s{i - 1:05d}", f"s{i:05d}")
    builder.add_edge(f"s{n - 1:05d}", END)
    graph = builder.compile(checkpointer=SqliteSaver(conn))
    compiled = time.perf_counter()
    config: Any = {"recursion_limit": n + 10, "configurable": {"thread_id": "long"}}
    out = graph.invoke({"records": []}, config)
    wall = time.perf_counter() - started
    conn.close()
    if len(out["records"]) != n:
        raise SystemExit(f"LangGraph run ended with {len(out['records'])}/{n} records")
    return {"wall_s": wall, "compile_s": compiled - started, "db_bytes": db_bytes(db)}


def run_cell(cell: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
    """One cell in a fresh process, in a temp folder of its own; ``None`` if it timed out."""
    folder = Path(tempfile.mkdtemp(prefix="trinity-long-"))
    cell = {**cell, "folder": str(folder), "deadline_s": max(600.0, 10 * timeout_s)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--cell", json.dumps(cell)]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        argv, cwd=folder, env=ENV, stdout=pipe, stderr=pipe, text=True, start_new_session=True
    )  # its own group, all killed on a timeout
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"cell {cell} failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def measure(engine: str, sizes: list[int], args: argparse.Namespace) -> dict[int, Any]:
    """Per size: the median cell of ``--repeats`` processes; "timed out"; or "not run"."""
    results: dict[int, Any] = {}
    for n in sizes:
        if any(v == "timed out" for v in results.values()):
            results[n] = "not run"
            continue
        cells = []
        for _ in range(args.repeats):
            cell = run_cell({"engine": engine, "n": n}, args.timeout_s)
            if cell is None:
                break
            cells.append(cell)
        if len(cells) < args.repeats:
            results[n] = "timed out"
        else:
            results[n] = {k: statistics.median(c[k] for c in cells) for k in cells[0]}
            results[n]["ms_per_step"] = results[n]["wall_s"] / n * 1e3
            results[n]["db_bytes_per_step"] = results[n]["db_bytes"] / n
            if "tool_s" in results[n]:
                results[n]["overhead_ms"] = (results[n]["wall_s"] - results[n]["tool_s"]) / n * 1e3
        r = results[n]
        brief = r if isinstance(r, str) else f"{r['wall_s']:.2f} s, {r['db_bytes'] / 1e6:.1f} MB"
        print(f"  {engine} {n}: {brief}", file=sys.stderr, flush=True)
    return results


def startup(runs: int) -> dict[str, dict[str, float]]:
    hello = ROOT / "examples" / "hello.yaml"
    out: dict[str, dict[str, float]] = {}
    for label in STARTUP_TARGETS_S:
        walls = []
        for _ in range(runs):
            folder = Path(tempfile.mkdtemp(prefix="trinity-start-"))
            argv = [str(TRINITY), "--help"]
            if label != "trinity --help":
                argv = [str(TRINITY), "run", str(hello), "-w", str(folder / "ws")]
                argv += ["--db", str(folder / "t.db")]
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=folder, env=ENV, capture_output=True, check=False)
            walls.append(time.perf_counter() - started)
            shutil.rmtree(folder, ignore_errors=True)
            if done.returncode != 0:
                raise SystemExit(f"{argv} exited {done.returncode}:\n{done.stderr.decode()}")
        median = statistics.median(walls)
        out[label] = {"median_s": median, "min_s": min(walls), "max_s": max(walls), "runs": runs}
    return out


# -- the report ----------------------------------------------------------------------------------


def cells(r: Any, *cols: tuple[str, str]) -> list[str]:
    """The formatted columns of one result: "—" if not measured, the reason if not completed."""
    if r is None or isinstance(r, str):
        return [r or "—"] * len(cols)
    return [format(r[key], spec) for key, spec in cols]


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(
    trinity: dict[int, Any], appends: dict[int, Any], lg: dict[int, Any], starts: dict[str, Any]
) -> None:
    cols = [("wall_s", ".2f"), ("ms_per_step", ".2f"), ("tool_s", ".3f"), ("overhead_ms", ".3f")]
    cols += [("graph_steps", ".0f"), ("db_bytes", ",.0f"), ("db_bytes_per_step", ",.0f")]
    header = ["steps", "wall s", "ms/step", "tool s", "overhead ms/step", "graph steps"]
    for title, results in (
        ("Trinity: a plan of N fs.write steps, full runtime, SQLite", trinity),
        ("Trinity: N fs.write appends (not repeatable: a durable mark before each)", appends),
    ):
        if results:
            rows = [[str(n), *cells(r, *cols)] for n, r in results.items()]
            print(table(title, [*header, "DB bytes", "DB bytes/step"], rows))

    pair = (("ms_per_step", ".2f"), ("db_bytes_per_step", ",.0f"))
    rows = [
        [str(n), *cells(trinity.get(n), *pair), *cells(lg.get(n), *pair)]
        for n in sorted(set(trinity) | set(lg))
    ]
    header = ["steps", "Trinity ms/step", "Trinity DB bytes/step", "LangGraph ms/step"]
    title = "Trinity beside LangGraph (SqliteSaver), state growing with the run"
    print(table(title, [*header, "LangGraph DB bytes/step"], rows))

    done = {n: r for n, r in trinity.items() if isinstance(r, dict)}
    failed = "; ".join(f"{n} steps {r}" for n, r in trinity.items() if isinstance(r, str))
    small, large = min(trinity), max(trinity)
    print("\nTargets (Trinity):\n")
    if large in done and small in done:
        ratio = done[large]["ms_per_step"] / done[small]["ms_per_step"]
        ok = ratio <= TARGETS["ratio"]
        print(f"- ms/step at {large} / at {small}: {ratio:.2f}x (target ≤ 1.3x): {verdict(ok)}")
    else:
        print(f"- ms/step at {large} / at {small} (target ≤ 1.3x): {verdict(False)} ({failed})")
    if done:
        worst_db = max(r["db_bytes_per_step"] for r in done.values())
        ok = worst_db <= TARGETS["db_bytes_per_step"] and not failed
        print(f"- DB bytes per plan step, worst size: {worst_db:,.0f} (target ≤ 4,096): ", end="")
        print(verdict(ok) + (f" ({failed})" if failed else ""))
        worst_oh = max(r["overhead_ms"] for r in done.values())
        ok = worst_oh < TARGETS["overhead_ms"] and not failed
        print(
            f"- runtime overhead per plan step, worst size: {worst_oh:.3f} ms (target < 1 ms): ",
            end="",
        )
        print(verdict(ok) + (f" ({failed})" if failed else ""))

    cols = [("median_s", ".3f"), ("min_s", ".3f"), ("max_s", ".3f")]
    rows = [
        [
            label,
            *cells(s, *cols),
            f"{STARTUP_TARGETS_S[label]:.2f}",
            verdict(s["median_s"] <= STARTUP_TARGETS_S[label]),
        ]
        for label, s in starts.items()
    ]
    if rows:
        header = ["command", "median s", "min s", "max s", "target s", "target"]
        runs = int(next(iter(starts.values()))["runs"])
        print(table(f"Start-up: whole processes, {runs} runs each", header, rows))


def sizes_arg(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part.strip()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=sizes_arg, help="plan steps, e.g. 50,200 (default: all)")
    parser.add_argument("--langgraph-sizes", type=sizes_arg, help="default: the --sizes")
    parser.add_argument("--quick", action="store_true", help="sizes 50,200")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per cell (default 900)")
    parser.add_argument("--repeats", type=int, default=1, help="processes per cell (median)")
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument("--no-langgraph", action="store_true")
    parser.add_argument("--no-appends", action="store_true", help="skip the append variant")
    parser.add_argument("--json", type=Path, help="also write the raw numbers to this file")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        cell = json.loads(args.cell)
        folder = Path(cell["folder"])
        if cell["engine"] in ("trinity", "trinity-append"):
            append = cell["engine"] == "trinity-append"
            ran = asyncio.run(trinity_cell(cell["n"], folder, cell["deadline_s"], append))
            print(json.dumps(ran))
        else:
            print(json.dumps(langgraph_cell(cell["n"], folder)))
        return
    sizes = args.sizes or ([50, 200] if args.quick else [50, 200, 800, 3200])
    lg_sizes = [] if args.no_langgraph else (args.langgraph_sizes or sizes)
    try:
        langgraph = metadata.version("langgraph")
    except metadata.PackageNotFoundError:
        langgraph, lg_sizes = None, []
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, SQLite "
        f"{sqlite3.sqlite_version}, commit {commit or '?'}, LangGraph {langgraph or 'absent'}"
    )
    spec = importlib.util.find_spec("trinity")  # PYTHONPATH may point at another checkout
    source = Path(spec.origin).parent.parent if spec and spec.origin else "?"
    print(f"trinity imported from {source} (commit above is that of {ROOT})")
    print(
        f"Sizes {sizes} (LangGraph {lg_sizes}), timeout {args.timeout_s:.0f} s per cell, "
        f"{args.repeats} process(es) per cell"
    )

    trinity = measure("trinity", sizes, args)
    appends = {} if args.no_appends else measure("trinity-append", sizes, args)
    lg = measure("langgraph", lg_sizes, args) if lg_sizes else {}
    starts = startup(args.startup_runs) if args.startup_runs else {}
    report(trinity, appends, lg, starts)
    if args.json:
        raw = {
            "commit": commit,
            "trinity_source": str(source),
            "python": sys.version.split()[0],
            "langgraph": langgraph,
            "sqlite": sqlite3.sqlite_version,
            "timeout_s": args.timeout_s,
            "trinity": trinity,
            "trinity_appends": appends,
            "langgraph_runs": lg,
            "startup": starts,
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
