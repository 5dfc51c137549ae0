"""The ``trinity`` command, run as a real subprocess: exit codes, messages, stored rows."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello.yaml"
TABLES = ("runs", "events", "snapshots", "lessons")

_script = Path(sys.executable).with_name("trinity")
TRINITY = [str(_script)] if _script.exists() else [sys.executable, "-m", "trinity"]


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without API keys or TRINITY_* settings; wide columns so that rich does not
    wrap messages (the default 80-column wrap is tested on its own below)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRINITY_")
        and name not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "COLUMNS", "LINES")
    }
    env["COLUMNS"] = "500"
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass
class Cli:
    cwd: Path
    db: Path
    ws: Path

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, with_db: bool = True
    ) -> Result:
        command = [*TRINITY, *args]
        if with_db:
            command += ["--db", str(self.db)]
        done = subprocess.run(
            command,
            cwd=self.cwd,
            env=env if env is not None else clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self("run", *args, "-w", str(self.ws), env=env)

    def rows(self) -> dict[str, int]:
        """Rows per table; a database that does not exist (or has no tables) is empty."""
        if not self.db.exists():
            return dict.fromkeys(TABLES, 0)
        conn = sqlite3.connect(self.db)
        try:
            counts = {}
            for table in TABLES:
                try:
                    counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                except sqlite3.OperationalError:  # no such table
                    counts[table] = 0
            return counts
        finally:
            conn.close()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, db=tmp_path / "trinity.db", ws=tmp_path / "ws")


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr
    assert "internal error" not in result.stderr


def assert_refused(cli: Cli, result: Result, *parts: str) -> str:
    """Exit 2, one clear line on stderr that contains every part, nothing stored."""
    assert_no_traceback(result)
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got {result.stderr!r}"
    message = lines[0]
    assert message.startswith("error: ")
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert cli.rows() == dict.fromkeys(TABLES, 0)
    assert not (cli.ws.exists() and any(cli.ws.iterdir()))
    return message


# -- a run that completes --------------------------------------------------------------------


def test_hello_plan_runs_and_can_be_inspected(cli: Cli) -> None:
    result = cli.run(str(HELLO))
    assert_no_traceback(result)
    assert result.code == 0, result.stderr
    assert (cli.ws / "hello.txt").read_text() == "Hello from Trinity Runtime\n"
    assert (cli.ws / "count.txt").read_text().strip() == "4"
    assert (cli.ws / "report.md").read_text() == "# Report\n\nThe greeting has 4 words.\n"
    assert re.search(r"Run [0-9a-f]{12} completed after \d+ steps", result.stderr)

    listed = cli("runs", "list", "--json")
    assert listed.code == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert len(runs) == 1
    run = runs[0]
    assert run["status"] == "succeeded" and run["stop_reason"] == "completed"
    assert run["plan_file"] == str(HELLO)
    assert run["workspace"] == str(cli.ws.resolve())
    run_id = run["id"]
    assert run_id in result.stderr

    table = cli("runs", "list")
    assert table.code == 0 and run_id in table.stdout and "succeeded" in table.stdout

    step_ids = ["write-greeting", "count-words", "make-report", "list"]
    for ref in (run_id, run_id[:6]):  # a unique prefix works too
        shown = cli("runs", "show", ref)
        assert_no_traceback(shown)
        assert shown.code == 0, shown.stderr
        assert shown.stdout.startswith(f"{run_id} succeeded (completed)")
        for step in step_ids:
            assert step in shown.stdout
        assert "all 4 steps verified" in shown.stdout

    shown_json = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert shown_json["run"]["id"] == run_id and shown_json["run"]["status"] == "succeeded"
    steps = shown_json["state"]["plan"]["steps"]
    assert [s["id"] for s in steps] == step_ids
    assert {s["status"] for s in steps} == {"succeeded"}

    trace = cli("runs", "trace", run_id[:8])
    assert_no_traceback(trace)
    assert trace.code == 0, trace.stderr
    for word in ("run_started", "tool_call", "verdict", *step_ids):
        assert word in trace.stdout

    trace_json = cli("runs", "trace", run_id, "--json")
    assert trace_json.code == 0
    events = [json.loads(line) for line in trace_json.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "run_started"
    calls = [e["data"]["step"] for e in events if e["kind"] == "tool_call"]
    assert calls == step_ids
    verdicts = [e["data"] for e in events if e["kind"] == "verdict"]
    assert [v["step"] for v in verdicts] == step_ids and all(v["passed"] for v in verdicts)


def test_runs_show_unknown_id(cli: Cli) -> None:
    result = cli("runs", "show", "zzzzzz")
    assert_no_traceback(result)
    assert result.code == 2
    assert result.stderr.strip() == "error: no run with id 'zzzzzz' (see `trinity runs list`)"


def test_module_entry_point_works(cli: Cli) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trinity", "run", "", "--db", str(cli.db)],
        cwd=cli.cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "the task is empty" in done.stderr


# -- bad input: exit 2, one clear line, nothing stored ---------------------------------------

SCRIPT = "replies:\n  - text: '{}'\n"

YAML_SYNTAX = "task: t\nsteps:\n  - id: a\n    tool: fs.read\n   args: {path: a}\n"
DEEP_CHECK = """\
task: deep
steps:
  - id: one
    tool: fs.write
    args: {path: a.txt, content: hi}
  - id: two
    tool: shell.run
    args: {command: echo hi}
    checks:
      - exit_code: 0
      - output_smells: hi
"""
DEEP_TOOL = """\
task: deep
steps:
  - id: one
    tool: fs.write
    args: {path: a.txt, content: hi}
  - id: two
    args: {command: echo hi}
"""
JSON_SYNTAX = '{\n  "task": "x",\n  "steps": [\n    {"id": "a", "tool": "fs.read",}\n  ]\n}\n'
UNKNOWN_TOOL = "steps:\n  - id: a\n    tool: fs.delete\n    args: {path: a}\n"
MISSING_ARG = "steps:\n  - id: a\n    tool: fs.write\n    args: {path: a}\n"


@pytest.mark.parametrize(
    ("files", "args", "parts"),
    [
        pytest.param({}, [""], ["the task is empty"], id="empty-task"),
        pytest.param({}, ["   \t "], ["the task is empty"], id="blank-task"),
        pytest.param(
            {"bad.yaml": YAML_SYNTAX}, ["bad.yaml"], ["bad.yaml:5: invalid YAML"], id="yaml-syntax"
        ),
        pytest.param(
            {"deep.yaml": DEEP_CHECK},
            ["deep.yaml"],
            ["deep.yaml:11: steps[1].checks[1]"],
            id="unknown-check-kind",
        ),
        pytest.param(
            {"deep.yaml": DEEP_TOOL},
            ["deep.yaml"],
            ["deep.yaml:6: steps[1].tool: Field required"],
            id="missing-tool",
        ),
        pytest.param(
            {"list.yaml": "- a\n- b\n"},
            ["list.yaml"],
            ["list.yaml:1: expected a mapping with 'steps', got list"],
            id="yaml-list",
        ),
        pytest.param(
            {"scalar.yaml": "hello\n"},
            ["scalar.yaml"],
            ["scalar.yaml:1: expected a mapping with 'steps', got str"],
            id="yaml-scalar",
        ),
        pytest.param(
            {"bad.json": JSON_SYNTAX},
            ["bad.json"],
            ["bad.json:4: invalid JSON: Expecting property name"],
            id="json-syntax",
        ),
        pytest.param({}, ["nope.yaml"], ["nope.yaml: file not found"], id="missing-plan"),
        pytest.param(
            {"unk.yaml": UNKNOWN_TOOL},
            ["unk.yaml"],
            ["unk.yaml", "step 'a': unknown tool 'fs.delete'", "fs.write"],
            id="unknown-tool",
        ),
        pytest.param(
            {"arg.yaml": MISSING_ARG},
            ["arg.yaml"],
            ["arg.yaml", "step 'a': fs.write needs argument(s) ['content']"],
            id="missing-tool-argument",
        ),
        pytest.param(
            {},
            ["do it", "--model", "gpt-4"],
            ["unknown model string 'gpt-4'", "openai:MODEL"],
            id="model-gpt-4",
        ),
        pytest.param(
            {},
            ["do it", "--model", "foo:bar"],
            ["unknown model string 'foo:bar'", "scripted:PATH"],
            id="model-foo-bar",
        ),
        pytest.param(
            {},
            ["do it", "--model", "openai:gpt-4o-mini"],
            ["'openai:gpt-4o-mini' needs an API key", "set OPENAI_API_KEY"],
            id="openai-no-key",
        ),
        pytest.param(
            {},
            ["do it", "--model", "anthropic:claude-3-5-haiku-latest"],
            ["needs an API key", "set ANTHROPIC_API_KEY"],
            id="anthropic-no-key",
        ),
        pytest.param(
            {"s.yaml": SCRIPT},
            ["do it", "--model", "openai-compatible:localhost:8000#m"],
            ["bad model string", "openai-compatible:http(s)://host/v1#MODEL"],
            id="openai-compatible-no-scheme",
        ),
        pytest.param({}, ["do it"], ["a task in words needs a model", "--model"], id="no-model"),
        pytest.param(
            {},
            ["do it", "--model", "scripted:missing.yaml"],
            ["scripted model file not found: missing.yaml"],
            id="scripted-missing",
        ),
        pytest.param(
            {"s.yaml": "replies:\n  - bogus: 1\n"},
            ["do it", "--model", "scripted:s.yaml"],
            ["s.yaml: invalid script at replies.0.bogus"],
            id="scripted-invalid",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_stored(
    cli: Cli, files: dict[str, str], args: list[str], parts: list[str]
) -> None:
    for name, text in files.items():
        (cli.cwd / name).write_text(text, encoding="utf-8")
    assert_refused(cli, cli.run(*args), *parts)


def test_oversized_task_is_refused(cli: Cli) -> None:
    (cli.cwd / "s.yaml").write_text(SCRIPT, encoding="utf-8")
    env = clean_env(TRINITY_MAX_TASK_CHARS="50")
    ok_size = cli.run("x" * 50, "--model", "scripted:s.yaml", "--max-steps", "1", env=env)
    assert "the limit is" not in ok_size.stderr  # 50 characters is allowed
    cli.db.unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cli.db}{suffix}").unlink(missing_ok=True)
    if cli.ws.exists():
        shutil.rmtree(cli.ws)

    result = cli.run("y" * 51, "--model", "scripted:s.yaml", env=env)
    assert_refused(cli, result, "the task is 51 characters; the limit is 50", "MAX_TASK_CHARS")


def test_workspace_that_is_a_file_is_refused(cli: Cli) -> None:
    (cli.cwd / "ws").write_text("not a folder", encoding="utf-8")
    result = cli("run", str(HELLO), "-w", "ws")
    assert_no_traceback(result)
    assert result.code == 2
    assert "workspace" in result.stderr and "is not a directory" in result.stderr
    assert cli.rows() == dict.fromkeys(TABLES, 0)


def test_error_message_is_one_line_at_the_default_width(cli: Cli) -> None:
    env = clean_env()
    del env["COLUMNS"]
    result = cli.run("do it", env=env)
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- doctor ----------------------------------------------------------------------------------


def test_doctor_says_a_key_is_set_without_printing_it(cli: Cli) -> None:
    result = cli("doctor", env=clean_env(OPENAI_API_KEY="sk-test-SECRET-123"))
    assert_no_traceback(result)
    assert result.code == 0, result.stdout + result.stderr
    assert re.search(r"OPENAI_API_KEY\s*│\s*set\s", result.stdout)
    assert re.search(r"ANTHROPIC_API_KEY\s*│\s*not set\s", result.stdout)
    for leak in ("sk-test", "SECRET-123"):
        assert leak not in result.stdout and leak not in result.stderr
    assert result.stdout.rstrip().endswith("ok")


def test_doctor_reports_a_bad_default_model(cli: Cli) -> None:
    result = cli("doctor", env=clean_env(TRINITY_MODEL="gpt-4"))
    assert_no_traceback(result)
    assert result.code == 2
    assert "unknown model string 'gpt-4'" in result.stdout
    assert "1 problem(s) found" in result.stderr


# -- a run that stops ------------------------------------------------------------------------

FAILING = """\
task: a step that cannot pass
steps:
  - id: boom
    tool: shell.run
    args: {command: "exit 3"}
    checks:
      - exit_code: 0
"""


def test_failing_step_exits_1_and_names_the_step(cli: Cli) -> None:
    (cli.cwd / "fail.yaml").write_text(FAILING, encoding="utf-8")
    result = cli.run("fail.yaml")
    assert_no_traceback(result)
    assert result.code == 1, result.stderr
    match = re.search(r"Run ([0-9a-f]{12}) failed after \d+ steps", result.stderr)
    assert match, result.stderr
    assert "step 'boom' failed verification" in result.stderr
    assert "exit_code == 0 — not met (exit code 3)" in result.stderr
    run_id = match.group(1)

    shown = cli("runs", "show", run_id)
    assert shown.code == 0
    assert shown.stdout.startswith(f"{run_id} failed (failed)")
    assert "boom" in shown.stdout

    (row,) = json.loads(cli("runs", "list", "--json").stdout)
    assert row["id"] == run_id
    assert (row["status"], row["stop_reason"]) == ("failed", "failed")
    assert "boom" in row["stop_detail"]


def test_json_output_of_a_failed_run(cli: Cli) -> None:
    (cli.cwd / "fail.yaml").write_text(FAILING, encoding="utf-8")
    result = cli.run("fail.yaml", "--json")
    assert result.code == 1
    state = json.loads(result.stdout)
    assert state["stop_reason"] == "failed"
    assert state["plan"]["steps"][0]["id"] == "boom"
    assert state["plan"]["steps"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("db", "words"),
    [
        ("postgresql://localhost/trinity", "PostgreSQL is not supported"),
        ("mysql://localhost/x", "unsupported database URL"),
    ],
)
def test_a_bad_database_is_a_configuration_error(cli: Cli, db: str, words: str) -> None:
    result = cli("run", str(HELLO), "-w", str(cli.ws), "--db", db, with_db=False)
    assert_refused(cli, result, words)
    assert "trinity Write a greeting" not in result.stderr  # refused before the run began


def test_a_newer_database_schema_is_refused_up_front(cli: Cli) -> None:
    sqlite3.connect(cli.db).execute("PRAGMA user_version=999").connection.close()
    result = cli.run(str(HELLO))
    assert_no_traceback(result)
    assert result.code == 2
    assert "schema version 999, newer than this Trinity" in result.stderr


def test_a_workspace_that_cannot_be_made_stores_nothing(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("run", str(HELLO), "-w", str(blocker / "ws"))
    assert_no_traceback(result)
    assert result.code == 2
    assert "cannot use workspace" in result.stderr
    assert cli.rows() == dict.fromkeys(TABLES, 0)


def test_doctor_reports_a_database_from_a_newer_trinity(cli: Cli) -> None:
    sqlite3.connect(cli.db).execute("PRAGMA user_version=999").connection.close()
    result = cli("doctor")
    assert_no_traceback(result)
    assert result.code == 2
    assert "schema 999" in result.stdout and "1 problem(s) found" in result.stderr
    with sqlite3.connect(cli.db) as conn:  # doctor looked without migrating
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 999


def test_a_looping_model_is_stopped_and_the_cli_shows_why(cli: Cli, tmp_path: Path) -> None:
    def plan(step_id: str) -> str:
        step = {
            "id": step_id,
            "tool": "fs.write",
            "args": {"path": "g.txt", "content": "helo"},
            "checks": [{"file_contains": {"path": "g.txt", "text": "hello"}}],
        }
        return json.dumps({"steps": [step]})

    replies = [{"match": {"purpose": "atlas.plan"}, "text": plan("greet")}]
    replies += [
        {"match": {"purpose": "atlas.replan"}, "text": plan(f"greet-{n}")} for n in range(5)
    ]
    script = tmp_path / "loop.yaml"
    script.write_text(yaml.safe_dump({"replies": replies}))
    result = cli.run("Write hello to g.txt", "--model", f"scripted:{script}", "--max-replans", "5")
    assert_no_traceback(result)
    assert result.code == 1
    assert "same_plan x2" in result.stderr  # the live progress line: caught before running
    assert " loop after " in result.stderr  # the report's first line names the stop reason
