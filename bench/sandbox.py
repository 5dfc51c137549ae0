"""What the sandbox costs: a sandboxed ``shell.run`` / ``python.run`` beside an unsandboxed one.

    python bench/sandbox.py               # 200 calls per cell
    python bench/sandbox.py --calls 50

The same ``BuiltinTools.call`` is made through each profile (``off``, ``strict``,
``workspace-write``) in alternating blocks of ten, so drift in this VM's speed hits every
profile alike. Commands: ``shell.run true`` (the cost of starting a sandbox, nearly all of it),
``shell.run`` of a small pipeline that writes a file in the workspace, and ``python.run pass``
(an interpreter start inside). Reported: median, p90 and mean wall time per call, and the
median added over ``off``. Target: under 20 ms added per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tables import table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from trinity.tools.builtin import BuiltinTools  # noqa: E402
from trinity.tools.sandbox import Sandbox, probe  # noqa: E402

CALLS = {
    "shell.run true": ("shell.run", {"command": "true"}),
    "shell.run pipeline + write": (
        "shell.run",
        {"command": "seq 1 200 | sort -r | head -5 > top.txt && wc -l < top.txt"},
    ),
    "python.run pass": ("python.run", {"code": "pass"}),
}
PROFILES = ("off", "strict", "workspace-write")
BLOCK = 10


async def measure(calls: int) -> dict[tuple[str, str], list[float]]:
    folder = Path(tempfile.mkdtemp())
    tools = {
        profile: BuiltinTools(folder / profile, sandbox=Sandbox(profile))  # type: ignore[arg-type]
        for profile in PROFILES
    }
    times: dict[tuple[str, str], list[float]] = {}
    for label, (name, args) in CALLS.items():
        for profile in PROFILES:  # one warm-up call each (page cache, the probe)
            result = await tools[profile].call(name, args)
            assert result.ok, (profile, label, result.error, result.output)
        done = 0
        while done < calls:
            for profile in PROFILES:
                for _ in range(BLOCK):
                    started = time.perf_counter()
                    result = await tools[profile].call(name, args)
                    times.setdefault((label, profile), []).append(time.perf_counter() - started)
                    if not result.ok:
                        raise SystemExit(f"{profile} {label}: {result.error}")
            done += BLOCK
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per cell")
    args = parser.parse_args()
    status = probe()
    if not status.available:
        raise SystemExit(f"no sandbox to measure: {status.reason}")
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"Linux {platform.release()}, {status.bwrap}"
    )
    times = asyncio.run(measure(args.calls))
    rows = []
    worst = 0.0
    for label in CALLS:
        base = statistics.median(times[(label, "off")])
        for profile in PROFILES:
            samples = sorted(times[(label, profile)])
            median = statistics.median(samples)
            p90 = samples[int(len(samples) * 0.9) - 1]
            added = median - base
            if profile != "off":
                worst = max(worst, added)
            rows.append(
                [
                    label,
                    profile,
                    str(len(samples)),
                    f"{median * 1000:.1f}",
                    f"{p90 * 1000:.1f}",
                    f"{statistics.fmean(samples) * 1000:.1f}",
                    "-" if profile == "off" else f"{added * 1000:+.1f}",
                ]
            )
    header = ["call", "sandbox", "calls", "median ms", "p90 ms", "mean ms", "added (median)"]
    print(table("Wall time per call", header, rows))
    verdict = "met" if worst < 0.020 else "MISSED"
    print(f"\nMost added by a sandbox: {worst * 1000:.1f} ms (target < 20 ms): **{verdict}**")


if __name__ == "__main__":
    main()
