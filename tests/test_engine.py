"""The graph engine on its own: routing, limits, stops, checkpoints and resume."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time

import pytest

from trinity.engine import (
    END,
    Engine,
    Graph,
    Limits,
    MemoryJournal,
    StopRun,
)
from trinity.errors import EngineError
from trinity.events import EventBus
from trinity.state import EngineState, StopReason
from trinity.store import Store
from trinity.store.journal import RunJournal, load_run


class Counter(EngineState):
    n: int = 0
    trail: list[str] = []


async def add(state: Counter) -> dict[str, object]:
    return {"n": state.n + 1, "trail": [*state.trail, "add"]}


async def mark(state: Counter) -> dict[str, object]:
    return {"trail": [*state.trail, "mark"]}


def until(limit: int):
    def route(state: Counter, last: str) -> str:
        if state.n >= limit:
            return END
        return "mark" if last == "add" else "add"

    return route


def counting_graph(limit: int = 5, **nodes: object) -> Graph[Counter]:
    return Graph(nodes={"add": add, "mark": mark, **nodes}, router=until(limit), entry="add")  # type: ignore[arg-type]


def store_engine(store: Store, graph: Graph[Counter], state: Counter, **options: object):
    """An engine whose journal is the store's, as the Runtime builds it."""
    bus = EventBus(state.run_id)
    journal = RunJournal(store, state, bus, epoch=0)
    bus.subscribe(journal)
    return Engine(graph, journal=journal, events=bus.emit, **options), journal  # type: ignore[arg-type]


async def test_runs_to_end_and_checkpoints_every_step() -> None:
    cp = MemoryJournal()
    state = await Engine(counting_graph(5), journal=cp).run(Counter(run_id="r"))
    assert state.stop_reason == StopReason.COMPLETED
    assert state.n == 5
    assert state.step == 9  # add, mark, add, mark, ... add
    assert state.trail == ["add", "mark"] * 4 + ["add"]
    steps = [saved.step for saved in cp.states["r"]]
    assert steps[:-1] == list(range(1, 10))  # one as each step finishes
    assert steps[-1] == 9  # and the run's end
    assert cp.states["r"][-1].stop_reason == "completed"


async def test_step_budget_stops_with_reason() -> None:
    state = await Engine(counting_graph(1000)).run(Counter(run_id="r"), Limits(max_steps=7))
    assert state.stop_reason == StopReason.STEP_BUDGET
    assert state.step == 7
    assert "7" in state.stop_detail


async def test_deadline_cuts_a_hung_node() -> None:
    async def hang(state: Counter) -> None:
        await asyncio.sleep(60)

    graph = Graph(nodes={"hang": hang}, router=lambda s, last: END, entry="hang")
    loop = asyncio.get_running_loop()
    started = loop.time()
    state = await Engine(graph).run(Counter(run_id="r"), Limits(deadline_s=0.2))
    assert state.stop_reason == StopReason.DEADLINE
    assert loop.time() - started < 1.0


async def test_a_node_timeout_inside_is_not_mistaken_for_the_deadline() -> None:
    async def own_timeout(state: Counter) -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    graph = Graph(nodes={"n": own_timeout}, router=lambda s, last: END, entry="n")
    state = await Engine(graph).run(Counter(run_id="r"), Limits(deadline_s=30))
    assert state.stop_reason == StopReason.ERROR
    assert "TimeoutError" in state.stop_detail


async def test_node_error_and_bad_updates_become_typed_stops() -> None:
    async def boom(state: Counter) -> None:
        raise ValueError("bad thing")

    async def typo(state: Counter) -> dict[str, int]:
        return {"nn": 1}

    for node, words in ((boom, "ValueError: bad thing"), (typo, "unknown state field 'nn'")):
        graph = Graph(nodes={"x": node}, router=lambda s, last: END, entry="x")
        state = await Engine(graph).run(Counter(run_id="r"))
        assert state.stop_reason == StopReason.ERROR
        assert words in state.stop_detail

    lost = Graph(nodes={"x": mark}, router=lambda s, last: "nowhere", entry="x")
    state = await Engine(lost).run(Counter(run_id="r"))
    assert state.stop_reason == StopReason.ERROR and "nowhere" in state.stop_detail


async def test_stop_run_carries_its_reason() -> None:
    async def give_up(state: Counter) -> None:
        raise StopRun(StopReason.FAILED, "cannot be done")

    graph = Graph(nodes={"x": give_up}, router=lambda s, last: END, entry="x")
    state = await Engine(graph).run(Counter(run_id="r"))
    assert (state.stop_reason, state.stop_detail) == (StopReason.FAILED, "cannot be done")


async def test_cooperative_and_forced_cancellation() -> None:
    cancel = asyncio.Event()

    async def slow(state: Counter) -> dict[str, int]:
        await asyncio.sleep(0.01)
        if state.n == 3:
            cancel.set()
        return {"n": state.n + 1}

    graph = Graph(nodes={"s": slow}, router=lambda s, last: "s", entry="s")
    state = await Engine(graph).run(Counter(run_id="r"), cancel=cancel)
    assert state.stop_reason == StopReason.CANCELLED and state.n == 4

    cp = MemoryJournal()
    forced = Counter(run_id="f")
    task = asyncio.create_task(Engine(graph, journal=cp).run(forced))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert forced.stop_reason == StopReason.CANCELLED
    assert cp.states["f"][-1].stop_reason == StopReason.CANCELLED


def one_node(fn) -> Graph[Counter]:
    return Graph(nodes={"x": fn}, router=lambda s, last: END, entry="x")


async def test_a_node_that_swallows_cancellation_is_abandoned_at_deadline_plus_grace() -> None:
    resumed_after_abandon = asyncio.Event()

    async def stubborn(state: Counter) -> dict[str, int]:
        for _ in range(3):
            try:
                await asyncio.sleep(2)
            except asyncio.CancelledError:
                continue
        resumed_after_abandon.set()
        return {"n": 99}

    cp = MemoryJournal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    state = await Engine(one_node(stubborn), journal=cp).run(
        Counter(run_id="r"), Limits(deadline_s=0.2, grace_s=0.1)
    )
    took = loop.time() - started
    assert state.stop_reason == StopReason.DEADLINE
    assert "node 'x' did not stop within 0.1s of being cancelled" in state.stop_detail
    assert 0.3 <= took < 1.5
    saved = len(cp.states["r"])
    # The abandoned node carries on by itself (it was cancelled twice; its third sleep runs
    # out); what it returns reaches neither the state nor a checkpoint.
    await asyncio.wait_for(resumed_after_abandon.wait(), 40)
    await asyncio.sleep(0.01)
    assert state.n == 0 and len(cp.states["r"]) == saved
    assert cp.states["r"][-1].stop_reason == "deadline"


@pytest.mark.parametrize("catch", [False, True])
async def test_cpu_bound_python_is_interrupted_past_the_deadline(catch: bool) -> None:
    async def spin(state: Counter) -> None:
        n = 0
        while True:
            try:
                while True:
                    n += 1
            except Exception:  # a node that swallows errors does not swallow the watchdog's
                if not catch:
                    raise

    loop = asyncio.get_running_loop()
    started = loop.time()
    state = await Engine(one_node(spin)).run(Counter(run_id="r"), Limits(deadline_s=0.2))
    assert state.stop_reason == StopReason.DEADLINE
    assert "node 'x' held the event loop" in state.stop_detail
    assert loop.time() - started < 2.0
    assert state.node_seconds["x"] >= 0.2
    # the loop and the engine are fine afterwards
    after = await Engine(counting_graph(3)).run(Counter(run_id="next"), Limits(deadline_s=5))
    assert after.stop_reason == StopReason.COMPLETED


async def test_a_busy_node_in_one_run_does_not_stop_a_run_that_ends_in_time() -> None:
    """The watchdog only fires past a deadline: short CPU bursts are left alone."""

    async def burst(state: Counter) -> dict[str, int]:
        end = time.perf_counter() + 0.3  # holds the loop for 0.3 s, within a 5 s deadline
        while time.perf_counter() < end:
            pass
        return {"n": state.n + 1}

    graph = Graph(nodes={"b": burst}, router=lambda s, last: END if s.n >= 2 else "b", entry="b")
    state = await Engine(graph).run(Counter(run_id="r"), Limits(deadline_s=5))
    assert state.stop_reason == StopReason.COMPLETED and state.n == 2, state.stop_detail


async def test_a_forced_cancel_abandons_a_node_that_swallows_it() -> None:
    async def stubborn(state: Counter) -> None:
        for _ in range(3):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    cp = MemoryJournal()
    forced = Counter(run_id="f")
    task = asyncio.create_task(
        Engine(one_node(stubborn), journal=cp).run(forced, Limits(grace_s=0.1))
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert forced.stop_reason == StopReason.CANCELLED
    assert "it was abandoned" in forced.stop_detail
    assert cp.states["f"][-1].stop_reason == "cancelled"


async def test_a_node_timeout_is_its_own_stop_reason() -> None:
    async def slow(state: Counter) -> None:
        await asyncio.sleep(10)

    state = await Engine(one_node(slow)).run(
        Counter(run_id="r"), Limits(deadline_s=30, node_timeout_s=0.05)
    )
    assert state.stop_reason == StopReason.TIMEOUT
    assert state.stop_detail == "node 'x' took longer than its timeout of 0.05s"


async def test_resume_continues_where_the_checkpoint_left_off(tmp_path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        first = Counter(run_id="r")
        engine, journal = store_engine(store, counting_graph(6), first)
        await journal.snapshot(first)
        await engine.run(first, Limits(max_steps=4))
        assert first.stop_reason == StopReason.STEP_BUDGET
        # read the run back from its journal, as a resume does
        crashed, _ = load_run(store, "r", Counter)
        assert crashed.n == 2 and crashed.step == 4 and crashed.trail == first.trail
        assert crashed.stop_reason == StopReason.STEP_BUDGET
        crashed.stop_reason = None  # a budget stop is final: resume it by hand, with more
        engine, _ = store_engine(store, counting_graph(6), crashed)
        resumed = await engine.run(crashed, Limits(max_steps=100))
        assert resumed.stop_reason == StopReason.COMPLETED
        assert resumed.n == 6
        assert resumed.trail == ["add", "mark"] * 5 + ["add"]
    finally:
        store.close()


async def test_side_effect_node_is_marked_in_flight_durably(tmp_path) -> None:
    store = Store(tmp_path / "t.db")
    seen: list[str | None] = []

    async def act(state: Counter) -> dict[str, int]:
        # the marker checkpoint is already on disk while the action runs
        on_disk, _ = load_run(store, "r", Counter)
        seen.append(on_disk.in_flight)
        return {"n": state.n + 1}

    graph = Graph(
        nodes={"act": act},
        router=lambda s, last: END,
        entry="act",
        side_effect_nodes=frozenset({"act"}),
    )
    try:
        state = Counter(run_id="r")
        engine, journal = store_engine(store, graph, state)
        await journal.snapshot(state)
        await engine.run(state)
    finally:
        store.close()
    assert seen == ["act"]
    assert state.in_flight is None and state.stop_reason == StopReason.COMPLETED


async def test_many_concurrent_runs_share_group_commits(tmp_path) -> None:
    store = Store(tmp_path / "t.db")
    try:
        runs = []
        for i in range(200):
            state = Counter(run_id=f"r{i}")
            engine, _ = store_engine(store, counting_graph(5), state, durability="sync")
            runs.append(engine.run(state))
        states = await asyncio.gather(*runs)
        assert all(s.stop_reason == StopReason.COMPLETED for s in states)
        with store._read() as conn:
            finished = conn.execute(
                "SELECT count(*) FROM events WHERE kind='node_finished'"
            ).fetchone()
        assert finished[0] == 200 * 9  # every step of every run journaled
        # 1,800 durable checkpoints (plus final ones) in far fewer transactions
        assert store.writer.batches < 200 * 9 / 5
    finally:
        store.close()


def test_graph_validation() -> None:
    with pytest.raises(EngineError, match="entry node"):
        Graph(nodes={"a": add}, router=until(1), entry="b")
    with pytest.raises(EngineError, match="side-effect"):
        Graph(nodes={"a": add}, router=until(1), entry="a", side_effect_nodes=frozenset({"z"}))


def _busy_run_in_child() -> None:
    async def spin(state: Counter) -> None:
        while True:
            pass

    state = asyncio.run(Engine(one_node(spin)).run(Counter(run_id="c"), Limits(deadline_s=0.2)))
    os._exit(0 if state.stop_reason == StopReason.DEADLINE else 1)


async def test_the_watchdog_works_in_a_forked_child() -> None:
    """A prefork worker inherits the watchdog object but not its thread; it starts its own."""

    async def spin(state: Counter) -> None:
        while True:
            pass

    parent = await Engine(one_node(spin)).run(Counter(run_id="p"), Limits(deadline_s=0.1))
    assert parent.stop_reason == StopReason.DEADLINE  # the parent's thread is running
    child = multiprocessing.get_context("fork").Process(target=_busy_run_in_child)
    child.start()
    try:
        await asyncio.to_thread(child.join, 30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


async def test_a_busy_loop_of_many_healthy_runs_is_not_mistaken_for_a_held_one() -> None:
    """Many runs taking turns make each loop turn long, but no task holds the loop: the
    watchdog must not interrupt anyone when a few of the runs pass their deadline."""

    async def chunk(state: Counter) -> dict[str, int]:
        end = time.perf_counter() + 0.003  # 3 ms of CPU, then a turn for the others
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)
        return {"n": state.n + 1}

    graph = Graph(nodes={"c": chunk}, router=lambda s, last: END if s.n >= 8 else "c", entry="c")
    engine = Engine(graph)
    runs = [
        engine.run(Counter(run_id=f"r{i}"), Limits(deadline_s=0.2 if i < 4 else 60))
        for i in range(120)
    ]
    states = await asyncio.gather(*runs)
    short, long = states[:4], states[4:]
    assert all(s.stop_reason == StopReason.DEADLINE for s in short)
    assert all("held the event loop" not in s.stop_detail for s in short)
    assert [s.stop_reason for s in long] == [StopReason.COMPLETED] * len(long)


async def test_overrun_inside_a_task_group_still_stops_the_run() -> None:
    async def spin() -> None:
        while True:
            pass

    async def grouped(state: Counter) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(spin())

    state = await Engine(one_node(grouped)).run(Counter(run_id="r"), Limits(deadline_s=0.2))
    assert state.stop_reason == StopReason.DEADLINE
    assert "held the event loop" in state.stop_detail


async def test_a_loop_held_outside_any_task_first_does_not_disarm_the_watchdog() -> None:
    async def spin_later(state: Counter) -> None:
        await asyncio.sleep(0.4)
        while True:
            pass

    def hog() -> None:  # a plain callback holds the loop across the deadline
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:
            pass

    asyncio.get_running_loop().call_later(0.1, hog)
    started = time.perf_counter()
    state = await Engine(one_node(spin_later)).run(Counter(run_id="r"), Limits(deadline_s=0.2))
    assert state.stop_reason == StopReason.DEADLINE
    assert time.perf_counter() - started < 3


async def test_a_second_cancel_during_the_grace_period_still_closes_the_run() -> None:
    async def stubborn(state: Counter) -> dict[str, int]:
        for _ in range(2):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)
        return {"n": 1}

    cp = MemoryJournal()
    graph = Graph(nodes={"s": stubborn}, router=lambda s, last: END if s.n else "s", entry="s")
    forced = Counter(run_id="f")
    task = asyncio.create_task(Engine(graph, journal=cp).run(forced, Limits(grace_s=0.2)))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # again, while the engine waits out the grace period
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert forced.stop_reason == StopReason.CANCELLED and forced.finished_at is not None
    saved = len(cp.states["f"])
    await asyncio.sleep(2.2)  # the stubborn node finishes by itself meanwhile
    assert forced.n == 0 and len(cp.states["f"]) == saved
    assert cp.states["f"][-1].stop_reason == "cancelled"


async def test_a_node_that_swallows_the_deadline_but_returns_in_time_ends_the_run() -> None:
    ran: list[str] = []

    async def slow(state: Counter) -> dict[str, int]:
        ran.append("slow")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return {"n": 1}

    async def after(state: Counter) -> None:
        ran.append("after")

    graph = Graph(
        nodes={"slow": slow, "after": after}, router=lambda s, last: "after", entry="slow"
    )
    state = await Engine(graph).run(Counter(run_id="r"), Limits(deadline_s=0.1))
    assert state.stop_reason == StopReason.DEADLINE
    assert "node 'slow' carried on when cancelled" in state.stop_detail
    assert ran == ["slow"] and state.n == 0
