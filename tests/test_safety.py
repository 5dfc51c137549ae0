"""Every run ends: hung tools, hung LLMs, CPU-bound code, SIGTERM-proof children, wedged MCP
servers, cancellation-swallowing code, budgets and timeouts.

Each hang scenario checks the stop reason, that the run ended soon after its deadline, that no
process it started is left (the process table), and that the next run in the same process and
the same Runtime completes. The precise distribution of (stop time - deadline) is measured by
``bench/safety.py``; these tests use a generous bound so a loaded CI machine does not fail them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from llm_server import FakeLLMServer, Reply, Trickle, fake_llm_server  # noqa: F401
from trinity.config import Settings
from trinity.errors import ConfigError, InputError
from trinity.limits import RunLimits
from trinity.llm.pricing import Price, PriceTable, UpstreamPrice
from trinity.llm.scripted import ScriptedProvider
from trinity.report import render_report
from trinity.runtime import Runtime
from trinity.state import RunState, StopReason, ToolResult, VerificationLevel
from trinity.tools.base import ToolSpec
from trinity.tools.reaper import REAPER

ROOT = Path(__file__).resolve().parent
HANG_SERVER = ROOT / "mcp_servers" / "hang_server.py"
LATE_S = 2.0
"""How late after its deadline a run may end in these tests (the target, 0.5 s, is benched)."""


class BadTools:
    """In-process tools that misbehave: ``bad.hang`` awaits forever, ``bad.swallow`` ignores
    cancellation, ``bad.busy`` spins in pure Python (never awaiting); ``bad.ok`` works."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.escaped = 0
        """How often the swallowing tool was cancelled and carried on."""

    async def list_tools(self) -> list[ToolSpec]:
        schema = {"type": "object", "properties": {}}
        names = ("hang", "swallow", "late", "busy", "ok")
        return [ToolSpec(f"bad.{n}", n, schema) for n in names]

    async def call(
        self, name: str, args: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        self.calls.append(name)
        if name == "bad.hang":
            await asyncio.Event().wait()
        if name == "bad.swallow":
            while True:
                try:
                    await asyncio.sleep(0.5)
                except asyncio.CancelledError:
                    self.escaped += 1
                    if self.escaped >= 3:  # bad, but not immortal: the test loop must close
                        raise
        if name == "bad.late":  # swallows every cancel for 0.9 s, then returns
            end = time.monotonic() + 0.9
            while (left := end - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(left)
        if name == "bad.busy":
            count = 0
            while True:
                count += 1
        return ToolResult(ok=True, output="fine")

    async def aclose(self) -> None:
        return None


def plan_file(tmp_path: Path, tool: str, args: dict[str, Any] | None = None) -> str:
    path = tmp_path / f"plan-{tool.replace('.', '-')}-{time.monotonic_ns()}.yaml"
    step = {"id": "s1", "tool": tool, "args": args or {}}
    path.write_text(yaml.safe_dump({"task": f"use {tool}", "steps": [step]}), encoding="utf-8")
    return str(path)


async def timed_run(runtime: Runtime, target: str, **options: Any) -> tuple[RunState, float]:
    """Prepare and start a run; options named like a limit go into its ``RunLimits``."""
    limits = {name: options.pop(name) for name in list(options) if name in RunLimits.model_fields}
    request = runtime.prepare(target, limits=RunLimits(**limits), **options)
    started = time.perf_counter()
    state = await runtime.start(request)
    return state, time.perf_counter() - started


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (zombies excluded, and this process's reaper,
    which lives as long as it does), from /proc."""
    identity = REAPER.identity()
    reapers = {identity[0]} if identity else set()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and int(entry) not in reapers:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime(settings, tools=BadTools())
    yield rt
    rt.close()


# -- hangs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "detail"),
    [
        ("bad.hang", "run deadline of 0.5s passed during node 'tetyana'"),
        ("bad.swallow", "did not stop within 0.25s of being cancelled: it was abandoned"),
        ("bad.busy", "held the event loop (CPU-bound code that never awaits)"),
    ],
)
async def test_a_hung_tool_ends_the_run_at_its_deadline_and_the_next_run_works(
    runtime: Runtime, tmp_path: Path, tool: str, detail: str
) -> None:
    state, took = await timed_run(runtime, plan_file(tmp_path, tool), timeout_s=0.5)

    assert state.stop_reason == StopReason.DEADLINE, state.stop_detail
    assert detail in state.stop_detail
    assert 0.5 <= took < 0.5 + LATE_S
    row = runtime.store.get_run(state.run_id)
    assert row["stop_reason"] == "deadline" and "What to try: Raise the deadline" in row["report"]
    assert "Last steps:\n- step s1 (" + tool + "): failed" in row["report"]
    # the next run in this process, with the same Runtime, is not disturbed
    after, _ = await timed_run(runtime, plan_file(tmp_path, "bad.ok"), timeout_s=5)
    assert after.stop_reason == StopReason.COMPLETED, after.stop_detail


async def test_a_shell_child_that_ignores_sigterm_is_killed_with_its_process_group(
    settings: Settings, tmp_path: Path, workspace: Path
) -> None:
    # Unsandboxed: the pids the command writes must be this machine's, not a sandbox's own
    # (test_sandbox.py kills a sandbox whole the same way).
    update = {"tool_timeout_s": 1000, "sandbox": "off"}
    runtime = Runtime(settings.model_copy(update=update))
    command = "trap '' TERM; sleep 1000 & echo $! > child.pid; echo $$ > shell.pid; wait"
    try:
        state, took = await timed_run(
            runtime, plan_file(tmp_path, "shell.run", {"command": command}), timeout_s=1.0
        )
        assert state.stop_reason == StopReason.DEADLINE, state.stop_detail
        assert took < 1.0 + LATE_S
        pids = [int((workspace / f).read_text()) for f in ("shell.pid", "child.pid")]
        assert not [pid for pid in pids if alive(pid)]
        assert children_of(os.getpid()) == []
        after, _ = await timed_run(
            runtime, plan_file(tmp_path, "shell.run", {"command": "echo ok"}), timeout_s=10
        )
        assert after.stop_reason == StopReason.COMPLETED, after.stop_detail
    finally:
        runtime.close()


async def test_an_mcp_server_that_never_answers_ends_with_the_deadline_and_is_killed(
    settings: Settings, tmp_path: Path
) -> None:
    servers = {
        "wedged": {
            "command": sys.executable,
            "args": [str(HANG_SERVER), "--handshake"],
            "timeout_s": 1000,  # only the run deadline can end the call
        }
    }
    runtime = Runtime(settings.model_copy(update={"mcp_servers": servers}))
    try:
        state, took = await timed_run(runtime, plan_file(tmp_path, "wedged.wait"), timeout_s=1.5)
        assert state.stop_reason == StopReason.DEADLINE, state.stop_detail
        assert took < 1.5 + LATE_S
        assert children_of(os.getpid()) == []  # the server (which ignores SIGTERM) is gone
        after, _ = await timed_run(
            runtime, plan_file(tmp_path, "fs.write", {"path": "a.txt", "content": "x"})
        )
        assert after.stop_reason == StopReason.COMPLETED, after.stop_detail
    finally:
        runtime.close()


async def test_a_hung_llm_ends_the_run_at_its_deadline(settings: Settings, tmp_path: Path) -> None:
    llm = ScriptedProvider([{"delay_s": 1000, "text": "{}", "repeat": True}])
    runtime = Runtime(settings.model_copy(update={"llm_timeout_s": 1000}), llm=llm)
    try:
        state, took = await timed_run(runtime, "Write hello to a.txt", timeout_s=0.5)
        assert state.stop_reason == StopReason.DEADLINE, state.stop_detail
        assert "during node 'atlas'" in state.stop_detail
        assert took < 0.5 + LATE_S
        # the next run in this process works (a plan file that needs no LLM call)
        plan = plan_file(tmp_path, "fs.write", {"path": "a.txt", "content": "x"})
        after, _ = await timed_run(runtime, plan, verification=VerificationLevel.CHECKS)
        assert after.stop_reason == StopReason.COMPLETED, after.stop_detail
    finally:
        runtime.close()


async def test_an_llm_that_streams_forever_over_http_ends_at_the_deadline(
    settings: Settings,
    fake_llm_server: FakeLLMServer,  # noqa: F811
) -> None:
    """The real OpenAI SDK, over real HTTP, against a server that sends a byte every 0.1 s."""
    fake_llm_server.script(Trickle(interval_s=0.1, seconds=60))
    update = {
        "llm_timeout_s": 1000,
        "openai_api_key": SecretStr("sk-test-key"),
        "openai_base_url": fake_llm_server.openai_base_url,
    }
    runtime = Runtime(settings.model_copy(update=update))
    try:
        state, took = await timed_run(
            runtime, "Write hello to a.txt", model="openai:gpt-4o-mini", timeout_s=1.0
        )
        assert state.stop_reason == StopReason.DEADLINE, state.stop_detail
        assert took < 1.0 + LATE_S
        assert len(fake_llm_server.requests) == 1
    finally:
        runtime.close()


async def test_an_llm_that_emits_garbage_forever_fails_the_run_in_bounded_calls(
    settings: Settings,
) -> None:
    llm = ScriptedProvider([{"text": "I cannot comply }{ ### ", "repeat": True}])
    runtime = Runtime(settings, llm=llm)
    try:
        state, _ = await timed_run(runtime, "Write hello to a.txt", timeout_s=30)
        assert state.stop_reason == StopReason.FAILED, state.stop_detail
        assert len(llm.requests) <= 9  # 3 planning attempts, each with at most 2 repairs
        assert "What to try" in render_report(state)
    finally:
        runtime.close()


async def test_a_forced_cancel_of_a_run_whose_tool_swallows_cancellation(
    runtime: Runtime, tmp_path: Path
) -> None:
    request = runtime.prepare(plan_file(tmp_path, "bad.swallow"), limits=RunLimits(timeout_s=60))
    started = time.perf_counter()
    task = asyncio.create_task(runtime.start(request))
    await asyncio.sleep(0.3)
    run_id = runtime.store.list_runs(limit=1)[0]["id"]
    runtime.store.request_cancel(run_id, grace_s=0.2)  # as `trinity runs cancel --grace 0.2`
    state = await task
    took = time.perf_counter() - started

    assert state.stop_reason == StopReason.CANCELLED, state.stop_detail
    assert "it was abandoned" in state.stop_detail
    assert took < 0.3 + 0.2 + LATE_S  # poll interval + grace + abandon grace
    after, _ = await timed_run(runtime, plan_file(tmp_path, "bad.ok"), timeout_s=5)
    assert after.stop_reason == StopReason.COMPLETED


# -- per-call timeouts and budgets ---------------------------------------------------------------


async def test_a_tool_timeout_fails_the_step_and_the_report_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    runtime = Runtime(settings)
    try:
        state, took = await timed_run(
            runtime,
            plan_file(tmp_path, "shell.run", {"command": "sleep 30"}),
            timeout_s=30,
            tool_timeout_s=0.3,
        )
        assert state.stop_reason == StopReason.FAILED, state.stop_detail
        assert took < 10  # two attempts of 0.3 s, not the 30 s deadline
        report = render_report(state)
        assert "shell.run: timed out after 0.3s" in report
        assert "Used: steps" in report and "retries 1" in report
    finally:
        runtime.close()


async def test_a_node_timeout_stops_the_run_as_timeout(runtime: Runtime, tmp_path: Path) -> None:
    state, took = await timed_run(
        runtime, plan_file(tmp_path, "bad.hang"), timeout_s=30, node_timeout_s=0.3
    )
    assert state.stop_reason == StopReason.TIMEOUT, state.stop_detail
    assert "node 'tetyana' took longer than its timeout of 0.3s" in state.stop_detail
    assert took < 0.3 + LATE_S
    assert "--node-timeout" in render_report(state)


def priced(settings: Settings, dollars_per_mtok: float) -> Settings:
    prices = {"scripted*": {"input_per_mtok": dollars_per_mtok, "output_per_mtok": 0}}
    return settings.model_copy(update={"prices": prices})


def write_plan() -> str:
    step = {"id": "w", "tool": "fs.write", "args": {"path": "a.txt", "content": "hello"}}
    return json.dumps({"steps": [step]})


async def test_the_cost_budget_stops_the_run_with_the_cost_in_the_report(
    settings: Settings,
) -> None:
    llm = ScriptedProvider(
        [{"text": write_plan(), "usage": {"input_tokens": 1000, "output_tokens": 10}}]
    )
    # 1,000 input tokens at $100 per million: $0.10 for the plan, over a budget of $0.05
    runtime = Runtime(priced(settings, 100.0), llm=llm)
    try:
        state, _ = await timed_run(runtime, "Write hello to a.txt", cost_budget_usd=0.05)
        assert state.stop_reason == StopReason.COST_BUDGET, state.stop_detail
        assert state.usage.cost_usd == pytest.approx(0.1)
        assert "cost budget of $0.05 used ($0.1000 over 1 LLM calls)" in state.stop_detail
        assert "cost $0.1000/$0.05" in runtime.store.get_run(state.run_id)["report"]
    finally:
        runtime.close()


async def test_a_run_within_its_cost_budget_completes_and_counts_its_cost(
    settings: Settings,
) -> None:
    judge = json.dumps({"passed": True, "reason": "ok"})
    llm = ScriptedProvider(
        [
            {"text": write_plan(), "usage": {"input_tokens": 1000, "output_tokens": 10}},
            {"match": {"purpose": "grisha"}, "text": judge, "repeat": True},
        ]
    )
    runtime = Runtime(priced(settings, 1.0), llm=llm)
    try:
        state, _ = await timed_run(runtime, "Write hello to a.txt", cost_budget_usd=1.0)
        assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
        assert state.usage.cost_usd > 0.001 and state.usage.priced
    finally:
        runtime.close()


def test_a_cost_budget_for_a_model_without_a_price_is_refused_before_the_run(
    settings: Settings,
) -> None:
    runtime = Runtime(settings, llm=ScriptedProvider([]))
    try:
        with pytest.raises(ConfigError, match=r"needs the price of model 'scripted'.*\[prices"):
            runtime.prepare("Write hello", limits=RunLimits(cost_budget_usd=1.0))
        assert runtime.store.list_runs(limit=5) == []
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("node_timeout_s", 0, r"limit node_timeout_s: .*greater than 0, got 0 \(--node-timeout"),
        ("llm_timeout_s", -1, r"limit llm_timeout_s: .*got -1 \(--llm-timeout / TRINITY_LLM"),
        ("tool_timeout_s", 0, r"limit tool_timeout_s: .*\(--tool-timeout"),
        ("cost_budget_usd", 0, r"limit cost_budget_usd: .*\(--cost-budget / TRINITY_COST"),
        ("timeout_s", 0, r"limit timeout_s: .*\(--timeout / TRINITY_TIMEOUT_S\)"),
        ("max_steps", "many", r"limit max_steps: .*integer.*got 'many' \(--max-steps"),
        ("deadline", 5, r"limit deadline: Extra inputs are not permitted"),
    ],
)
def test_limits_that_are_not_valid_are_refused_naming_the_option(
    name: str, value: object, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        RunLimits.given(**{name: value})


def test_limits_left_unset_take_the_settings_and_set_ones_win(settings: Settings) -> None:
    tuned = settings.model_copy(update={"max_steps": 33, "token_budget": 900})
    runtime = Runtime(tuned, llm=ScriptedProvider([]))
    try:
        request = runtime.prepare("Write hello", limits=RunLimits(timeout_s=7, token_budget=None))
    finally:
        runtime.close()
    assert request.limits.max_steps == 33  # the setting
    assert request.limits.timeout_s == 7  # given
    assert request.limits.token_budget is None  # given explicitly: no budget for this run
    assert request.requested["timeout_s"] == 7
    assert "max_steps" not in request.requested


def test_a_checkpoint_written_before_the_rename_resumes_with_its_deadline() -> None:
    """Runs stored by earlier versions named the timeout ``deadline_s`` (policy, requested)."""
    old = {"deadline_s": 42.0, "max_steps": 9}
    state = RunState.model_validate(
        {"run_id": "r1", "task": {"text": "t", "workspace": "/w"}, "policy": old, "requested": old}
    )
    assert state.policy.timeout_s == 42.0
    assert state.requested == {"timeout_s": 42.0, "max_steps": 9}


def test_price_lookup_prefers_user_entries_exact_names_and_longer_patterns() -> None:
    table = PriceTable(
        {
            "openai:gpt-4o-mini*": {"input_per_mtok": 9, "output_per_mtok": 9},
            "openai:gpt-4o-mini-2024-*": {"input_per_mtok": 5, "output_per_mtok": 5},
            "openai-compatible:http://h/v1#*": {"input_per_mtok": 0, "output_per_mtok": 0},
        }
    )
    assert table.lookup("openai:gpt-4o-mini") == Price(input_per_mtok=9, output_per_mtok=9)
    assert table.lookup("openai:gpt-4o-mini-2024-07-18") == Price(
        input_per_mtok=5, output_per_mtok=5
    )
    assert table.lookup("openai-compatible:http://h/v1#llama") == Price(
        input_per_mtok=0, output_per_mtok=0
    )
    assert Price(input_per_mtok=2, output_per_mtok=8).cost(1_000_000, 500_000) == 6.0


@pytest.mark.parametrize(
    ("model", "dollars"),
    [
        # genai-prices' list prices for 100k input and 100k output tokens (per million: some
        # prices are higher for prompts over 200k tokens, and each call is priced on its own)
        ("openai:gpt-4o-mini", 0.15 + 0.60),
        ("openai:gpt-4o", 2.50 + 10.00),
        ("anthropic:claude-sonnet-4-5", 3.00 + 15.00),
        ("anthropic:claude-3-5-haiku-latest", 0.80 + 4.00),
        # an OpenAI-compatible service is known by its URL
        ("openai-compatible:https://openrouter.ai/api/v1#openai/gpt-4o", 2.50 + 10.00),
    ],
)
def test_other_prices_come_from_genai_prices(model: str, dollars: float) -> None:
    price = PriceTable().lookup(model)
    assert isinstance(price, UpstreamPrice)
    assert price.cost(100_000, 100_000) == pytest.approx(dollars / 10)


@pytest.mark.parametrize(
    "model",
    ["openai-compatible:http://localhost:11434/v1#llama3.1", "scripted:plan.yaml", "openai:nope-9"],
)
def test_a_model_nobody_prices_has_no_price(model: str) -> None:
    assert PriceTable().lookup(model) is None


def test_a_bad_price_entry_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"prices: 'm': output_per_mtok: Field required"):
        PriceTable({"m": {"input_per_mtok": 1}})
    with pytest.raises(ConfigError, match=r"prices: 'm': input_per_mtok: Input should be"):
        PriceTable({"m": {"input_per_mtok": -1, "output_per_mtok": 1}})


async def test_limits_the_user_gave_survive_a_resume(runtime: Runtime, tmp_path: Path) -> None:
    state, _ = await timed_run(
        runtime, plan_file(tmp_path, "bad.hang"), timeout_s=0.3, tool_timeout_s=7, llm_timeout_s=9
    )
    assert state.policy.tool_timeout_s == 7 and state.policy.llm_timeout_s == 9
    resumed = await runtime.resume(state.run_id)  # a deadline stop is final: nothing runs
    assert resumed.policy.tool_timeout_s == 7


def test_the_cli_prints_and_stores_the_stop_report(tmp_path: Path, workspace: Path) -> None:
    plan = plan_file(tmp_path, "shell.run", {"command": "sleep 30"})
    db = tmp_path / "cli.db"
    started = time.perf_counter()
    command = [sys.executable, "-m", "trinity", "run", plan, "-w", str(workspace)]
    done = subprocess.run(
        [*command, "--db", str(db), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.perf_counter() - started
    assert done.returncode == 1, done.stderr
    assert "deadline after" in done.stderr and "What to try: Raise the deadline" in done.stderr
    assert "Used: steps" in done.stderr and "time 1." in done.stderr
    assert took < 15  # interpreter start-up included; a hung CLI would hit the 60 s timeout
    run_id = done.stderr.split("Run ", 1)[1].split()[0]
    shown = subprocess.run(
        [sys.executable, "-m", "trinity", "runs", "show", run_id, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "What to try: Raise the deadline" in shown.stdout


def test_a_blocked_cli_process_exits_even_when_a_task_swallows_cancellation(
    tmp_path: Path,
) -> None:
    """run_main does not wait forever for a task that ignores cancellation at exit."""
    script = tmp_path / "leftover.py"
    script.write_text(
        "import asyncio\n"
        "from trinity.engine.aio import run_main\n"
        "async def stubborn():\n"
        "    while True:\n"
        "        try:\n"
        "            await asyncio.sleep(10)\n"
        "        except asyncio.CancelledError:\n"
        "            pass\n"
        "async def main():\n"
        "    asyncio.get_running_loop().create_task(stubborn())\n"
        "    await asyncio.sleep(0.05)\n"
        "    return 7\n"
        "raise SystemExit(run_main(main(), grace_s=0.2))\n",
        encoding="utf-8",
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=30)
    assert done.returncode == 7, done.stderr
    assert b"destroyed but it is pending" not in done.stderr


async def test_one_request_can_be_started_twice(runtime: Runtime, tmp_path: Path) -> None:
    """start() works on a copy of the request's plan: a second start begins afresh."""
    request = runtime.prepare(plan_file(tmp_path, "bad.ok"), limits=RunLimits(timeout_s=5))
    first = await runtime.start(request)
    second = await runtime.start(request)
    assert first.stop_reason == second.stop_reason == StopReason.COMPLETED
    assert first.run_id != second.run_id
    assert [len(s.attempts) for s in second.plan.steps] == [1]
    assert request.plan is not None and request.plan.steps[0].attempts == []


async def test_a_bad_prices_setting_is_refused_before_any_run_is_stored(
    settings: Settings, tmp_path: Path
) -> None:
    bad = settings.model_copy(update={"prices": {"openai:x": {"input_per_mtok": 1}}})
    runtime = Runtime(bad, tools=BadTools())
    try:
        with pytest.raises(ConfigError, match="prices: 'openai:x': output_per_mtok"):
            runtime.prepare(plan_file(tmp_path, "bad.ok"))  # no cost budget: still checked
        assert runtime.store.list_runs(limit=5) == []
    finally:
        runtime.close()


async def test_resuming_with_an_unpriced_model_under_a_cost_budget_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    keyed = priced(settings, 1.0).model_copy(update={"openai_api_key": SecretStr("sk-x")})
    runtime = Runtime(keyed, tools=BadTools())
    (tmp_path / "s.yaml").write_text("replies: []\n", encoding="utf-8")
    try:
        request = runtime.prepare(
            plan_file(tmp_path, "bad.hang"),
            model="scripted:" + str(tmp_path / "s.yaml"),
            limits=RunLimits(cost_budget_usd=1.0, timeout_s=60),
        )
        task = asyncio.create_task(runtime.start(request))
        await asyncio.sleep(0.3)
        run_id = runtime.store.list_runs(limit=1)[0]["id"]
        runtime.cancel(run_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with pytest.raises(ConfigError, match="needs the price of model 'openai:gpt-unknown'"):
            await runtime.resume(run_id, model="openai:gpt-unknown")
    finally:
        runtime.close()


async def test_an_abandoned_node_that_carries_on_writes_nothing_after_the_run_ended(
    runtime: Runtime, tmp_path: Path
) -> None:
    state, _ = await timed_run(runtime, plan_file(tmp_path, "bad.late"), timeout_s=0.3)
    assert "it was abandoned" in state.stop_detail
    before = runtime.store.list_events(state.run_id)
    await asyncio.sleep(1.0)  # the tool returns meanwhile, and Tetyana would report it
    after = runtime.store.list_events(state.run_id)
    assert after == before
    assert [e["kind"] for e in after][-1] != "tool_result"
    assert runtime.store.get_run(state.run_id)["stop_reason"] == "deadline"


def test_a_run_blocked_in_c_ends_its_cli_process_with_a_resume_hint(tmp_path: Path) -> None:
    """The last resort: a node blocked inside a C call (time.sleep) cannot be interrupted, so
    the CLI's watchdog hook ends the process; the run's checkpoints stay for a resume."""
    script = tmp_path / "blocked.py"
    script.write_text(
        "import time\n"
        "from trinity.cli.run import exit_when_stuck\n"
        "from trinity.engine import END, Engine, Graph, Limits, run_main\n"
        "from trinity.engine.watchdog import WATCHDOG\n"
        "from trinity.state import EngineState\n"
        "async def blocked(state):\n"
        "    time.sleep(60)\n"
        "WATCHDOG.on_stuck = exit_when_stuck\n"
        "graph = Graph(nodes={'b': blocked}, router=lambda s, last: END, entry='b')\n"
        "run_main(Engine(graph).run(EngineState(run_id='abc123'), Limits(deadline_s=0.3)))\n",
        encoding="utf-8",
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    took = time.perf_counter() - started
    assert done.returncode == 70, done.stderr
    assert "run abc123 is blocked in a call that cannot be interrupted" in done.stderr
    assert "`trinity runs resume abc123` continues it" in done.stderr
    assert took < 10  # not the 60 s sleep


def test_max_replans_can_be_fixed_by_a_setting(settings: Settings) -> None:
    runtime = Runtime(settings.model_copy(update={"max_replans": 5}), llm=ScriptedProvider([]))
    try:
        assert runtime.prepare("Write hello").requested["max_replans"] == 5
        assert runtime.prepare("Write hello", max_replans=1).requested["max_replans"] == 1
    finally:
        runtime.close()
