"""Tool permissions: policy matching, policy files, the audit log, approvals in a run, the CLI."""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trinity.config import Settings
from trinity.errors import ApprovalPendingError, InputError
from trinity.llm.scripted import ScriptedProvider
from trinity.runtime import Runtime
from trinity.state import RunState, StepStatus, StopReason
from trinity.store import Store
from trinity.store.sqlite import MIGRATIONS
from trinity.tools.permissions import (
    Action,
    PermissionPolicy,
    PermissionsError,
    normalise_path,
)

ME = getpass.getuser()

EXAMPLE_POLICY = """\
default: allow            # or ask / deny
rules:
  - tool: "shell.run"
    args: {command: "*rm -rf*"}
    action: deny
    reason: destructive
  - tool: "fs.write"
    args: {path: "!src/**"}      # outside src/ -> ask
    action: ask
  - tool: "everything.*"
    action: allow
"""


def policy(*rules: dict[str, Any], default: str = "allow", **extra: Any) -> PermissionPolicy:
    return PermissionPolicy.from_data({"default": default, "rules": list(rules), **extra})


def action(p: PermissionPolicy, tool: str, workspace: Path | None = None, **args: Any) -> str:
    return p.check(tool, args, workspace=workspace).action.value


# -- matching: tool names ------------------------------------------------------------------------


def test_tool_names_are_case_sensitive_globs_that_cross_dots() -> None:
    p = policy(
        {"tool": "everything.*", "action": "deny"},
        {"tool": "fs.?ead", "action": "ask"},
        default="allow",
    )
    assert action(p, "everything.echo") == "deny"
    assert action(p, "everything.deep.name") == "deny"  # '*' crosses dots in tool names
    assert action(p, "fs.read") == "ask"
    assert action(p, "fs.write") == "allow"
    assert action(p, "Everything.echo") == "allow"  # case matters, as in the tool hub
    assert action(policy({"tool": "*", "action": "deny"}), "any.tool") == "deny"


# -- matching: argument patterns -----------------------------------------------------------------


def test_a_glob_must_match_the_whole_value_and_crosses_everything_outside_paths() -> None:
    p = policy({"tool": "shell.run", "args": {"command": "*rm -rf*"}, "action": "deny"})
    assert action(p, "shell.run", command="rm -rf build") == "deny"
    assert action(p, "shell.run", command="cd a/b\nrm -rf /x/y") == "deny"  # '/' and newlines
    anchored = policy({"tool": "shell.run", "args": {"command": "rm -rf*"}, "action": "deny"})
    assert action(anchored, "shell.run", command="rm -rf build") == "deny"
    assert action(anchored, "shell.run", command="echo hi; rm -rf build") == "allow"


def test_regex_patterns_are_searched_and_can_be_anchored() -> None:
    p = policy(
        {"tool": "shell.run", "args": {"command": r"re:\bcurl\b"}, "action": "deny"},
        {"tool": "fs.read", "args": {"path": r"re:\.env$"}, "action": "deny"},
    )
    assert action(p, "shell.run", command="echo x && curl http://x") == "deny"
    assert action(p, "shell.run", command="echo curly") == "allow"
    assert action(p, "fs.read", path="app/.env") == "deny"
    assert action(p, "fs.read", path="app/.envrc") == "allow"


def test_negation_applies_to_globs_and_regexes() -> None:
    p = policy(
        {"tool": "fs.write", "args": {"path": "!src/**"}, "action": "ask"},
        {"tool": "shell.run", "args": {"command": r"!re:^(ls|pwd)\b"}, "action": "ask"},
    )
    assert action(p, "fs.write", path="src/app/main.py") == "allow"
    assert action(p, "fs.write", path="README.md") == "ask"
    assert action(p, "fs.write", path="srcx/a.py") == "ask"
    assert action(p, "shell.run", command="ls -la") == "allow"
    assert action(p, "shell.run", command="make") == "ask"


def test_path_globs_keep_star_within_a_folder_and_double_star_across() -> None:
    p = policy(
        {"tool": "t", "args": {"path": "src/*"}, "action": "deny"},
        {"tool": "u", "args": {"path": "**/*.py"}, "action": "deny"},
        {"tool": "v", "args": {"note": "src/*"}, "action": "deny"},  # not a path argument
    )
    assert action(p, "t", path="src/a.py") == "deny"
    assert action(p, "t", path="src/pkg/a.py") == "allow"
    assert action(p, "u", path="a.py") == "deny"
    assert action(p, "u", path="x/y/a.py") == "deny"
    assert action(p, "u", path="x/y/a.pyc") == "allow"
    assert action(p, "v", note="src/pkg/a.py") == "deny"


@pytest.mark.parametrize(
    "sneaky",
    [
        "secrets/key",
        "./secrets/key",
        "src/../secrets/key",
        "a/b/../../secrets/key",
        "secrets//key",
        "./src/./../secrets/./key",
    ],
)
def test_path_normalisation_defeats_dot_dot_tricks(sneaky: str) -> None:
    p = policy({"tool": "fs.*", "args": {"path": "secrets/**"}, "action": "deny"})
    assert action(p, "fs.read", path=sneaky) == "deny"


def test_dot_dot_cannot_make_a_path_look_inside_src() -> None:
    p = policy({"tool": "fs.write", "args": {"path": "!src/**"}, "action": "ask"})
    assert normalise_path("./src/../x") == "x"
    assert action(p, "fs.write", path="./src/../x") == "ask"
    assert action(p, "fs.write", path="src/../../etc/passwd") == "ask"
    assert action(p, "fs.write", path="src/a/../b.py") == "allow"
    # the pattern is normalised the same way
    dotted = policy({"tool": "fs.write", "args": {"path": "!./src/**"}, "action": "ask"})
    assert action(dotted, "fs.write", path="src/b.py") == "allow"


def test_with_a_workspace_absolute_paths_and_symlinks_are_resolved(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "secrets").mkdir(parents=True)
    (ws / "innocent").symlink_to(ws / "secrets")
    p = policy({"tool": "fs.*", "args": {"path": "secrets/**"}, "action": "deny"})
    assert action(p, "fs.read", ws, path=str(ws / "secrets" / "key")) == "deny"
    assert action(p, "fs.read", ws, path="innocent/key") == "deny"
    assert action(p, "fs.read", ws, path="innocent/../secrets/key") == "deny"
    assert action(p, "fs.read", ws, path="public/key") == "allow"
    # a path that leaves the workspace is matched as its absolute path
    assert normalise_path("../elsewhere", ws) == str(tmp_path / "elsewhere")


def test_non_string_values_are_matched_on_their_json_text() -> None:
    p = policy(
        {"tool": "fs.write", "args": {"append": True}, "action": "ask"},
        {"tool": "shell.run", "args": {"timeout_s": "re:^[0-9]{4,}"}, "action": "deny"},
        {"tool": "fs.read", "args": {"paths": '*"/etc/*'}, "action": "deny"},
    )
    assert action(p, "fs.write", path="a", append=True) == "ask"
    assert action(p, "fs.write", path="a", append=False) == "allow"
    assert action(p, "shell.run", command="x", timeout_s=3600) == "deny"
    assert action(p, "shell.run", command="x", timeout_s=60) == "allow"
    assert action(p, "fs.read", paths=["a", "/etc/shadow"]) == "deny"
    assert action(p, "fs.read", paths=["a", "b"]) == "allow"


def test_a_missing_argument_is_matched_as_the_empty_string() -> None:
    p = policy(
        {"tool": "fs.list", "args": {"path": "!src/**"}, "action": "ask"},
        {"tool": "shell.run", "args": {"command": "*rm*"}, "action": "deny"},
    )
    assert action(p, "fs.list") == "ask"  # the default '.' is outside src/
    assert action(p, "shell.run") == "allow"
    # an empty path normalises to '.', the folder itself
    root = policy({"tool": "fs.list", "args": {"path": "."}, "action": "deny"})
    assert action(root, "fs.list") == "deny"
    assert action(root, "fs.list", path="./") == "deny"
    assert action(root, "fs.list", path="sub") == "allow"


def test_deny_beats_ask_beats_allow_whatever_the_order() -> None:
    p = policy(
        {"tool": "*", "action": "allow", "reason": "everything"},
        {"tool": "shell.*", "action": "ask", "reason": "shell"},
        {"tool": "shell.run", "args": {"command": "*sudo*"}, "action": "deny", "reason": "root"},
        {"tool": "shell.run", "args": {"command": "*sudo rm*"}, "action": "deny"},
    )
    decision = p.check("shell.run", {"command": "sudo rm x"})
    assert (decision.action, decision.rule, decision.reason) == (Action.DENY, 3, "root")
    decision = p.check("shell.run", {"command": "ls"})
    assert (decision.action, decision.rule, decision.reason) == (Action.ASK, 2, "shell")
    decision = p.check("fs.read", {"path": "a"})
    assert (decision.action, decision.rule) == (Action.ALLOW, 1)


@pytest.mark.parametrize("default", ["allow", "ask", "deny"])
def test_the_default_decides_when_no_rule_matches(default: str) -> None:
    p = policy({"tool": "fs.read", "action": "allow"}, default=default)
    decision = p.check("shell.run", {"command": "ls"})
    assert decision.action == default and decision.rule is None
    assert f"default is {default}" in decision.reason
    assert action(p, "fs.read", path="x") == "allow"
    assert PermissionPolicy.from_data({}).default == Action.ALLOW


def test_a_rule_without_a_reason_describes_itself() -> None:
    p = policy({"tool": "fs.write", "args": {"path": "!src/**"}, "action": "ask"})
    assert p.check("fs.write", {"path": "x"}).reason == "rule 1: fs.write path='!src/**'"


def test_extra_path_arguments_get_path_semantics() -> None:
    rule = {"tool": "t", "args": {"target": "out/*"}, "action": "deny"}
    plain = policy(rule)
    assert action(plain, "t", target="./out/a") == "allow"  # not a path: no normalising
    extended = policy(rule, path_args=["target"])
    assert action(extended, "t", target="./out/a") == "deny"
    assert action(extended, "t", target="out/a/b") == "allow"  # '*' stays in one folder


def test_a_policy_round_trips_through_data() -> None:
    original = PermissionPolicy.from_data(
        {**yaml.safe_load(EXAMPLE_POLICY), "path_args": ["target"]}
    )
    again = PermissionPolicy.from_data(json.loads(json.dumps(original.to_data())))
    calls = [
        ("shell.run", {"command": "echo; rm -rf x"}),
        ("fs.write", {"path": "./src/../x"}),
        ("fs.write", {"path": "src/x"}),
        ("everything.echo", {}),
        ("fs.read", {"target": "a"}),
    ]
    assert [again.check(*c) for c in calls] == [original.check(*c) for c in calls]
    assert [d.action.value for d in (original.check(*c) for c in calls)] == [
        "deny",
        "ask",
        "allow",
        "allow",
        "allow",
    ]


# -- shell metacharacters: what a naive pattern misses --------------------------------------------

# How a policy author catches recursive deletes hidden in compound commands: a regex searched
# anywhere (not a glob anchored at the start), on the word `rm` followed - within the same simple
# command - by a recursive flag in any spelling. Plus, as a second line of defence, a person
# looks at any command that uses shell metacharacters at all.
SHELL_POLICY = r"""
default: allow
rules:
  - tool: shell.run
    args: {command: 're:\brm\b[^;&|`\n)]*\s-(-recursive\b|[a-zA-Z]*[rR])'}
    action: deny
    reason: recursive delete
  - tool: shell.run
    args: {command: 're:[;&|`$<>\n]'}
    action: ask
    reason: compound command
"""

# Each hides a recursive delete behind a shell metacharacter and spells the flags so that the
# obvious pattern, "*rm -rf*", does not see it. Targets stay inside a test workspace.
HOSTILE = [
    "echo ok;rm -fr keep",  # ';' and flags swapped
    "true && rm -r -f keep",  # '&&' and split flags
    "echo $(rm  -rf keep)",  # '$(...)' and two spaces
    "echo `rm -Rf keep`",  # backticks and a capital R
    "ls | xargs rm --recursive --force keep",  # '|' and long options
    "false || \\rm -rf keep",  # '||' and a backslash to dodge aliases
]
BENIGN = ["ls -la", "rm notes.txt", "echo format -r", "python3 -m pytest -q"]


def test_a_naive_pattern_misses_every_hostile_command() -> None:
    naive = policy({"tool": "shell.run", "args": {"command": "*rm -rf*"}, "action": "deny"})
    missed = [c for c in HOSTILE if action(naive, "shell.run", command=c) != "deny"]
    assert len(missed) >= 5, missed
    anchored = policy({"tool": "shell.run", "args": {"command": "rm -rf*"}, "action": "deny"})
    assert all(action(anchored, "shell.run", command=c) == "allow" for c in HOSTILE)


@pytest.mark.parametrize("command", HOSTILE)
def test_the_recommended_rules_deny_every_hostile_command(command: str) -> None:
    p = PermissionPolicy.from_data(yaml.safe_load(SHELL_POLICY))
    decision = p.check("shell.run", {"command": command})
    assert (decision.action, decision.rule) == (Action.DENY, 1)
    # and the metacharacter rule alone would still have sent it to a person
    only_ask = PermissionPolicy.from_data({"rules": [p.to_data()["rules"][1]]})
    assert action(only_ask, "shell.run", command=command) == "ask"


@pytest.mark.parametrize("command", BENIGN)
def test_the_recommended_rules_let_plain_commands_run(command: str) -> None:
    p = PermissionPolicy.from_data(yaml.safe_load(SHELL_POLICY))
    assert action(p, "shell.run", command=command) == "allow"


# -- policy files: errors name the file, the rule and the field ---------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - tool: fs.read\n    action: allow\n"
            "  - tool: shell.run\n    action: block\n",
            "perms.yaml:4: rule 2: action: must be one of allow, ask, deny (got 'block')",
        ),
        ("rules:\n  - action: deny\n", "perms.yaml:2: rule 1: tool: required"),
        ("rules:\n  - tool: x\n", "perms.yaml:2: rule 1: action: required"),
        ("rules:\n  - tool: ''\n    action: deny\n", "rule 1: tool: must be a non-empty string"),
        (
            "rules:\n  - tool: x\n    action: deny\n    reasn: typo\n",
            "perms.yaml:2: rule 1: unknown field 'reasn'",
        ),
        (
            "rules:\n  - {tool: a, action: allow}\n  - {tool: b, action: allow}\n"
            "  - tool: shell.run\n    args: {command: 're:(unclosed'}\n    action: deny\n",
            "perms.yaml:4: rule 3: args.command: bad regular expression '(unclosed'",
        ),
        (
            "rules:\n  - tool: x\n    args: [command]\n    action: deny\n",
            "rule 1: args: must be a mapping of argument name to pattern",
        ),
        (
            "rules:\n  - tool: x\n    args: {command: [a, b]}\n    action: deny\n",
            "rule 1: args.command: a pattern must be a string",
        ),
        ("rules:\n  - just a string\n", "rule 1: must be a mapping with 'tool' and 'action'"),
        ("default: maybe\nrules: []\n", "perms.yaml: default: must be one of allow, ask, deny"),
        ("rules: {tool: x}\n", "perms.yaml: rules: must be a list of rules"),
        ("rulez: []\n", "perms.yaml: unknown field 'rulez'"),
        ("- tool: x\n", "perms.yaml: a permission policy must be a mapping"),
        ("rules:\n  - tool: x\n   action: deny\n", "perms.yaml:3: not valid YAML"),
        ("", "perms.yaml: the file is empty"),
    ],
)
def test_policy_file_errors_name_file_rule_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("perms.yaml").write_text(text)
    with pytest.raises(PermissionsError) as caught:
        PermissionPolicy.load("perms.yaml")
    assert expected in str(caught.value)
    assert isinstance(caught.value, InputError)


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PermissionsError, match=r"nope\.yaml: file not found"):
        PermissionPolicy.load(tmp_path / "nope.yaml")


def test_errors_in_a_policy_given_as_data_name_the_source() -> None:
    with pytest.raises(PermissionsError) as caught:
        PermissionPolicy.from_data(
            {"rules": [{"tool": "x", "action": "nope"}]}, source="trinity.toml [permissions]"
        )
    assert str(caught.value).startswith("trinity.toml [permissions]: rule 1: action: ")
    assert (caught.value.rule, caught.value.field) == (1, "action")


# -- the store: audit log and approvals -----------------------------------------------------------


def test_a_version_1_database_is_migrated_with_its_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version=1; COMMIT;")
    conn.execute(
        "INSERT INTO runs (id, task, workspace, status, created_at) "
        "VALUES ('r1', 'old', '/w', 'succeeded', 1)"
    )
    conn.commit()
    conn.close()
    store = Store.open(str(path))
    try:
        assert store.get_run("r1")["task"] == "old"
        store.add_audit("r1", "s", "fs.write", {"path": "x"}, "allow", None, "ok", "policy")
        assert store.list_audit("r1")[0]["args"] == {"path": "x"}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 2
    finally:
        conn.close()


async def test_an_approval_is_recorded_once_and_the_first_decision_stands(store: Store) -> None:
    assert await store.set_approval("r", "s", 1, "approve", "ann", "ok", revision=0)
    assert not await store.set_approval("r", "s", 1, "deny", "bob", revision=0)
    row = store.get_approval("r", "s", 1, revision=0)
    assert (row["decision"], row["actor"], row["note"]) == ("approve", "ann", "ok")
    assert store.get_approval("r", "s", 2, revision=0) is None
    assert store.get_approval("r", "s", 1, revision=1) is None  # a replanned step is new
    # durable: another connection sees it at once
    other = Store.open(str(store.path))
    try:
        assert other.get_approval("r", "s", 1)["actor"] == "ann"
    finally:
        other.close()


async def test_audit_rows_come_back_in_order(store: Store) -> None:
    for decision in ("allow", "ask", "approve"):
        store.add_audit("r", "s", "t", {"n": 1}, decision, 2, "why", "policy")
    await store.writer.flush()
    assert [r["decision"] for r in store.list_audit("r")] == ["allow", "ask", "approve"]
    assert store.list_audit("other") == []


# -- in a run: plan files and the real built-in tools ------------------------------------------

PERMISSIONS = """\
default: allow
rules:
  - tool: shell.run
    args: {command: "*rm -rf*"}
    action: deny
    reason: destructive
  - tool: fs.write
    args: {path: "!src/**"}
    action: ask
    reason: writes outside src/
"""


def write_plan(tmp_path: Path, name: str, steps: list[dict[str, Any]]) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"task": name, "steps": steps}))
    return str(path)


def write_policy(tmp_path: Path, text: str = PERMISSIONS) -> Path:
    path = tmp_path / "perms.yaml"
    path.write_text(text)
    return path


async def start(settings: Settings, plan: str, perms: Path) -> RunState:
    runtime = Runtime(settings)
    try:
        return await runtime.start(runtime.prepare(plan, permissions_file=perms))
    finally:
        runtime.close()


async def decide(settings: Settings, run_id: str, verb: str, note: str | None = None) -> RunState:
    runtime = Runtime(settings)  # a fresh runtime, as a later process would be: no policy given
    try:
        return await getattr(runtime, verb)(run_id, note)
    finally:
        runtime.close()


def audit(settings: Settings, run_id: str) -> list[tuple[str, str | None, str]]:
    store = Store.open(settings.database_url)
    try:
        return [(r["decision"], r["step_id"], r["actor"]) for r in store.list_audit(run_id)]
    finally:
        store.close()


WRITE_OUTSIDE = {
    "id": "notes",
    "tool": "fs.write",
    "args": {"path": "./src/../notes.txt", "content": "approved line\n", "append": True},
    "checks": [{"file_contains": {"path": "notes.txt", "text": "approved line"}}],
}
WRITE_INSIDE = {
    "id": "code",
    "tool": "fs.write",
    "args": {"path": "src/app.py", "content": "print(1)\n"},
    "checks": [{"file_exists": "src/app.py"}],
}


async def test_a_denied_shell_command_is_never_run(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    canary = workspace / "canary.txt"
    canary.write_text("still here")
    plan = write_plan(
        tmp_path,
        "wipe",
        [
            {"id": "look", "tool": "shell.run", "args": {"command": "ls > seen.txt"}},
            {"id": "wipe", "tool": "shell.run", "args": {"command": "rm -rf *"}},
        ],
    )
    state = await start(settings, plan, write_policy(tmp_path))

    assert state.stop_reason == StopReason.FAILED, state.stop_detail
    assert canary.read_text() == "still here"
    assert (workspace / "seen.txt").exists()  # the allowed step ran
    wipe = state.plan.steps[1]
    assert wipe.status == StepStatus.FAILED and len(wipe.attempts) == 1  # no retry of a denial
    attempt = wipe.attempts[0]
    assert attempt.denied and attempt.result.error == "denied by policy: destructive"
    assert attempt.verdict.summary == "denied by policy: destructive"
    assert state.counters.tool_calls == 1  # only "look" reached the tool
    assert audit(settings, state.run_id) == [
        ("allow", "look", "policy"),
        ("deny", "wipe", "policy"),
    ]


async def test_ask_pauses_the_run_and_approve_makes_the_call_exactly_once(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    plan = write_plan(tmp_path, "notes", [WRITE_INSIDE, WRITE_OUTSIDE])
    state = await start(settings, plan, write_policy(tmp_path))

    assert state.stop_reason == StopReason.AWAITING_APPROVAL, state.stop_detail
    assert state.status == "awaiting_approval"
    assert not (workspace / "notes.txt").exists()
    assert (workspace / "src" / "app.py").exists()
    pending = state.pending_approval
    assert (pending.step_id, pending.attempt, pending.tool, pending.rule) == (
        "notes",
        1,
        "fs.write",
        2,
    )
    assert pending.args == WRITE_OUTSIDE["args"] and pending.reason == "writes outside src/"
    assert state.plan.steps[1].status == StepStatus.PENDING and not state.plan.steps[1].attempts
    store = Store.open(settings.database_url)
    try:
        row = store.get_run(state.run_id)
        assert row["status"] == "awaiting_approval"
        assert f"trinity runs approve {state.run_id}" in row["report"]
        assert store.count("lessons") == 0  # a paused run has not ended: nothing learned yet
    finally:
        store.close()

    # resuming without a decision is refused, and changes nothing
    runtime = Runtime(settings)
    try:
        with pytest.raises(ApprovalPendingError, match="runs approve"):
            await runtime.resume(state.run_id)
    finally:
        runtime.close()

    done = await decide(settings, state.run_id, "approve", "looks fine")
    assert done.stop_reason == StopReason.COMPLETED, done.stop_detail
    assert done.run_id == state.run_id and done.pending_approval is None
    assert (workspace / "notes.txt").read_text() == "approved line\n"  # appended once
    assert [len(s.attempts) for s in done.plan.steps] == [1, 1]
    assert audit(settings, state.run_id) == [
        ("allow", "code", "policy"),
        ("ask", "notes", "policy"),
        ("approve", "notes", ME),
    ]
    store = Store.open(settings.database_url)
    try:
        approval = store.get_approval(state.run_id, "notes", 1)
        assert (approval["decision"], approval["actor"], approval["note"]) == (
            "approve",
            ME,
            "looks fine",
        )
        assert store.get_run(state.run_id)["status"] == "succeeded"
    finally:
        store.close()

    with pytest.raises(InputError, match="not awaiting approval"):
        await decide(settings, state.run_id, "approve")


async def test_deny_by_a_person_fails_the_step_without_the_call(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    plan = write_plan(tmp_path, "notes", [WRITE_OUTSIDE])
    state = await start(settings, plan, write_policy(tmp_path))
    assert state.stop_reason == StopReason.AWAITING_APPROVAL

    done = await decide(settings, state.run_id, "deny", "not in my repo")
    assert done.stop_reason == StopReason.FAILED
    assert not (workspace / "notes.txt").exists()
    step = done.plan.steps[0]
    assert step.status == StepStatus.FAILED and len(step.attempts) == 1
    assert step.attempts[0].denied
    assert step.attempts[0].result.error == f"denied by {ME}: not in my repo"
    assert f"denied by {ME}" in step.attempts[0].verdict.summary
    assert f"denied by {ME}" in done.stop_detail
    assert done.counters.tool_calls == 0
    assert audit(settings, state.run_id) == [("ask", "notes", "policy"), ("deny", "notes", ME)]


async def test_an_approval_covers_one_call_only(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    # The check fails after the approved call, so the Meta-Planner retries the step: the
    # retry is a new call and needs a new decision.
    step = {**WRITE_OUTSIDE, "checks": [{"file_contains": {"path": "notes.txt", "text": "nope"}}]}
    state = await start(settings, write_plan(tmp_path, "notes", [step]), write_policy(tmp_path))
    first = await decide(settings, state.run_id, "approve")

    assert first.stop_reason == StopReason.AWAITING_APPROVAL
    assert first.pending_approval.attempt == 2
    assert (workspace / "notes.txt").read_text() == "approved line\n"  # the approved call, once

    last = await decide(settings, state.run_id, "deny")
    assert last.stop_reason == StopReason.FAILED
    assert (workspace / "notes.txt").read_text() == "approved line\n"
    assert [d for d, _, _ in audit(settings, state.run_id)] == [
        "ask",
        "approve",
        "ask",
        "deny",
    ]


async def test_a_decision_recorded_by_a_process_that_died_is_acted_on_by_resume(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    plan = write_plan(tmp_path, "notes", [WRITE_OUTSIDE])
    state = await start(settings, plan, write_policy(tmp_path))
    store = Store.open(settings.database_url)
    try:  # the decision is stored, then that process dies before it continues the run
        assert await store.set_approval(state.run_id, "notes", 1, "approve", "ann")
    finally:
        store.close()

    with pytest.raises(InputError, match="already decided"):
        await decide(settings, state.run_id, "deny")
    runtime = Runtime(settings)
    try:
        done = await runtime.resume(state.run_id)
    finally:
        runtime.close()
    assert done.stop_reason == StopReason.COMPLETED, done.stop_detail
    assert (workspace / "notes.txt").read_text() == "approved line\n"


@pytest.mark.parametrize("command", HOSTILE)
async def test_hostile_commands_are_denied_in_a_real_run(
    tmp_path: Path, settings: Settings, workspace: Path, command: str
) -> None:
    keep = workspace / "keep"
    keep.mkdir()
    (keep / "canary.txt").write_text("alive")
    plan = write_plan(
        tmp_path, "hostile", [{"id": "x", "tool": "shell.run", "args": {"command": command}}]
    )
    state = await start(settings, plan, write_policy(tmp_path, SHELL_POLICY))
    assert state.stop_reason == StopReason.FAILED
    assert state.plan.steps[0].attempts[0].result.error == "denied by policy: recursive delete"
    assert (keep / "canary.txt").read_text() == "alive"


async def test_the_meta_planner_replans_around_a_denied_step(
    settings: Settings, workspace: Path
) -> None:
    def reply(purpose: str, value: object) -> dict[str, object]:
        return {"match": {"purpose": purpose}, "text": json.dumps(value)}

    wipe = {"steps": [{"id": "clean", "tool": "shell.run", "args": {"command": "rm -rf *"}}]}
    tidy = {
        "steps": [
            {
                "id": "clean-2",
                "tool": "shell.run",
                "args": {"command": "rm -f tmp.log"},
                "checks": [{"exit_code": 0}],
            }
        ]
    }
    (workspace / "tmp.log").write_text("x")
    (workspace / "canary.txt").write_text("alive")
    llm = ScriptedProvider(
        [
            reply("atlas.plan", wipe),
            reply("atlas.replan", tidy),
            reply("grisha.judge", {"passed": True, "reason": "log removed"}),
        ]
    )
    deny_wipes = policy(
        {
            "tool": "shell.run",
            "args": {"command": "*rm -rf*"},
            "action": "deny",
            "reason": "destructive",
        }
    )
    runtime = Runtime(settings, llm=llm, permissions=deny_wipes)
    try:
        state = await runtime.start(runtime.prepare("Clean up the workspace", model="scripted:t"))
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.COMPLETED, state.stop_detail
    assert state.counters.replans == 1 and state.counters.retries == 0
    assert (workspace / "canary.txt").exists() and not (workspace / "tmp.log").exists()
    assert "denied by policy: destructive" in llm.requests[1].messages[-1].content


async def test_a_policy_from_settings_is_loaded_in_prepare(
    tmp_path: Path, settings: Settings, workspace: Path
) -> None:
    plan = write_plan(tmp_path, "notes", [WRITE_OUTSIDE])
    inline = settings.model_copy(
        update={"permissions": {"rules": [{"tool": "fs.write", "action": "deny"}]}}
    )
    runtime = Runtime(inline)
    try:
        state = await runtime.start(runtime.prepare(plan))
    finally:
        runtime.close()
    assert state.plan.steps[0].attempts[0].result.error == "denied by policy: rule 1: fs.write"

    from_file = settings.model_copy(update={"permissions_file": write_policy(tmp_path)})
    runtime = Runtime(from_file)
    try:
        state = await runtime.start(runtime.prepare(plan))
    finally:
        runtime.close()
    assert state.stop_reason == StopReason.AWAITING_APPROVAL


def test_trinity_toml_can_carry_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("trinity.toml").write_text(
        '[permissions]\ndefault = "ask"\n\n'
        '[[permissions.rules]]\ntool = "fs.read"\naction = "allow"\n\n'
        '[[permissions.rules]]\ntool = "fs.write"\nargs = {path = "re:\\\\.env$"}\n'
        'action = "deny"\nreason = "no secrets"\n'
    )
    plan = write_plan(tmp_path, "notes", [WRITE_OUTSIDE])
    runtime = Runtime(Settings(database_url=str(tmp_path / "toml.db"), workspace=workspace))
    try:
        found = runtime.prepare(plan).permissions
    finally:
        runtime.close()
    assert found is not None and found.default == Action.ASK
    assert found.check("fs.write", {"path": "app/.env"}).reason == "no secrets"
    assert found.check("fs.read", {"path": "x"}).action == Action.ALLOW

    Path("trinity.toml").write_text('[[permissions.rules]]\ntool = "x"\naction = "perhaps"\n')
    runtime = Runtime(Settings(database_url=str(tmp_path / "toml.db"), workspace=workspace))
    try:
        with pytest.raises(PermissionsError, match=r"trinity\.toml.*: rule 1: action"):
            runtime.prepare(plan)
    finally:
        runtime.close()


async def test_a_bad_policy_is_refused_before_anything_is_stored(
    tmp_path: Path, settings: Settings
) -> None:
    plan = write_plan(tmp_path, "notes", [WRITE_OUTSIDE])
    bad = write_policy(tmp_path, "rules:\n  - tool: fs.write\n    action: sometimes\n")
    runtime = Runtime(settings)
    try:
        with pytest.raises(PermissionsError, match=r"perms\.yaml:2: rule 1: action"):
            runtime.prepare(plan, permissions_file=bad)
        assert runtime.store.count("runs") == 0
    finally:
        runtime.close()


# -- the CLI ---------------------------------------------------------------------------------------

_script = Path(sys.executable).with_name("trinity")
TRINITY = [str(_script)] if _script.exists() else [sys.executable, "-m", "trinity"]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
    env["COLUMNS"] = "500"
    return subprocess.run(
        [*TRINITY, *args, "--db", str(tmp_path / "cli.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_run_waits_for_approval_then_approve_completes_it(tmp_path: Path) -> None:
    ws = tmp_path / "cliws"
    plan = write_plan(tmp_path, "notes", [WRITE_INSIDE, WRITE_OUTSIDE])
    perms = write_policy(tmp_path)

    ran = cli(tmp_path, "run", plan, "-w", str(ws), "--permissions", str(perms))
    assert ran.returncode == 3, ran.stderr
    run_id = json.loads(cli(tmp_path, "runs", "list", "--json").stdout)[0]["id"]
    assert "awaiting approval" in ran.stderr and "writes outside src/" in ran.stderr
    assert f"trinity runs approve {run_id}" in ran.stderr
    assert f"trinity runs deny {run_id}" in ran.stderr
    assert not (ws / "notes.txt").exists()

    resumed = cli(tmp_path, "runs", "resume", run_id)
    assert resumed.returncode == 3 and "runs approve" in resumed.stderr
    assert "Traceback" not in resumed.stderr

    approved = cli(tmp_path, "runs", "approve", run_id, "--note", "ok by me")
    assert approved.returncode == 0, approved.stderr
    assert (ws / "notes.txt").read_text() == "approved line\n"

    rows = json.loads(cli(tmp_path, "runs", "audit", run_id, "--json").stdout)
    assert [(r["decision"], r["actor"]) for r in rows] == [
        ("allow", "policy"),
        ("ask", "policy"),
        ("approve", ME),
    ]
    assert rows[2]["reason"] == "ok by me" and rows[1]["rule"] == 2
    table = cli(tmp_path, "runs", "audit", run_id)
    assert table.returncode == 0 and "approve" in table.stdout

    again = cli(tmp_path, "runs", "approve", run_id)
    assert again.returncode == 2 and "not awaiting approval" in again.stderr


def test_cli_deny_fails_the_run_and_a_bad_policy_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "cliws"
    plan = write_plan(tmp_path, "notes", [WRITE_OUTSIDE])
    ran = cli(tmp_path, "run", plan, "-w", str(ws), "--permissions", str(write_policy(tmp_path)))
    assert ran.returncode == 3, ran.stderr
    run_id = json.loads(cli(tmp_path, "runs", "list", "--json").stdout)[0]["id"]
    denied = cli(tmp_path, "runs", "deny", run_id, "--note", "no")
    assert denied.returncode == 1
    assert f"denied by {ME}: no" in denied.stderr
    assert not (ws / "notes.txt").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - tool: fs.write\n    action: allow\n  - tool: x\n    actoin: deny\n")
    refused = cli(tmp_path, "run", plan, "-w", str(ws), "--permissions", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {bad}:4: rule 2: unknown field 'actoin' (expected tool, args, action, reason)"
    ]


def test_atlas_is_told_the_policy_and_not_offered_denied_tools() -> None:
    from trinity.agents.context import describe_tools
    from trinity.tools.builtin import BUILTIN_SPECS

    policy = PermissionPolicy.from_data(
        {
            "default": "allow",
            "rules": [
                {"tool": "python.run", "action": "deny", "reason": "no code"},
                {"tool": "shell.run", "args": {"command": "re:\\brm\\b"}, "action": "deny"},
                {"tool": "fs.write", "args": {"path": "!src/**"}, "action": "ask"},
            ],
        }
    )
    text = describe_tools(list(BUILTIN_SPECS), policy)
    assert "- python.run:" not in text  # every call denied: not offered at all
    shell = next(line for line in text.splitlines() if line.startswith("- shell.run:"))
    assert "[denied when command=" in shell
    write = next(line for line in text.splitlines() if line.startswith("- fs.write:"))
    assert "[needs a person's approval when path='!src/**']" in write
    read = next(line for line in text.splitlines() if line.startswith("- fs.read:"))
    assert read.endswith(")")  # no rule concerns it: no note after its arguments
