"""What traces and metrics cost per step: on (Prometheus metrics, and OpenTelemetry spans sent
over OTLP/HTTP to a local receiver in another process) against off, side by side.

    .venv/bin/python bench/observability.py             # about 4 minutes
    .venv/bin/python bench/observability.py --quick

Part 1: the engine's cycle of `bench/engine_overhead.py` (five trivial nodes, the run journal in
SQLite), about 1,000 steps per run: the sinks see every event a Runtime's bus carries.
Part 2: whole runs of `bench/long_runs.py`'s plan (N `fs.write` steps with a check each)
through the Runtime, at two sizes. Each cell runs in a fresh process; on and off alternate.
Two tables: wall time per step, and CPU time per step of the run's process and of the process
that exports the spans. The issue's target: under 10% per step. `trinity report` on 100,000 runs is
`bench/report_scale.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
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


class Clock:
    """Wall time and CPU time of the timed part: this process's (every thread), and the
    exporting child's (read from /proc at the start; at the end from the rusage of the child,
    after the shipper has closed it, so the spans of the timed part are all exported)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._child_start = 0.0

    def start(self) -> None:
        from trinity.observability import tracing

        if tracing._PROCESS is not None and not self._child_start:
            # the child has started (imported the SDK) when its CPU time stops growing
            pid = tracing._PROCESS.ship.pid  # type: ignore[attr-defined]
            seen = -1.0
            for _ in range(100):
                self._child_start = _cpu_of(pid)
                if self._child_start == seen:
                    break
                seen = self._child_start
                time.sleep(0.3)
        gc.collect()  # every cell starts its clock at the same point of the collector's cycle
        self._t = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall += time.perf_counter() - self._t[0]
        self.cpu += time.process_time() - self._t[1]

    def result(self, steps: int) -> dict[str, float]:
        from trinity.observability import tracing

        child = 0.0
        if tracing._PROCESS is not None:
            tracing._PROCESS.ship.close(timeout_s=120)  # type: ignore[attr-defined]
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            child = usage.ru_utime + usage.ru_stime - self._child_start
        return {"wall": self.wall / steps, "cpu": self.cpu / steps, "export": child / steps}


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def engine_cycle(on: bool, steps: int, repeats: int) -> dict[str, float]:
    """Per step: the five-node cycle with its journal (durability=async), ``repeats`` runs."""
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
    clock, counted = Clock(), 0
    for count in range(repeats + 1):
        state = BenchState(run_id=f"r{count}", limit=steps if count else 20)
        bus = EventBus(state.run_id)
        journal = RunJournal(store, state, bus, epoch=0)
        bus.subscribe(journal)
        for observer in observers:
            bus.subscribe(observer)
        engine = Engine(graph, journal=journal, events=bus.emit, durability="async")
        if count:  # the first is a warm-up
            clock.start()
        await engine.run(state)
        if count:
            clock.stop()
            counted += state.n
    store.close()
    return clock.result(counted)


async def whole_run(on: bool, n: int) -> dict[str, float]:
    """Per plan step: a whole Runtime run of ``n`` fs.write steps."""
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
    clock = Clock()
    clock.start()
    state = await runtime.start(request)
    clock.stop()
    runtime.close()
    assert state.stop_reason == "completed", state.stop_detail
    return clock.result(n)


def cell(kind: str, mode: str, port: int, **args: Any) -> dict[str, float]:
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
    measured: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


MODES = ("off", "on", "sampled")


def compare(kind: str, port: int, rounds: int, **args: Any) -> dict[str, dict[str, float]]:
    """Medians of off, on, and on with sampling, measured in turn ``rounds`` times."""
    seen: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):  # in turn, so drift hits all alike
        for mode in MODES:
            seen[mode].append(cell(kind, mode, port, **args))
    return {
        mode: {key: statistics.median(c[key] for c in cells) for key in cells[0]}
        for mode, cells in seen.items()
    }


def rows(label: str, measured: dict[str, dict[str, float]], unit: float, digits: int) -> list:
    """Wall time per step (off, on, sampled), and CPU per step of the run's process and of the
    exporting process (off, on)."""

    def shown(value: float, base: float | None = None) -> str:
        text = f"{value * unit:.{digits}f}"
        return f"{text} ({value / base - 1:+.0%})" if base else text

    off, on, sampled = (measured[mode] for mode in MODES)
    return [
        [label, shown(off["wall"]), shown(on["wall"], off["wall"]),
         shown(sampled["wall"], off["wall"])],
        [label, shown(off["cpu"]), shown(on["cpu"], off["cpu"]), shown(on["export"]),
         shown(sampled["cpu"], off["cpu"]), shown(sampled["export"])],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cell")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.cell:
        spec = json.loads(args.cell)
        if spec["kind"] == "engine":
            got = asyncio.run(engine_cycle(spec["on"], spec["steps"], spec["repeats"]))
        else:
            got = asyncio.run(whole_run(spec["on"], spec["n"]))
        print(json.dumps(got))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    walls, cpus = [], []
    try:
        time.sleep(0.5)
        rounds = 2 if args.quick else 5
        steps = 300 if args.quick else 1000
        wall, cpu = rows(
            f"engine cycle, {steps} steps (µs/step)",
            compare("engine", port, rounds, steps=steps, repeats=3),
            1e6,
            1,
        )
        walls.append(wall)
        cpus.append(cpu)
        for n in (50, 200) if args.quick else (200, 800):
            measured = compare("run", port, rounds, n=n)
            wall, cpu = rows(f"whole run, {n} fs.write steps (ms/step)", measured, 1e3, 3)
            walls.append(wall)
            cpus.append(cpu)
    finally:
        receiver.terminate()
    print(
        table(
            f"Wall time per step, traces + metrics on (OTLP/HTTP to a local receiver) against "
            f"off; median of {rounds}",
            ["workload", "off", "on", "on, 10% of runs sampled"],
            walls,
        )
    )
    print(
        table(
            "CPU time per step: the run's process (all its threads), and the exporting process",
            ["workload", "off", "on", "on: exporter", "sampled", "sampled: exporter"],
            cpus,
        )
    )


if __name__ == "__main__":
    main()
