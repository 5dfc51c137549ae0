"""The database under attack: damaged pages, a truncated file, an old schema, a full disk and
read-only storage. Each test drives the real ``trinity`` command in a subprocess and checks what a
user would see: the exit code, one clear message (never a traceback), and that no run loses or
repeats work.

The disk-full and read-only tests mount small tmpfs file systems (root or CAP_SYS_ADMIN); where
that is impossible they are skipped, saying so loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from trinity.state import Plan, RunState, Step, StopReason, Task
from trinity.store.schema import MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello.yaml"
PAGE = 4096
TIMEOUT_S = 120.0
TIMED_OUT = -1000
"""The exit code :func:`trinity` reports for a command that had to be killed after TIMEOUT_S."""


# -- running the command -------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """os.environ without keys or TRINITY_* settings; wide columns so that nothing wraps."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRINITY_")
        and name not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "COLUMNS", "LINES")
    }
    env["COLUMNS"] = "500"
    return env


@dataclass(frozen=True)
class Done:
    command: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        """What to print when an assertion about this command fails."""
        shown = " ".join(self.command)
        return (
            f"\n$ {shown}\nexit code: {self.code}\n--- stderr (end) ---\n{self.stderr[-4000:]}"
            f"\n--- stdout (end) ---\n{self.stdout[-2000:]}"
        )


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def trinity(*args: str, cwd: Path, umask: int = -1) -> Done:
    """Run ``python -m trinity ARGS`` to its end; killed (whole process group) after
    TIMEOUT_S, which is reported as exit code TIMED_OUT, never as a hang."""
    command = (sys.executable, "-m", "trinity", *args)
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        umask=umask,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return Done(
            command, TIMED_OUT, _text(stdout), _text(stderr) + f"\n[killed after {TIMEOUT_S}s]"
        )
    return Done(command, proc.returncode, stdout, stderr)


def assert_no_traceback(done: Done) -> None:
    assert "Traceback" not in done.stderr, done.explain()
    assert "Traceback" not in done.stdout, done.explain()
    assert "internal error" not in done.stderr, done.explain()


def run_ids(done: Done) -> list[str]:
    assert done.code == 0, done.explain()
    return [str(row["id"]) for row in json.loads(done.stdout)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def page_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()


# -- a real database -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database the way `trinity run` leaves it: examples/hello.yaml run three times (about 30
    pages of 4096 bytes), every process gone (so nothing is left in a WAL file)."""
    base = tmp_path_factory.mktemp("pristine")
    db = base / "trinity.db"
    for _ in range(3):
        done = trinity("run", str(HELLO), "-w", str(base / "ws"), "--db", str(db), cwd=base)
        assert done.code == 0, done.explain()
    wal = base / "trinity.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "a WAL file outlived the process"
    assert page_count(db) >= 20
    return db


def copy_db(pristine: Path, folder: Path) -> Path:
    db = folder / "trinity.db"
    shutil.copyfile(pristine, db)
    return db


def overwrite_pages(db: Path, first: int, last: int) -> None:
    """Pages ``first`` to ``last`` (numbered from 1, as SQLite does) replaced by random bytes
    (always the same ones)."""
    noise = random.Random(first * 1000 + last).randbytes((last - first + 1) * PAGE)
    with db.open("r+b") as file:
        file.seek((first - 1) * PAGE)
        file.write(noise)


# -- 1. doctor tells a damaged database from a healthy one ---------------------------------------

DAMAGE: dict[str, tuple[tuple[int, int], dict[bool, str]]] = {
    # pages 3 to 18, most tables' roots: SQLite gives up on either check ("malformed")
    "pages-3-18": ((3, 18), {False: "malformed", True: "malformed"}),
    # page 3 alone (an index): quick_check lists what it found, integrity_check gives up
    "page-3": (
        (3, 3),
        {False: "DAMAGED (quick_check): *** in database main ***", True: "malformed"},
    ),
}
"""Which pages are overwritten, and what doctor must show (without, with ``--full``)."""


@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_doctor_says_a_damaged_database_is_damaged(
    pristine_db: Path, tmp_path: Path, damage: str, full: bool
) -> None:
    (first, last), evidence = DAMAGE[damage]
    db = copy_db(pristine_db, tmp_path)
    overwrite_pages(db, first, last)
    before = digest(db)

    done = trinity("doctor", "--db", str(db), *(["--full"] if full else []), cwd=tmp_path)

    assert_no_traceback(done)
    assert done.code == 2, done.explain()
    assert "problem(s) found" in done.stderr, done.explain()
    pragma = "integrity_check" if full else "quick_check"
    assert f"ok ({pragma})" not in done.stdout, done.explain()
    assert "damaged" in done.stdout.lower(), done.explain()
    assert evidence[full] in done.stdout, done.explain()
    assert digest(db) == before, "doctor changed the damaged file"


@pytest.mark.parametrize("full", [False, True], ids=["quick", "full"])
def test_doctor_says_a_healthy_database_is_ok(
    pristine_db: Path, tmp_path: Path, full: bool
) -> None:
    db = copy_db(pristine_db, tmp_path)

    done = trinity("doctor", "--db", str(db), *(["--full"] if full else []), cwd=tmp_path)

    assert_no_traceback(done)
    assert done.code == 0, done.explain()
    pragma = "integrity_check" if full else "quick_check"
    integrity = [line for line in done.stdout.splitlines() if "integrity" in line]
    assert len(integrity) == 1 and f"ok ({pragma})" in integrity[0], done.explain()
    assert f"schema {len(MIGRATIONS)}, current" in done.stdout, done.explain()  # the latest


ANY_RUN = "abcd1234"
COMMANDS = {
    "run": ("run", str(HELLO), "-w", "{ws}"),
    "runs-list": ("runs", "list"),
    "runs-show": ("runs", "show", ANY_RUN),
    "runs-trace": ("runs", "trace", ANY_RUN),
    "runs-resume": ("runs", "resume", ANY_RUN),
    "runs-approve": ("runs", "approve", ANY_RUN),
    "runs-deny": ("runs", "deny", ANY_RUN),
}
"""Commands that open the database; ``{ws}`` is the test's workspace."""


def command(name: str, ws: Path, db: Path) -> list[str]:
    return [part.format(ws=ws) for part in COMMANDS[name]] + ["--db", str(db)]


@pytest.mark.parametrize("name", ["run", "runs-list", "runs-show", "runs-resume"])
def test_commands_refuse_a_damaged_database_plainly(
    pristine_db: Path, tmp_path: Path, name: str
) -> None:
    db = copy_db(pristine_db, tmp_path)
    overwrite_pages(db, 3, 18)
    ws = tmp_path / "ws"

    done = trinity(*command(name, ws, db), cwd=tmp_path)

    assert_no_traceback(done)
    assert done.code == 2, done.explain()
    assert "malformed" in done.stderr and str(db) in done.stderr, done.explain()
    assert not (ws / "hello.txt").exists(), "a step ran against a damaged database"


# -- 2. an empty file is not a new database ------------------------------------------------------


@pytest.mark.parametrize("name", list(COMMANDS))
def test_an_empty_database_file_is_refused_not_reused(
    pristine_db: Path, tmp_path: Path, name: str
) -> None:
    db = copy_db(pristine_db, tmp_path)
    os.truncate(db, 0)
    ws = tmp_path / "ws"

    done = trinity(*command(name, ws, db), cwd=tmp_path)

    assert_no_traceback(done)
    assert done.code == 2, done.explain()
    assert str(db) in done.stderr and "empty" in done.stderr, done.explain()
    assert db.stat().st_size == 0, "something was written into the empty file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ws") == ["trinity.db"]
    assert not (ws / "hello.txt").exists(), "a step ran without a database"


def test_doctor_reports_an_empty_database_file(pristine_db: Path, tmp_path: Path) -> None:
    db = copy_db(pristine_db, tmp_path)
    os.truncate(db, 0)

    done = trinity("doctor", "--db", str(db), cwd=tmp_path)

    assert_no_traceback(done)
    assert done.code == 2, done.explain()
    assert "problem(s) found" in done.stderr, done.explain()
    assert "empty (0 bytes)" in done.stdout, done.explain()
    assert "will be created" not in done.stdout, done.explain()
    assert db.stat().st_size == 0


# -- 3. a new database is private, made whole or not at all --------------------------------------


def assert_private_and_alone(folder: Path, db: Path) -> None:
    """The database is its owner's alone, and nothing but it (and SQLite's own -wal / -shm, as
    private) was left in its folder."""
    assert stat.S_IMODE(db.stat().st_mode) == 0o600, oct(db.stat().st_mode)
    others = sorted(p.name for p in folder.iterdir() if p != db)
    allowed = {f"{db.name}-wal", f"{db.name}-shm"}
    assert set(others) <= allowed, f"left in {folder}: {others}"
    for name in others:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["run", "runs-list"])
def test_a_new_database_is_private_and_leaves_no_temporary_files(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "data" / "nested"  # not there yet
    db = folder / "trinity.db"

    # umask 0: a file made without care would be world-readable (and writable)
    done = trinity(*command(name, tmp_path / "ws", db), cwd=tmp_path, umask=0)

    assert_no_traceback(done)
    assert done.code == 0, done.explain()
    assert_private_and_alone(folder, db)


def test_processes_racing_to_create_the_database_share_one(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    db = folder / "trinity.db"
    args = (sys.executable, "-m", "trinity", "runs", "list", "--json", "--db", str(db))
    procs = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            umask=0,
        )
        for _ in range(6)
    ]
    results = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        results.append(Done(args, proc.returncode, stdout, stderr))
    for done in results:
        assert_no_traceback(done)
        assert done.code == 0 and json.loads(done.stdout) == [], done.explain()
    assert_private_and_alone(folder, db)


# -- 4. a schema-3 database is migrated on open --------------------------------------------------

LIVE, OLD = "run-live-0001", "run-old-0002"


def make_v3_database(db: Path, ws: Path) -> None:
    """A database as Trinity with schema 3 left it: one run still going (its state in the
    checkpoints table), one that ended cancelled (two events, two checkpoints)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for number, script in enumerate(MIGRATIONS[:3], start=1):
            conn.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        now = time.time()
        live = RunState(
            run_id=LIVE,
            task=Task(text="write a file", workspace=str(ws)),
            plan=Plan(
                steps=[
                    Step(
                        id="write",
                        tool="fs.write",
                        args={"path": "out.txt", "content": "migrated\n"},
                    )
                ]
            ),
            next_node="recall",
            started_at=now - 10,
        )
        old_started = now - 100
        old = RunState(
            run_id=OLD,
            task=Task(text="an old run", workspace=str(ws)),
            started_at=old_started,
            step=2,
            stop_reason=StopReason.CANCELLED,
            stop_detail="cancelled by the user",
            finished_at=now - 50,
        )
        older = old.model_copy(
            update={"step": 1, "stop_reason": None, "finished_at": None, "next_node": "meta"}
        )
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO runs (id, task, workspace, status, created_at) VALUES (?, ?, ?, ?, ?)",
            (LIVE, live.task.text, str(ws), "running", live.started_at),
        )
        conn.execute(
            "INSERT INTO checkpoints (run_id, step, next_node, created_at, state) "
            "VALUES (?, ?, ?, ?, ?)",
            (LIVE, 0, "recall", now - 10, live.model_dump_json()),
        )
        conn.execute(
            "INSERT INTO runs (id, task, workspace, status, stop_reason, stop_detail, steps, "
            "created_at, finished_at) VALUES (?, ?, ?, 'failed', 'cancelled', ?, 2, ?, ?)",
            (OLD, old.task.text, str(ws), old.stop_detail, old_started, old.finished_at),
        )
        for seq, kind, node, data in (
            (1, "run_started", None, {"task": old.task.text}),
            (2, "node_started", "recall", {}),
        ):
            conn.execute(
                "INSERT INTO events (run_id, seq, ts, kind, node, data) VALUES (?, ?, ?, ?, ?, ?)",
                (OLD, seq, old_started + seq, kind, node, json.dumps(data)),
            )
        for state in (older, old):
            conn.execute(
                "INSERT INTO checkpoints (run_id, step, next_node, created_at, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    OLD,
                    state.step,
                    state.next_node,
                    old_started + state.step,
                    state.model_dump_json(),
                ),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def show(db: Path, run_id: str, cwd: Path) -> dict[str, Any]:
    done = trinity("runs", "show", run_id, "--json", "--db", str(db), cwd=cwd)
    assert_no_traceback(done)
    assert done.code == 0, done.explain()
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def test_a_schema_3_database_is_migrated_and_its_runs_go_on(tmp_path: Path) -> None:
    db, ws = tmp_path / "old.db", tmp_path / "ws"
    ws.mkdir()
    make_v3_database(db, ws)

    listed = trinity("runs", "list", "--json", "--db", str(db), cwd=tmp_path)

    assert_no_traceback(listed)
    assert listed.code == 0, listed.explain()
    status = {row["id"]: row["status"] for row in json.loads(listed.stdout)}
    assert status == {LIVE: "running", OLD: "cancelled"}
    conn = sqlite3.connect(db)
    try:
        from trinity.store.schema import MIGRATIONS

        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "checkpoints" not in tables and "steps" not in tables, tables
        snapshots = conn.execute(
            "SELECT run_id, count(*) FROM snapshots GROUP BY run_id ORDER BY run_id"
        ).fetchall()
        assert snapshots == [(LIVE, 1), (OLD, 1)]
        assert conn.execute("SELECT count(*) FROM events WHERE run_id=?", (OLD,)).fetchone()[0] == 2
    finally:
        conn.close()

    old = show(db, OLD, tmp_path)
    assert old["run"]["status"] == "cancelled"
    assert old["state"]["step"] == 2  # the newest checkpoint became the snapshot
    assert old["state"]["stop_reason"] == "cancelled"
    live = show(db, LIVE, tmp_path)
    assert [step["id"] for step in live["state"]["plan"]["steps"]] == ["write"]

    resumed = trinity("runs", "resume", LIVE, "--db", str(db), cwd=tmp_path)

    assert_no_traceback(resumed)
    assert resumed.code == 0, resumed.explain()
    assert (ws / "out.txt").read_text() == "migrated\n"
    live = show(db, LIVE, tmp_path)
    assert live["run"]["status"] == "succeeded"
    assert live["state"]["stop_reason"] == "completed"
    assert show(db, OLD, tmp_path)["run"]["status"] == "cancelled"


# -- 5. a full disk and read-only storage, on small tmpfs mounts ---------------------------------


class Mounts:
    """tmpfs mounts made by the tests, all unmounted at the end (lazily if they are busy)."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def tmpfs(self, point: Path, size: str) -> Path:
        point.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            problem = done.stderr.strip() if done.returncode else ""
        except (OSError, subprocess.SubprocessError) as exc:
            problem = str(exc)
        if problem:
            pytest.skip(
                "CANNOT MOUNT A TMPFS (needs root or CAP_SYS_ADMIN), SO THE DISK-FULL AND "
                f"READ-ONLY STORAGE TESTS DID NOT RUN: {problem}"
            )
        self.points.append(point)
        return point

    def remount(self, point: Path, options: str) -> None:
        done = subprocess.run(
            ["mount", "-o", f"remount,{options}", str(point)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"remount,{options} {point}: {done.stderr}"

    def unmount_all(self) -> None:
        for point in reversed(self.points):
            done = subprocess.run(["umount", str(point)], capture_output=True, timeout=30)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)
        self.points.clear()


@pytest.fixture(scope="module")
def mounts() -> Iterator[Mounts]:
    made = Mounts()
    try:
        yield made
    finally:
        made.unmount_all()


def ledger_plan(path: Path, task: str, count: int, command: str) -> list[str]:
    """A plan of ``count`` shell steps, each appending its own line to ledger.txt (``command``
    with ``{line}``), checked by file_contains; returns the ledger a finished run leaves."""
    lines = [f"s{i:02d}" for i in range(count)]  # s00…: no line is a prefix of another
    steps = [
        {
            "id": line,
            "tool": "shell.run",
            "args": {"command": command.format(line=line)},
            "checks": [{"file_contains": {"path": "ledger.txt", "text": line}}],
        }
        for line in lines
    ]
    path.write_text(yaml.safe_dump({"task": task, "steps": steps}, sort_keys=False))
    return lines


def read_ledger(ws: Path) -> list[str]:
    ledger = ws / "ledger.txt"
    return ledger.read_text().splitlines() if ledger.exists() else []


@dataclass
class DiskFull:
    expected: list[str]
    stopped: Done
    ledger_when_stopped: list[str]
    run_id: str | None
    resumed: Done | None
    ledger_when_resumed: list[str]
    shown: Done | None


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory, mounts: Mounts) -> DiskFull:
    """A run whose journal fills its 1 MB tmpfs (40 steps of 60 KB output each); then the tmpfs
    grows to 64 MB and the run is resumed. The workspace is on the ordinary disk."""
    base = tmp_path_factory.mktemp("disk-full")
    folder = mounts.tmpfs(base / "db", "1m")
    db, ws, plan = folder / "trinity.db", base / "ws", base / "big.yaml"
    expected = ledger_plan(
        plan,
        "Print 60 KB and append one ledger line, forty times",
        40,
        "head -c 60000 /dev/zero | tr '\\0' x && echo && echo {line} >> ledger.txt",
    )
    stopped = trinity("run", str(plan), "-w", str(ws), "--db", str(db), cwd=base)
    ledger_when_stopped = read_ledger(ws)
    mounts.remount(folder, "size=64m")
    listed = trinity("runs", "list", "--json", "--db", str(db), cwd=base)
    ids = run_ids(listed) if listed.code == 0 else []
    run_id = ids[0] if len(ids) == 1 else None
    resumed = shown = None
    if run_id is not None:
        resumed = trinity("runs", "resume", run_id, "--db", str(db), cwd=base)
        shown = trinity("runs", "show", run_id, "--json", "--db", str(db), cwd=base)
    return DiskFull(expected, stopped, ledger_when_stopped, run_id, resumed, read_ledger(ws), shown)


def test_a_full_disk_stops_the_run_with_a_clear_message(disk_full: DiskFull) -> None:
    stopped = disk_full.stopped
    assert_no_traceback(stopped)
    assert stopped.code == 1, stopped.explain()
    assert "disk is full" in stopped.stderr, stopped.explain()  # the cause
    assert any(  # and what became of the run
        words in stopped.stderr for words in ("storage failed", "could not be recorded")
    ), stopped.explain()
    assert disk_full.run_id is not None and disk_full.run_id in stopped.stderr, stopped.explain()
    # it really stopped part-way (the disk filled), and no step ran twice so far
    done = disk_full.ledger_when_stopped
    assert 0 < len(done) < len(disk_full.expected), done
    assert done == disk_full.expected[: len(done)], done


def test_a_full_disk_is_reported_without_asyncio_noise(disk_full: DiskFull) -> None:
    """Every failed write is accounted for: asyncio has no unretrieved exception to complain
    about ("Future exception was never retrieved" lines on stderr)."""
    stopped = disk_full.stopped
    assert "never retrieved" not in stopped.stderr, stopped.explain()


def test_after_a_full_disk_the_run_resumes_and_does_each_step_once(disk_full: DiskFull) -> None:
    assert disk_full.run_id is not None, disk_full.stopped.explain()
    resumed, shown = disk_full.resumed, disk_full.shown
    assert resumed is not None and shown is not None
    assert_no_traceback(resumed)
    assert resumed.code == 0, resumed.explain()
    assert disk_full.ledger_when_resumed == disk_full.expected, resumed.explain()
    assert shown.code == 0, shown.explain()
    assert json.loads(shown.stdout)["run"]["status"] == "succeeded"


@dataclass
class ReadOnly:
    expected: list[str]
    run_id: str | None
    ledger_at_crash: list[str]
    listed: Done
    refused: Done | None
    ledger_after_refusal: list[str]
    new_run: Done
    new_ws: Path
    resumed: Done | None
    ledger_when_resumed: list[str]
    checkpointed: bool


def stored_run_ids(db: Path) -> list[str]:
    """The runs in a database, read without writing (a WAL file stays as it is)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [str(row[0]) for row in conn.execute("SELECT id FROM runs")]
    finally:
        conn.close()


@pytest.fixture(scope="module", params=["wal-as-the-crash-left-it", "checkpointed"])
def read_only(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mounts: Mounts
) -> ReadOnly:
    """A run killed part-way (its database on a tmpfs), the tmpfs made read-only, the run
    resumed there (refused), a new run started there (refused), then the tmpfs made writable
    again and the run resumed. The database is read-only either as the crash left it (its WAL
    and shared-memory files still there) or after a `trinity runs list` tidied it up (which
    checkpoints the WAL and removes both).

    Linux refuses ``mount -o remount,ro`` while a process has a file on it open for writing
    (EBUSY, "mount point is busy"), and a running Trinity holds its database so: storage cannot
    become read-only under a live run. The crash stands in for the moment it does."""
    checkpointed = request.param == "checkpointed"
    base = tmp_path_factory.mktemp("ro-storage")
    folder = mounts.tmpfs(base / "db", "4m")
    db, ws, plan = folder / "trinity.db", base / "ws", base / "slow.yaml"
    expected = ledger_plan(
        plan, "Append one ledger line, slowly", 12, "sleep 0.2 && echo {line} >> ledger.txt"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trinity", "run", str(plan), "-w", str(ws), "--db", str(db)],
        cwd=base,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(read_ledger(ws)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash, in the middle of the run
        proc.wait()
    time.sleep(0.6)  # the reaper kills the tool processes it leaves; let them go
    ledger_at_crash = read_ledger(ws)
    ids = stored_run_ids(db)
    run_id = ids[0] if len(ids) == 1 else None
    if checkpointed:
        tidy = trinity("runs", "list", "--db", str(db), cwd=base)
        assert tidy.code == 0, tidy.explain()
    wal = folder / "trinity.db-wal"
    assert wal.exists() != checkpointed, f"{request.param}: but {wal} exists: {wal.exists()}"

    mounts.remount(folder, "ro")
    try:
        listed = trinity("runs", "list", "--json", "--db", str(db), cwd=base)
        refused = trinity("runs", "resume", run_id, "--db", str(db), cwd=base) if run_id else None
        time.sleep(0.3)  # anything it may have started has had time to write
        ledger_after_refusal = read_ledger(ws)
        new_ws = base / "ws-new"
        new_run = trinity("run", str(plan), "-w", str(new_ws), "--db", str(db), cwd=base)
    finally:
        mounts.remount(folder, "rw")
    resumed = trinity("runs", "resume", run_id, "--db", str(db), cwd=base) if run_id else None
    return ReadOnly(
        expected,
        run_id,
        ledger_at_crash,
        listed,
        refused,
        ledger_after_refusal,
        new_run,
        new_ws,
        resumed,
        read_ledger(ws),
        checkpointed,
    )


READ_ONLY_WORDS = ("readonly", "read-only", "Read-only")


def test_read_only_storage_refuses_a_resume_without_running_a_step(read_only: ReadOnly) -> None:
    crashed = read_only.ledger_at_crash
    assert 0 < len(crashed) < len(read_only.expected), crashed  # the crash came part-way
    assert read_only.run_id is not None
    refused = read_only.refused
    assert refused is not None
    assert_no_traceback(refused)
    assert refused.code == 2, refused.explain()  # nothing ran: the database is unusable here
    assert any(words in refused.stderr for words in READ_ONLY_WORDS), refused.explain()
    assert read_only.ledger_after_refusal == crashed, "a step ran that could not be recorded"


def test_read_only_storage_refuses_a_new_run_before_any_step(read_only: ReadOnly) -> None:
    new_run = read_only.new_run
    assert_no_traceback(new_run)
    assert new_run.code in (1, 2), new_run.explain()
    assert any(words in new_run.stderr for words in READ_ONLY_WORDS), new_run.explain()
    assert read_ledger(read_only.new_ws) == [], "a step ran that could not be recorded"


def test_runs_on_read_only_storage_are_listed_or_the_storage_is_named(read_only: ReadOnly) -> None:
    """With the WAL files there, SQLite can read; without them it cannot even open the file
    (it must create them): then the error says the storage is read-only."""
    listed = read_only.listed
    assert_no_traceback(listed)
    assert read_only.run_id is not None
    if read_only.checkpointed:
        assert listed.code == 2, listed.explain()
        assert "read-only storage" in listed.stderr, listed.explain()
    else:
        assert run_ids(listed) == [read_only.run_id], listed.explain()


def test_after_read_only_storage_the_run_resumes_and_does_each_step_once(
    read_only: ReadOnly,
) -> None:
    resumed = read_only.resumed
    assert resumed is not None
    assert_no_traceback(resumed)
    assert resumed.code == 0, resumed.explain()
    assert read_only.ledger_when_resumed == read_only.expected, resumed.explain()
