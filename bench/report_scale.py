"""`trinity report` on a growing store: 1,000, 10,000 and 100,000 runs (issue 12 asks for under a
second on 100,000).

The runs are written straight into a real Trinity database (migrated by `Store.open`), with the
columns a run's row gets when it ends and about three `run_tools` rows each, in realistic
proportions: most runs complete, some fail or time out, a few wait for a person; a few models;
tools with long-tailed durations. Measured: `Runtime.performance()` in process (best and median
of 5), and the `trinity report` command as a user runs it (a fresh process: start-up included),
overall and `--by model`.

    .venv/bin/python bench/report_scale.py                 # 1k, 10k, 100k runs; about a minute
    .venv/bin/python bench/report_scale.py --sizes 1000,10000
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tables import table

MODELS = ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4", "openai-compatible:http://h/v1#llama"]
TOOLS = ["fs.write", "fs.read", "shell.run", "python.run", "http.fetch", "time.convert_time"]
REASONS = ["completed"] * 80 + ["failed"] * 10 + ["timeout"] * 3 + ["token_budget"] * 2 + [
    "cancelled"
] * 3 + ["awaiting_approval"] * 2  # fmt: skip


def fill(db: Path, n: int, seed: int = 1) -> None:
    """``n`` ended runs (and a few waiting ones) in a fresh database at ``db``."""
    from trinity.store import Store

    Store.open(str(db)).close()  # created and migrated by Trinity itself
    rng = random.Random(seed)
    now = time.time()
    runs, tools = [], []
    for i in range(n):
        run_id = f"{i:012x}"
        reason = rng.choice(REASONS)
        status = {"completed": "succeeded", "cancelled": "cancelled"}.get(reason, "failed")
        if reason == "awaiting_approval":
            status = "awaiting_approval"
        created = now - rng.uniform(0, 30 * 86400)
        seconds = rng.lognormvariate(2.5, 1.0)
        llm_calls = rng.randint(1, 12)
        tool_rows = rng.sample(TOOLS, rng.randint(1, 4))
        tool_total = 0.0
        errors = 0
        for tool in tool_rows:
            calls = rng.randint(1, 20)
            failed = sum(rng.random() < 0.05 for _ in range(calls))
            spent = sum(rng.lognormvariate(-2, 1.2) for _ in range(calls))
            tool_total += spent
            errors += failed
            tools.append((run_id, tool, calls, failed, spent, spent / calls * 3, created))
        runs.append((
            run_id, f"task {i}", rng.choice(MODELS), "/ws", status, reason, created,
            created + seconds, rng.randint(10, 400), llm_calls * 900, llm_calls * 120,
            llm_calls, int(rng.random() < 0.02), seconds * 0.6, llm_calls * 0.001,
            sum(t[2] for t in tools[-len(tool_rows):]), errors, tool_total,
        ))  # fmt: skip
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO runs (id, task, model, workspace, status, stop_reason, created_at, "
            "finished_at, steps, input_tokens, output_tokens, llm_calls, llm_errors, llm_seconds, "
            "cost_usd, tool_calls, tool_errors, tool_seconds, spend_recorded) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            runs,
        )
        conn.executemany(
            "INSERT INTO run_tools (run_id, tool, calls, errors, seconds, max_seconds, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            tools,
        )


def in_process(db: Path, repeats: int = 5, by: str | None = None) -> list[float]:
    from trinity.config import Settings
    from trinity.runtime import Runtime

    runtime = Runtime(Settings(database_url=str(db)))
    took = []
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            made = runtime.performance(by=by)  # type: ignore[arg-type]
            took.append(time.perf_counter() - started)
        assert made.total.runs > 0
    finally:
        runtime.close()
    return took


def command(db: Path, *extra: str, repeats: int = 3) -> list[float]:
    took = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "trinity", "report", "--db", str(db), *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        took.append(time.perf_counter() - started)
        assert done.returncode == 0, done.stderr
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(size) for size in args.sizes.split(",")):
            db = Path(folder) / f"r{n}.db"
            started = time.perf_counter()
            fill(db, n)
            filled = time.perf_counter() - started
            inner = in_process(db)
            grouped = in_process(db, by="model")
            outer = command(db)
            outer_by = command(db, "--by", "model")
            rows.append([
                f"{n:,}",
                f"{db.stat().st_size / 1e6:.1f} MB",
                f"{min(inner) * 1000:.0f} / {statistics.median(inner) * 1000:.0f} ms",
                f"{min(grouped) * 1000:.0f} ms",
                f"{min(outer):.2f} s",
                f"{min(outer_by):.2f} s",
                f"{filled:.1f} s",
            ])  # fmt: skip
    print(
        table(
            "trinity report on a growing store (best of 5 in process, best of 3 as a command)",
            [
                "runs",
                "database",
                "performance() best / median",
                "--by model",
                "trinity report",
                "trinity report --by model",
                "(filling)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
