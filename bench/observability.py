"""What traces and metrics cost per step: on (Prometheus metrics, and OpenTelemetry spans sent
over OTLP/HTTP to a local receiver in another process) against off, side by side.

    .venv/bin/python bench/observability.py             # about 2 minutes
    .venv/bin/python bench/observability.py --quick

Part 1: the engine's cycle of `bench/engine_overhead.py` (five trivial nodes, the run journal in
SQLite), about 1,000 steps per run: the sinks see every event a Runtime's bus carries.
Part 2: whole runs of `bench/long_runs.py`'s plan (N `fs.write` steps with a check each)
through the Runtime, at two sizes. Each cell runs in a fresh process; on and off alternate.
The issue's target: under 10% per step. `trinity report` on 100,000 runs is
`bench/report_scale.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tables import table

HERE = Path(__file__).resolve().parent
RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def traced_env(port: int) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }


def sinks(on: bool) -> list[Any]:
    if not on:
        return []
    from trinity.observability.metrics import RunMetrics
    from trinity.observability.tracing import process_tracer

    tracer = process_tracer()
    assert tracer is not None
    return [RunMetrics(), tracer]


async def engine_cycle(on: bool, steps: int, repeats: int) -> float:
    """Median µs per step of the five-node cycle with its journal (durability=async)."""
    sys.path.insert(0, str(HERE))
    from engine_overhead import BenchState, trinity_graph
    from trinity.engine import Engine
    from trinity.events import EventBus
    from trinity.store import Store
    from trinity.store.journal import RunJournal

    observers = sinks(on)
    time.sleep(1.5)  # the exporting child starts (once per process): steady state is measured
    store = Store(Path(tempfile.mkdtemp()) / "t.db")
    graph = trinity_graph(0.0)
    samples = []
    for count in range(repeats + 1):
        state = BenchState(run_id=f"r{count}", limit=steps if count else 20)
        bus = EventBus(state.run_id)
        journal = RunJournal(store, state, bus, epoch=0)
        bus.subscribe(journal)
        for observer in observers:
            bus.subscribe(observer)
        engine = Engine(graph, journal=journal, events=bus.emit, durability="async")
        started = time.perf_counter()
        await engine.run(state)
        if count:  # the first is a warm-up
            samples.append((time.perf_counter() - started) / state.n * 1e6)
    store.close()
    return statistics.median(samples)


async def whole_run(on: bool, n: int) -> float:
    """Milliseconds per plan step of a whole Runtime run of ``n`` fs.write steps."""
    sys.path.insert(0, str(HERE))
    from long_runs import plan_yaml
    from trinity.config import Settings
    from trinity.limits import RunLimits
    from trinity.runtime import Runtime

    folder = Path(tempfile.mkdtemp())
    plan = folder / "plan.yaml"
    plan.write_text(plan_yaml(n), encoding="utf-8")
    settings = Settings(database_url=str(folder / "t.db"), workspace=folder / "ws", sandbox="off")
    runtime = Runtime(settings)  # subscribes the tracer when OTEL_TRACES_EXPORTER says so
    if on:
        runtime.metrics()
    _ = runtime.store
    time.sleep(1.5)  # the exporting child starts (once per process): steady state is measured
    request = runtime.prepare(str(plan), limits=RunLimits(max_steps=5 * n + 100, timeout_s=600))
    started = time.perf_counter()
    state = await runtime.start(request)
    took = time.perf_counter() - started
    runtime.close()
    assert state.stop_reason == "completed", state.stop_detail
    return took / n * 1000


def cell(kind: str, mode: str, port: int, **args: Any) -> float:
    """One measurement in a fresh process: ``mode`` off, on, or on with 10% of runs traced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINITY_", "OTEL_"))}
    if mode != "off":
        env |= traced_env(port)
    if mode == "sampled":
        env |= {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    spec = json.dumps({"kind": kind, "on": mode != "off", **args})
    done = subprocess.run(
        [sys.executable, __file__, "--cell", spec], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"cell {spec} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def compare(kind: str, port: int, rounds: int, **args: Any) -> list[float]:
    """Medians of off, on, and on with sampling, measured in turn ``rounds`` times."""
    modes = ("off", "on", "sampled")
    seen: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):  # in turn, so drift hits all alike
        for mode in modes:
            seen[mode].append(cell(kind, mode, port, **args))
    return [statistics.median(seen[mode]) for mode in modes]


def row(label: str, values: list[float], digits: int) -> list[str]:
    off, on, sampled = values
    return [
        label,
        f"{off:.{digits}f}",
        f"{on:.{digits}f} ({on / off - 1:+.0%})",
        f"{sampled:.{digits}f} ({sampled / off - 1:+.0%})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cell")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.cell:
        spec = json.loads(args.cell)
        if spec["kind"] == "engine":
            print(asyncio.run(engine_cycle(spec["on"], spec["steps"], spec["repeats"])))
        else:
            print(asyncio.run(whole_run(spec["on"], spec["n"])))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        time.sleep(0.5)
        rounds = 2 if args.quick else 5
        rows = []
        steps = 300 if args.quick else 1000
        measured = compare("engine", port, rounds, steps=steps, repeats=3)
        rows.append(row(f"engine cycle, {steps} steps (µs/step)", measured, 1))
        for n in (50, 200) if args.quick else (200, 800):
            measured = compare("run", port, rounds, n=n)
            rows.append(row(f"whole run, {n} fs.write steps (ms/step)", measured, 2))
    finally:
        receiver.terminate()
    print(
        table(
            f"Traces + metrics on (OTLP/HTTP to a local receiver) against off; median of {rounds}",
            ["workload", "off", "on", "on, 10% of runs sampled"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
