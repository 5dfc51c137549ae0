"""Safety: how runs end when a tool, a server or the model hangs, and how fast loops are caught.

    .venv/bin/python bench/safety.py                     # 100 runs per hang scenario
    .venv/bin/python bench/safety.py --quick             # 5 runs per hang scenario
    .venv/bin/python bench/safety.py --only busy-loop,langgraph --runs 20 --deadline 0.3

Part 1 — hang scenarios. Each runs ``--runs`` times in a row through the public API (one
``Runtime`` re-used, in one worker process per scenario) with a run deadline of ``--deadline``
seconds. Measured: wall time of ``Runtime.start()`` minus the deadline, the stop reasons, and
what is left behind afterwards (descendant processes, asyncio tasks, threads, CPU use while
idle). The worker is made a child subreaper, so processes orphaned by a run stay its
descendants and are counted. Trinity's workers run under ``trinity.engine.aio.run_main``, as the
CLI does (``--asyncio-run``: plain ``asyncio.run``, which waits for abandoned tasks at exit).

Part 2 — loop patterns with the scripted model (``--loop-runs`` runs each, 20 by default, to
show they are deterministic): the stop reason, graph steps, and the repetitions at which the
first progress finding was made (target: 3 or fewer).

Part 3 — the hung tool, the cancel-swallowing tool and the busy loop on LangGraph with its own
timeouts (``step_timeout`` on the compiled graph, and a node ``timeout=``), one run each, beside
Trinity's numbers from Part 1.

Every worker runs under a hard timeout enforced by this (parent) process: a worker that sends
nothing for ``deadline + 5 s`` (or does not exit 3 s after its last result) is reported as such;
its CPU use is sampled, it is asked where it is stuck (SIGUSR2: its asyncio tasks; SIGUSR1:
faulthandler's thread stacks), and its process group is killed, together with any process it
left behind (this process is a subreaper too). Linux only (reads /proc).
LangGraph is optional (``pip install -e .[bench]``); without it Part 3 is skipped.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import ctypes
import faulthandler
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

from tables import table

ROOT = Path(__file__).resolve().parent.parent
HANG_SERVER = ROOT / "tests" / "mcp_servers" / "hang_server.py"
PREFIX = "@@safety "
"""Marks the worker's result lines on its stdout (anything else there is ignored)."""
SLACK_S = 5.0
"""A worker that sends nothing for deadline + SLACK_S seconds did not end."""
STARTUP_S = 60.0
"""Time a worker may take to import and get ready."""
EXIT_GRACE_S = 3.0
"""Time a worker may take to exit after its last result."""
TARGET_MS = 500.0
LOOP_REPLANS = 10
"""max_replans for the loop scenarios: high, so that only the loop detector can stop them."""

try:
    LANGGRAPH: str | None = metadata.version("langgraph")
except metadata.PackageNotFoundError:  # the bench extra is not installed
    LANGGRAPH = None


# -- /proc -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    comm: str
    cpu_ticks: int


def read_proc(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return Proc(pid, int(rest[1]), int(rest[2]), rest[0], comm, int(rest[11]) + int(rest[12]))


def all_procs() -> list[Proc]:
    found = (read_proc(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [proc for proc in found if proc is not None]


def descendants(pid: int) -> list[Proc]:
    procs = all_procs()
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def cpu_percent(pid: int, window_s: float = 0.5) -> float | None:
    """CPU use of a live process (all its threads) over a short window, in % of one core."""
    before = read_proc(pid)
    time.sleep(window_s)
    after = read_proc(pid)
    if before is None or after is None:
        return None
    return (after.cpu_ticks - before.cpu_ticks) / os.sysconf("SC_CLK_TCK") / window_s * 100


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(record) + "\n")
    sys.stdout.flush()


# -- worker: where it is stuck -------------------------------------------------------------------


def short_path(path: str) -> str:
    for marker in ("site-packages/", f"python{sys.version_info[0]}.{sys.version_info[1]}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(ROOT))
    return path


def await_chain(coro: Any) -> list[str]:
    """Where a coroutine is suspended: its frames from the outermost to the innermost await."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        chain.append(
            f"{frame.f_code.co_name} ({short_path(frame.f_code.co_filename)}:{frame.f_lineno})"
        )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


async def install_dumps() -> None:
    """SIGUSR1: every thread's stack to stderr (works while the loop is blocked); SIGUSR2: where
    the asyncio tasks are suspended, as a record on stdout (needs a turning loop)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    main = asyncio.current_task()

    def report() -> None:
        pending = [task for task in asyncio.all_tasks() if task is not main and not task.done()]
        emit(
            {
                "event": "stuck",
                "main": [] if main is None or main.done() else await_chain(main.get_coro()),
                "others": [await_chain(task.get_coro()) for task in pending],
            }
        )

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, report)


# -- worker: what is left behind -----------------------------------------------------------------


def leftovers_now() -> dict[str, int]:
    procs = descendants(os.getpid())
    zombies = sum(1 for proc in procs if proc.state == "Z")
    return {"procs": len(procs) - zombies, "zombies": zombies}


async def aftermath(settle_s: float = 1.0) -> dict[str, Any]:
    """After the last run: descendant processes (at once and after ``settle_s``), asyncio tasks
    still pending, threads alive, and CPU use while nothing should be running."""
    at_end, cpu, wall = leftovers_now(), _cpu_s(), time.perf_counter()
    await asyncio.sleep(settle_s)
    current = asyncio.current_task()
    tasks = sum(1 for task in asyncio.all_tasks() if task is not current)
    return settled(at_end, cpu, wall, tasks)


def aftermath_sync(settle_s: float = 1.0) -> dict[str, Any]:
    """:func:`aftermath` where no event loop runs."""
    at_end, cpu, wall = leftovers_now(), _cpu_s(), time.perf_counter()
    time.sleep(settle_s)
    return settled(at_end, cpu, wall, 0)


def settled(at_end: dict[str, int], cpu: float, wall: float, tasks: int) -> dict[str, Any]:
    later = leftovers_now()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    return {
        "procs_at_end": at_end["procs"],
        "procs": later["procs"],
        "zombies": later["zombies"],
        "tasks": tasks,
        "threads": others,
        "idle_cpu": (_cpu_s() - cpu) / (time.perf_counter() - wall) * 100,
    }


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


# -- Trinity: tools that misbehave ----------------------------------------------------------------


class OneTool(abc.ABC):
    """An in-process ToolProvider with one tool, ``bench.wait``; subclasses say how it hangs."""

    name = "bench.wait"

    async def list_tools(self) -> list[Any]:
        from trinity.tools.base import ToolSpec

        return [ToolSpec(self.name, "waits", {"type": "object", "properties": {}})]

    @abc.abstractmethod
    async def call(self, name: str, args: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        """How the tool hangs."""

    async def aclose(self) -> None:
        return None


class HungTool(OneTool):
    async def call(self, name: str, args: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        await asyncio.Event().wait()


class SwallowingTool(OneTool):
    """A badly written tool: it catches the cancellation and goes on waiting."""

    async def call(self, name: str, args: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue


class BusyTool(OneTool):
    """CPU-bound pure Python that never awaits: the event loop is blocked."""

    async def call(self, name: str, args: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        n = 0
        while True:
            n += 1


def write_plan(folder: Path, tool: str, args: dict[str, Any]) -> str:
    path = folder / "plan.json"
    step = {"id": "call", "title": f"Call {tool}", "tool": tool, "args": args}
    path.write_text(json.dumps({"task": f"call {tool} once", "steps": [step]}))
    return str(path)


def settings(folder: Path, **extra: Any) -> Any:
    from trinity.config import Settings

    return Settings(database_url=str(folder / "trinity.db"), workspace=folder / "ws", **extra)


def in_process_tool(tool: OneTool) -> Callable[[Path], tuple[Any, str]]:
    def build(folder: Path) -> tuple[Any, str]:
        from trinity.runtime import Runtime

        return Runtime(settings(folder), tools=tool), write_plan(folder, tool.name, {})

    return build


def shell_ignoring_term(folder: Path) -> tuple[Any, str]:
    from trinity.runtime import Runtime

    target = write_plan(folder, "shell.run", {"command": "trap '' TERM; sleep 1000"})
    return Runtime(settings(folder, tool_timeout_s=1000)), target


def silent_mcp_server(folder: Path) -> tuple[Any, str]:
    from trinity.runtime import Runtime

    server = {
        "command": sys.executable,
        "args": [str(HANG_SERVER), "--handshake"],
        "timeout_s": 1000,
    }
    runtime = Runtime(settings(folder, mcp_servers={"hang": server}))
    return runtime, write_plan(folder, "hang.wait", {})


def hung_llm(folder: Path) -> tuple[Any, str]:
    from trinity.llm.scripted import ScriptedProvider
    from trinity.runtime import Runtime

    llm = ScriptedProvider([{"delay_s": 1000, "text": "{}", "repeat": True}])
    return Runtime(settings(folder, llm_timeout_s=1000), llm=llm), "Write hello to a.txt"


@dataclass(frozen=True)
class HangScenario:
    title: str
    build: Callable[[Path], tuple[Any, str]]
    """Makes the Runtime and the target (a plan file or a task in words) in a folder."""


HANG: dict[str, HangScenario] = {
    "hung-tool": HangScenario("1. tool awaits forever", in_process_tool(HungTool())),
    "swallow-cancel": HangScenario(
        "2. tool swallows CancelledError", in_process_tool(SwallowingTool())
    ),
    "busy-loop": HangScenario("3. tool busy-loops (no await)", in_process_tool(BusyTool())),
    "shell-sigterm": HangScenario("4. shell child ignores SIGTERM", shell_ignoring_term),
    "mcp-silent": HangScenario("5. MCP server never answers", silent_mcp_server),
    "hung-llm": HangScenario("6. LLM never answers", hung_llm),
}


async def hang_worker(name: str, runs: int, deadline: float) -> None:
    from trinity.limits import RunLimits

    await install_dumps()
    become_subreaper()
    folder = Path(tempfile.mkdtemp())
    (folder / "ws").mkdir()
    os.chdir(folder)  # no trinity.toml from the caller's folder
    runtime, target = HANG[name].build(folder)
    emit({"event": "ready"})
    try:
        for index in range(runs):
            request = runtime.prepare(
                target, workspace=folder / "ws", limits=RunLimits(timeout_s=deadline)
            )
            started = time.perf_counter()
            try:
                state = await runtime.start(request)
                stop, detail = str(state.stop_reason), state.stop_detail
            except BaseException as exc:  # what start() let through is a result here
                stop, detail = f"raised {type(exc).__name__}", str(exc)
            over = time.perf_counter() - started - deadline
            emit({"event": "run", "index": index, "over_s": over, "stop": stop, "detail": detail})
        emit({"event": "done", **(await aftermath())})
    finally:
        runtime.close()
        shutil.rmtree(folder, ignore_errors=True)


# -- Trinity: loop patterns -----------------------------------------------------------------------

GREETING = "greeting.txt"


def write_step(step_id: str, content: str, check_text: str = "hello") -> dict[str, Any]:
    """Writes ``content`` and checks for ``check_text``: fails unless the content has it."""
    return {
        "id": step_id,
        "title": f"Write the greeting ({step_id})",
        "tool": "fs.write",
        "args": {"path": GREETING, "content": content},
        "checks": [{"file_contains": {"path": GREETING, "text": check_text}}],
    }


def plans_script(steps: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """A first plan and enough replans, each one step made by ``steps(n)``."""
    entries = []
    for n in range(LOOP_REPLANS + 3):
        purpose = "atlas.plan" if n == 0 else "atlas.replan"
        text = json.dumps({"rationale": f"attempt {n}", "steps": [steps(n)]})
        entries.append({"match": {"purpose": purpose}, "text": text})
    return entries


def same_plan() -> list[dict[str, Any]]:
    return plans_script(lambda n: write_step(f"w{n}", "helo world"))


def alternating_plans() -> list[dict[str, Any]]:
    return plans_script(lambda n: write_step(f"w{n}", ["helo world", "hallo world"][n % 2]))


def same_action() -> list[dict[str, Any]]:
    # the same call in every plan; only the check differs, so no two plans are identical
    return plans_script(lambda n: write_step(f"w{n}", "helo world", "hello" + "!" * n))


def same_error() -> list[dict[str, Any]]:
    def step(n: int) -> dict[str, Any]:
        command = "no-such-tool-for-bench" + " --again" * n
        return {"id": f"s{n}", "tool": "shell.run", "args": {"command": command}}

    return plans_script(lambda n: step(n) | {"checks": [{"exit_code": 0}]})


def garbage() -> list[dict[str, Any]]:
    return [{"text": "I'd rather chat about the weather.", "repeat": True}]


LOOPS: dict[str, tuple[str, Callable[[], list[dict[str, Any]]]]] = {
    "same-plan": ("same failing plan every time", same_plan),
    "alternating-plans": ("two failing plans take turns", alternating_plans),
    "same-action": ("same failing call, plans differ", same_action),
    "same-error": ("different calls, same error", same_error),
    "garbage": ("model emits garbage forever", garbage),
}


async def loop_worker(name: str, runs: int) -> None:
    from trinity.llm.scripted import ScriptedProvider
    from trinity.runtime import Runtime

    await install_dumps()
    emit({"event": "ready"})
    for index in range(runs):
        folder = Path(tempfile.mkdtemp())
        (folder / "ws").mkdir()
        os.chdir(folder)
        llm = ScriptedProvider(LOOPS[name][1]())
        runtime = Runtime(settings(folder), llm=llm)
        try:
            request = runtime.prepare("Write hello world to greeting.txt", max_replans=LOOP_REPLANS)
            state = await runtime.start(request)
        finally:
            runtime.close()
            os.chdir(ROOT)
            shutil.rmtree(folder, ignore_errors=True)
        findings = [[str(f.kind), f.repetitions, f.at_step] for f in state.progress_findings]
        emit(
            {
                "event": "run",
                "index": index,
                "stop": str(state.stop_reason),
                "detail": state.stop_detail,
                "steps": state.step,
                "tool_calls": state.counters.tool_calls,
                "replans": state.counters.replans,
                "llm_calls": len(llm.requests),
                "findings": findings,
            }
        )
    emit({"event": "done"})


# -- LangGraph -----------------------------------------------------------------------------------


class LGState(TypedDict):
    n: int


async def lg_hung(state: LGState) -> dict[str, int]:
    await HungTool().call("bench.wait", {})
    return {"n": 1}


async def lg_swallow(state: LGState) -> dict[str, int]:
    await SwallowingTool().call("bench.wait", {})
    return {"n": 1}


async def lg_busy_async(state: LGState) -> dict[str, int]:
    n = 0
    while True:
        n += 1


def lg_busy_sync(state: LGState) -> dict[str, int]:
    n = 0
    while True:
        n += 1


LG_NODES: dict[str, Callable[..., Any]] = {
    "hung-tool": lg_hung,
    "swallow-cancel": lg_swallow,
    "busy-loop": lg_busy_async,
    "busy-loop-sync": lg_busy_sync,
}
LG_MECHANISMS = {
    "step_timeout": "graph.step_timeout",
    "node_timeout": "add_node(timeout=)",
}
LG_CASES = [
    ("hung-tool", "async node, ainvoke"),
    ("swallow-cancel", "async node, ainvoke"),
    ("busy-loop", "async node, ainvoke"),
    ("busy-loop-sync", "sync node, invoke"),
]


def lg_graph(variant: str, mechanism: str, deadline: float) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(LGState)
    if mechanism == "node_timeout":
        builder.add_node("tool", LG_NODES[variant], timeout=deadline)
    else:
        builder.add_node("tool", LG_NODES[variant])
    builder.add_edge(START, "tool")
    builder.add_edge("tool", END)
    graph = builder.compile()
    if mechanism == "step_timeout":
        graph.step_timeout = deadline
    return graph


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def lg_worker(variant: str, mechanism: str, deadline: float) -> None:
    """An async node under ``ainvoke``."""
    await install_dumps()
    graph = lg_build(variant, mechanism, deadline)
    if graph is None:
        return
    started = time.perf_counter()
    try:
        ended = f"returned {await graph.ainvoke({'n': 0})!r}"
    except BaseException as exc:  # the timeout is the result here
        ended = describe(exc)
    over = time.perf_counter() - started - deadline
    emit({"event": "done", "ended": ended, "over_s": over, **(await aftermath())})


def lg_sync_worker(variant: str, mechanism: str, deadline: float) -> None:
    """A sync node under ``invoke``, called where no event loop runs (as the sync API expects)."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # no event loop to report on
    graph = lg_build(variant, mechanism, deadline)
    if graph is None:
        return
    started = time.perf_counter()
    try:
        ended = f"returned {graph.invoke({'n': 0})!r}"
    except BaseException as exc:
        ended = describe(exc)
    over = time.perf_counter() - started - deadline
    emit({"event": "done", "ended": ended, "over_s": over, **aftermath_sync()})


def lg_build(variant: str, mechanism: str, deadline: float) -> Any:
    try:
        graph = lg_graph(variant, mechanism, deadline)
    except Exception as exc:
        emit({"event": "done", "ended": f"refused at build: {describe(exc)}", "over_s": None})
        return None
    emit({"event": "ready"})
    return graph


# -- parent: workers under a hard timeout ---------------------------------------------------------


@dataclass
class Outcome:
    records: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    """The worker sent its last record."""
    exited: bool = False
    """... and then exited by itself."""
    problem: str = ""
    cpu_at_kill: float | None = None
    """% of a core the worker used just before it was killed."""
    strays: int = 0
    """Processes left once the worker was gone (killed here)."""
    stderr: str = ""
    where: str = ""
    """Where a worker that did not end (or exit) was stuck when it was killed."""

    @property
    def runs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == "run"]

    @property
    def done(self) -> dict[str, Any]:
        return next((r for r in self.records if r["event"] == "done"), {})


def run_worker(spec: dict[str, Any], *, each_s: float, total_s: float) -> Outcome:
    """Run ``--worker spec`` in a new session; stop waiting when it sends nothing for
    ``each_s`` (``STARTUP_S`` before it is ready) or after ``total_s``; kill what is left."""
    # The worker's temporary files go in a folder removed here, even if the worker is killed.
    scratch = tempfile.TemporaryDirectory(prefix="trinity-safety-", ignore_cleanup_errors=True)
    with scratch, tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec | {"scratch": scratch.name})],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        outcome = supervise(proc, each_s, total_s)
        errors.seek(0)
        outcome.stderr = errors.read().strip()
    if not outcome.where and outcome.cpu_at_kill is not None:
        outcome.where = thread_where(outcome.stderr)
    return outcome


def supervise(proc: subprocess.Popen[str], each_s: float, total_s: float) -> Outcome:
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    outcome = Outcome()
    give_up = time.monotonic() + total_s
    while True:
        wait = min(each_s if outcome.records else STARTUP_S, give_up - time.monotonic())
        try:
            line = lines.get(timeout=max(wait, 0.0))
        except queue.Empty:
            outcome.problem = f"no result for {wait:.1f} s"
            break
        if line is None:
            proc.wait()
            outcome.problem = f"worker exited with code {proc.returncode} before finishing"
            break
        if line.startswith(PREFIX):
            outcome.records.append(json.loads(line[len(PREFIX) :]))
            if outcome.records[-1]["event"] == "done":
                outcome.finished = True
                break
    if outcome.finished:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(EXIT_GRACE_S)
            outcome.exited = True
    if proc.poll() is None:
        outcome.cpu_at_kill = cpu_percent(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR2)
            os.kill(proc.pid, signal.SIGUSR1)
        outcome.where = tasks_where(lines)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    outcome.strays = kill_strays()
    return outcome


def tasks_where(lines: queue.Queue[str | None], wait_s: float = 0.5) -> str:
    """The worker's answer to SIGUSR2, if its event loop still turns."""
    give_up = time.monotonic() + wait_s
    while (left := give_up - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        if not line.startswith(PREFIX):
            continue
        record = json.loads(line[len(PREFIX) :])
        if record["event"] != "stuck":
            continue
        others = record["others"]
        if record["main"]:
            extra = f" (+{len(others)} other task(s))" if others else ""
            return "loop turns; main task awaits in " + " < ".join(record["main"][::-1][:2]) + extra
        first = " < ".join(others[0][::-1][:2]) if others else "-"
        return f"loop turns; main task done, {len(others)} task(s) still pending, e.g. in {first}"
    return ""


IDLE_FRAMES = {"select", "_run_once", "run_forever", "run_until_complete", "wait"}


def thread_where(stderr: str) -> str:
    """The main thread's innermost frames from a faulthandler dump, idle-loop frames left out."""
    blocks = stderr.split("(most recent call first):")[1:]
    main = next((b for b in blocks if "in <module>" in b), "")
    frames = []
    for line in main.splitlines():
        line = line.strip()
        if not line.startswith('File "'):
            continue
        path, rest = line[6:].split('", line ', 1)
        number, func = rest.split(" in ", 1)
        if func in IDLE_FRAMES and "python3" in path and "site-packages" not in path:
            continue
        frames.append(f"{func} ({short_path(path)}:{number})")
    return "main thread in " + " < ".join(frames[:2]) if frames else ""


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def kill_strays() -> int:
    """Kill and reap the processes re-parented to this (subreaper) process; count the live ones."""
    count = 0
    for _ in range(5):  # a killed stray's own children come to us next
        found = [proc for proc in all_procs() if proc.ppid == os.getpid()]
        if not found:
            break
        for proc in found:
            count += proc.state != "Z"
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, 0)
    return count


# -- parent: tables ------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def counts(values: list[str]) -> str:
    return ", ".join(f"{value} x{n}" for value, n in Counter(values).most_common())


def left_behind(outcome: Outcome) -> str:
    """What a worker left: processes, tasks, threads, CPU; or the CPU it burnt until killed."""
    done = outcome.done
    parts = []
    if outcome.finished:
        parts.append(f"procs {done['procs_at_end']}→{done['procs']} (+{done['zombies']} zombie)")
        threads = done["threads"]
        named = f" ({', '.join(threads)})" if threads else ""
        parts.append(f"tasks {done['tasks']}, threads {len(threads)}{named}")
        parts.append(f"idle CPU {done['idle_cpu']:.0f}%")
        if not outcome.exited:
            parts.append(f"no exit within {EXIT_GRACE_S:g} s")
    elif outcome.cpu_at_kill is not None:
        parts.append(f"CPU {outcome.cpu_at_kill:.0f}% when killed")
    if outcome.strays:
        parts.append(f"{outcome.strays} stray proc(s) killed")
    return "; ".join(parts)


def clip(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def notes(label: str, outcome: Outcome) -> list[str]:
    """Lines under a table for a worker that did not end, or did not exit."""
    lines = []
    killed = ", killed" if outcome.cpu_at_kill is not None else ""
    if not outcome.finished:
        lines.append(f"{label}: did not end ({outcome.problem}){killed}")
    elif not outcome.exited:
        lines.append(f"{label}: sent its results, did not exit within {EXIT_GRACE_S:g} s{killed}")
    if outcome.where:
        lines.append(f"{label}: when killed: {outcome.where}")
    elif not outcome.finished and outcome.stderr:  # it crashed: say why
        lines.append(f"{label}: worker stderr: {clip(outcome.stderr.splitlines()[-1], 150)}")
    return lines


def hang_row(name: str, outcome: Outcome, runs: int) -> list[str]:
    done = outcome.runs
    ended = [r for r in done if not r["stop"].startswith("raised")]
    overs = sorted(r["over_s"] * 1000 for r in ended)
    stops = counts([r["stop"] for r in done]) or "-"
    if not outcome.finished:
        stops = f"DID NOT END; {stops}"
    stats = ["-"] * 4
    if overs:
        stats = [f"{overs[0]:.0f}", f"{statistics.median(overs):.0f}"]
        stats += [f"{quantile(overs, 0.95):.0f}", f"{overs[-1]:.0f}"]
    met = outcome.finished and len(ended) == runs and overs[-1] < TARGET_MS
    verdict = "yes" if met else "NO"
    if len(ended) < len(done):
        verdict += f" ({len(done) - len(ended)} raised)"
    return [HANG[name].title, f"{len(done)}/{runs}", stops, *stats, verdict, left_behind(outcome)]


def loop_row(name: str, outcome: Outcome) -> list[str]:
    done = outcome.runs
    if not done:
        return [LOOPS[name][0], "0", f"DID NOT END ({outcome.problem})", *["-"] * 6]
    first = done[0]
    same = all({**r, "index": 0} == {**first, "index": 0} for r in done)
    finding = first["findings"][0] if first["findings"] else None
    return [
        LOOPS[name][0],
        f"{len(done)} ({'all identical' if same else 'VARY'})",
        first["stop"],
        str(first["steps"]),
        f"{first['tool_calls']} / {first['replans']} / {first['llm_calls']}",
        f"{finding[0]} x{finding[1]} at step {finding[2]}" if finding else "-",
        "yes" if finding and finding[1] <= 3 else ("n/a" if not finding else "NO"),
        ", ".join(f"{kind} x{reps}" for kind, reps, _ in first["findings"]) or "-",
    ]


def trinity_cell(outcome: Outcome | None) -> list[str]:
    if outcome is None:
        return ["(not run)", "-", "-"]
    overs = [r["over_s"] for r in outcome.runs]
    ends = counts([r["stop"] for r in outcome.runs]) or "-"
    if not outcome.finished:
        ends = "DID NOT END" + (f"; before: {ends}" if overs else "")
    after = f"median {statistics.median(overs):.3f} s, max {max(overs):.3f} s" if overs else "-"
    return [f"stop_reason {ends}", after, left_behind(outcome)]


def lg_cell(outcome: Outcome) -> list[str]:
    done = outcome.done
    if not outcome.finished:
        return ["DID NOT END", "-", left_behind(outcome)]
    over = f"{done['over_s']:.3f} s" if done.get("over_s") is not None else "-"
    return [clip(done["ended"]), over, left_behind(outcome) if "procs" in done else "-"]


LEGEND = """
left behind: procs = live descendant processes of the worker right after the last run → 1 s
later; zombie = dead ones nobody reaped (the worker is a subreaper, so orphans that die come to
it instead of init); tasks = asyncio tasks still pending; threads = threads besides the main
one; idle CPU = the worker's CPU use during that idle second."""


# -- parent: the three parts ----------------------------------------------------------------------


def part_hangs(
    names: list[str], runs: int, deadline: float, asyncio_run: bool
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    rows, lines = [], []
    for name in names:
        spec = {"kind": "hang", "name": name, "runs": runs, "deadline": deadline}
        spec["asyncio_run"] = asyncio_run
        outcome = run_worker(
            spec, each_s=deadline + SLACK_S, total_s=STARTUP_S + runs * (deadline + SLACK_S)
        )
        outcomes[name] = outcome
        rows.append(hang_row(name, outcome, runs))
        print(f"  {name}: {'ended' if outcome.finished else 'did not end'}", flush=True)
        details = Counter(clip(r["detail"], 170) for r in outcome.runs)
        lines += [f"{name}: stop detail x{n}: {detail}" for detail, n in details.most_common(2)]
        lines += notes(name, outcome)
    header = ["scenario", "runs", "stop reasons", "min ms", "median ms", "p95 ms", "max ms"]
    header += [f"max<{TARGET_MS:.0f}ms", "left behind after the runs"]
    print(table(f"Part 1: stop time - deadline ({deadline:g} s), {runs} runs each", header, rows))
    print("\n" + "\n".join(f"- {line}" for line in lines))
    print(LEGEND)
    return outcomes


def part_loops(names: list[str], runs: int, asyncio_run: bool) -> None:
    rows, lines = [], []
    for name in names:
        outcome = run_worker(
            {"kind": "loop", "name": name, "runs": runs, "asyncio_run": asyncio_run},
            each_s=30.0,
            total_s=STARTUP_S + runs * 30.0,
        )
        rows.append(loop_row(name, outcome))
        print(f"  {name}: {'ended' if outcome.finished else 'did not end'}", flush=True)
        if outcome.runs:
            lines.append(f"{name}: {clip(outcome.runs[0]['detail'], 150)}")
        lines += notes(name, outcome)
    header = ["pattern", "runs", "stop", "graph steps", "tool calls / replans / LLM calls"]
    header += ["first finding", "≤3 reps", "all findings"]
    title = f"Part 2: loop patterns, scripted model, max_replans={LOOP_REPLANS}"
    print(table(title, header, rows))
    print("\nStop details:\n" + "\n".join(f"- {line}" for line in lines))


def part_langgraph(deadline: float, trinity: dict[str, Outcome]) -> None:
    rows, lines = [], []
    for variant, how in LG_CASES:
        base = variant.removesuffix("-sync")
        if variant == base:
            title = HANG[base].title
            rows.append([title, "Trinity, run deadline", *trinity_cell(trinity.get(base))])
        for mechanism, label in LG_MECHANISMS.items():
            spec = {"kind": "langgraph", "variant": variant, "mechanism": mechanism}
            outcome = run_worker(
                spec | {"deadline": deadline},
                each_s=deadline + SLACK_S,
                total_s=STARTUP_S + deadline + SLACK_S,
            )
            rows.append(["", f"LangGraph {label}, {how}", *lg_cell(outcome)])
            lines += notes(f"LangGraph {label}, {variant}", outcome)
            print(f"  langgraph {variant} {mechanism}: done", flush=True)
    header = ["scenario", "engine, mechanism", "how it ends", "after the deadline", "left behind"]
    title = f"Part 3: the same hangs on LangGraph {LANGGRAPH} (1 run each), deadline {deadline:g} s"
    print(table(title, header, rows))
    if lines:
        print("\n" + "\n".join(f"- {line}" for line in lines))


def worker(spec: dict[str, Any]) -> None:
    tempfile.tempdir = spec["scratch"]
    for name in list(os.environ):  # the caller's Trinity settings do not apply here
        if name.startswith("TRINITY_"):
            del os.environ[name]
    if spec["kind"] == "langgraph":
        if spec["variant"].endswith("-sync"):
            lg_sync_worker(spec["variant"], spec["mechanism"], spec["deadline"])
        else:
            asyncio.run(lg_worker(spec["variant"], spec["mechanism"], spec["deadline"]))
        return
    if spec["kind"] == "hang":
        job = hang_worker(spec["name"], spec["runs"], spec["deadline"])
    else:
        job = loop_worker(spec["name"], spec["runs"])
    if spec["asyncio_run"]:
        asyncio.run(job)
    else:
        from trinity.engine.aio import run_main  # as the CLI runs: leftover tasks do not hold exit

        run_main(job)


def pick(only: str | None) -> tuple[list[str], list[str], bool]:
    if not only:
        return list(HANG), list(LOOPS), True
    wanted = {name.strip() for name in only.split(",")}
    groups = {"hangs": set(HANG), "loops": set(LOOPS)}
    for group, members in groups.items():
        if group in wanted:
            wanted |= members
    unknown = wanted - set(HANG) - set(LOOPS) - {*groups, "langgraph"}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    hangs = [n for n in HANG if n in wanted]
    if "langgraph" in wanted:  # Trinity's side of the comparison too
        hangs = [n for n in HANG if n in wanted or n in LG_NODES]
    return hangs, [n for n in LOOPS if n in wanted], "langgraph" in wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per hang scenario")
    parser.add_argument("--deadline", type=float, default=0.3, help="run deadline, seconds")
    parser.add_argument("--quick", action="store_true", help="5 runs per hang scenario")
    parser.add_argument("--loop-runs", type=int, default=20, help="runs per loop pattern")
    scenarios = ", ".join([*HANG, *LOOPS, "langgraph"])
    parser.add_argument("--only", help=f"comma-separated: hangs, loops, {scenarios}")
    parser.add_argument(
        "--asyncio-run",
        action="store_true",
        help="run Trinity's workers under asyncio.run, not trinity.engine.aio.run_main",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    runs = 5 if args.quick else args.runs
    if runs < 1 or args.loop_runs < 1 or args.deadline <= 0:
        parser.error("--runs and --loop-runs must be at least 1, --deadline positive")
    loop_runs = 3 if args.quick else args.loop_runs
    hangs, loops, langgraph = pick(args.only)
    become_subreaper()  # what a killed worker leaves behind comes to us, to be counted and killed
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, Linux {os.uname().release}")
    print(f"LangGraph: {LANGGRAPH or 'not installed (pip install -e .[bench])'}")
    runner = "asyncio.run" if args.asyncio_run else "trinity.engine.aio.run_main"
    print(f"Trinity's workers run under {runner}; LangGraph's under asyncio.run")
    trinity = part_hangs(hangs, runs, args.deadline, args.asyncio_run) if hangs else {}
    if loops:
        part_loops(loops, loop_runs, args.asyncio_run)
    if langgraph and LANGGRAPH:
        part_langgraph(args.deadline, trinity)
    elif langgraph:
        print("\nPart 3 skipped: LangGraph is not installed (pip install -e .[bench])")


if __name__ == "__main__":
    main()
