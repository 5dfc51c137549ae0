"""The runtime's read API (``trinity.queries``): typed runs, filters, cursor pages, events."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trinity.config import Settings
from trinity.errors import InputError, NotFoundError
from trinity.runtime import Runtime
from trinity.views import RunFilter


def _plan(tmp_path: Path, name: str, ok: bool = True) -> str:
    step = {"id": "w", "tool": "fs.write", "args": {"path": f"{name}.txt", "content": name}}
    if not ok:
        step = {"id": "x", "tool": "shell.run", "args": {"command": "exit 3"}}
        step["checks"] = [{"exit_code": 0}]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"task": f"task {name}", "steps": [step]}))
    return str(path)


@pytest.fixture
async def runtime(settings: Settings, tmp_path: Path):
    rt = Runtime(settings)
    for n in range(7):
        await rt.start(rt.prepare(_plan(tmp_path, f"note-{n}", ok=n != 3)))
    yield rt
    rt.close()


async def test_pages_follow_each_other_without_gaps_or_repeats(runtime: Runtime) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = runtime.list_runs(limit=3, cursor=cursor)
        seen += [run.id for run in page.runs]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3 and len(seen) == len(set(seen)) == 7
    everything = runtime.list_runs(limit=100).runs
    assert [run.id for run in everything] == seen  # newest first, the same order
    assert everything[0].task == "task note-6"


async def test_filters(runtime: Runtime) -> None:
    failed = runtime.list_runs(RunFilter(status=["failed"])).runs
    assert [run.task for run in failed] == ["task note-3"]
    assert failed[0].stop_reason == "failed" and failed[0].shown_status == "failed"
    assert len(runtime.list_runs(RunFilter(stop_reason=["completed"])).runs) == 6
    assert [r.task for r in runtime.list_runs(RunFilter(text="NOTE-5")).runs] == ["task note-5"]
    # LIKE's wildcards are text here
    assert runtime.list_runs(RunFilter(text="note_5")).runs == []
    assert runtime.list_runs(RunFilter(text="%")).runs == []
    newest = runtime.list_runs(limit=1).runs[0]
    assert runtime.list_runs(RunFilter(since=newest.created_at)).runs[0].id == newest.id
    assert newest.id not in [
        r.id for r in runtime.list_runs(RunFilter(until=newest.created_at)).runs
    ]


async def test_a_run_its_events_and_unknown_ids(runtime: Runtime) -> None:
    newest = runtime.list_runs(limit=1).runs[0]
    detail = runtime.get_run(newest.id[:6])  # a unique prefix
    assert detail.id == newest.id and detail.state is not None
    assert "all 1 step verified" in detail.report
    events = runtime.events(newest.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind == "run_started" and events[-1].kind in ("run_finished", "checkpoint")
    later = runtime.events(newest.id, after_seq=5)
    assert [e.seq for e in later] == [e.seq for e in events[5:]]
    assert len(runtime.events(newest.id, after_seq=2, limit=3)) == 3
    with pytest.raises(NotFoundError, match="no run with id 'nope-nope'"):
        runtime.get_run("nope-nope")
    with pytest.raises(InputError, match="bad cursor"):
        runtime.list_runs(cursor="!!not-a-cursor!!")
