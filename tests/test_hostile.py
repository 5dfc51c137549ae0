"""A hostile corpus: inputs an attacker controls (a plan, a policy, a config file, a web page
talking to a local server, a folder swapped under a running tool), each refused with a clear
reason. The sandbox and the secrets have their own files (test_sandbox.py, test_secrets.py)."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_cli import Cli
from trinity.security.inputs import MAX_DEPTH, HostileInputError, load_json, load_yaml
from trinity.state import StepSpec
from trinity.tools.builtin import BUILTIN_SPECS, BuiltinTools, ReadArgs, WriteArgs, beneath
from trinity.tools.builtin_server import build_server, connect_in_process, serve_http
from trinity.tools.permissions import Action, PermissionPolicy, PermissionsError
from trinity.tools.policy_check import check_policy_tools
from trinity.tools.sandbox import Sandbox

ALIAS_BOMB = """\
steps:
  - id: boom
    tool: fs.write
    args:
      path: x.txt
      content: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, db=tmp_path / "trinity.db", ws=tmp_path / "ws")


def _refused(result: Any, *parts: str) -> None:
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


# -- documents ---------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_in_a_plan_is_refused(cli: Cli, tmp_path: Path) -> None:
    plan = tmp_path / "bomb.yaml"
    plan.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 600
    _refused(cli.run(str(plan)), "bomb.yaml:7", "YAML aliases (*a) are not allowed")
    assert cli.rows()["runs"] == 0


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("deep.json", '{"steps": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper"),
        ("deep.yaml", "steps: " + "[" * 50_000 + "]" * 50_000, "nested deeper"),
        (
            "args.json",
            '{"steps": [{"id": "a", "tool": "fs.write", "args": {"x": '
            + "[" * 900
            + "]" * 900
            + "}}]}",
            "nested deeper than 64 levels",
        ),
    ],
)
def test_deep_nesting_is_refused_not_a_crash(
    cli: Cli, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    plan = tmp_path / name
    plan.write_text(text)
    _refused(cli.run(str(plan)), name, expected)


def test_built_in_argument_types_are_checked_before_the_run(cli: Cli, tmp_path: Path) -> None:
    plan = tmp_path / "types.yaml"
    plan.write_text(
        "steps:\n"
        "  - {id: a, tool: fs.write, args: {path: a.txt, content: 5}}\n"
        "  - {id: b, tool: shell.run, args: {command: echo, timeout_s: soon}}\n"
    )
    result = cli.run(str(plan))
    _refused(result, "step 'a': fs.write: content: Input should be a valid string")
    assert "step 'b': shell.run: timeout_s" in result.stderr
    assert cli.rows()["runs"] == 0 and not (tmp_path / "ws" / "a.txt").exists()


def test_the_loaders_refuse_aliases_and_depth_anywhere() -> None:
    with pytest.raises(HostileInputError, match="aliases"):
        load_yaml("a: &x [1]\nb: *x\n")
    with pytest.raises(HostileInputError, match=f"deeper than {MAX_DEPTH}"):
        load_yaml("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    fits = MAX_DEPTH - 1  # the mapping is a level too
    assert load_yaml("a: " + "[" * fits + "]" * fits) is not None
    with pytest.raises(HostileInputError):
        load_json("[" * 5000 + "]" * 5000)
    with pytest.raises(ValueError, match="nested deeper"):  # however the plan was made
        StepSpec(id="a", tool="t", args={"x": _nested(MAX_DEPTH + 1)})


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("filename", "flag", "content", "expected"),
    [
        ("mcp.json", "--mcp", b'{"mcpServers": {"x": {"command": "\xff\xfe"}}}', "not UTF-8"),
        ("mcp.json", "--mcp", b'{"mcpServers": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested"),
        ("perms.yaml", "--permissions", b"default: allow\nrules: \xff\n", "not UTF-8"),
        ("perms.yaml", "--permissions", b"default: &d allow\nrules: []\nx: *d\n", "aliases"),
    ],
)
def test_config_files_that_do_not_decode_give_a_clear_exit_2(
    cli: Cli, tmp_path: Path, filename: str, flag: str, content: bytes, expected: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    _refused(cli.run(_plan(tmp_path), flag, str(path)), expected)


def _plan(folder: Path) -> str:
    plan = folder / "plan.yaml"
    plan.write_text("steps:\n  - {id: a, tool: fs.write, args: {path: a.txt, content: a}}\n")
    return str(plan)


def test_a_trinity_toml_that_is_not_utf8_gives_a_clear_exit_2(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "trinity.toml").write_bytes(b'model = "\xff"\n')
    result = cli("runs", "list")
    _refused(result, "bad configuration")


def test_a_dotenv_readable_by_others_is_refused(cli: Cli, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("OPENAI_API_KEY=sk-from-dotenv-0123456789abcdef\n")
    dotenv.chmod(0o644)
    _refused(cli("runs", "list"), ".env may be read by other users", "chmod 600")
    dotenv.chmod(0o600)
    result = cli("doctor")
    assert "OPENAI_API_KEY" in result.stdout and "set" in result.stdout
    assert "sk-from-dotenv" not in result.stdout + result.stderr


# -- permissions -------------------------------------------------------------------------------

ONLY_APPENDS = PermissionPolicy.from_data(
    {
        "default": "allow",
        "rules": [
            {
                "tool": "fs.write",
                "args": {"append": False},
                "action": "deny",
                "reason": "appends only",
            }
        ],
    }
)
WRITE_SCHEMA = next(spec for spec in BUILTIN_SPECS if spec.name == "fs.write").input_schema


@pytest.mark.parametrize("append", ["(left out)", False, 0, "0", "no", "off", "false", "No", "f"])
def test_a_rule_on_a_boolean_cannot_be_dodged_by_spelling(append: Any) -> None:
    args: dict[str, Any] = {"path": "a.txt", "content": "x"}
    if append != "(left out)":
        args["append"] = append
    # what the tool itself would make of it: a plain write
    assert WriteArgs.model_validate(args).append is False
    decision = ONLY_APPENDS.check("fs.write", args, schema=WRITE_SCHEMA)
    assert decision.action == Action.DENY, (append, decision)


@pytest.mark.parametrize("append", [True, 1, "yes", "on", "true"])
def test_true_spellings_stay_allowed(append: Any) -> None:
    args = {"path": "a.txt", "content": "x", "append": append}
    assert ONLY_APPENDS.check("fs.write", args, schema=WRITE_SCHEMA).action == Action.ALLOW


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"tool": "shell.runn", "action": "deny"}, "did you mean 'shell.run'"),
        ({"tool": "Shell.Run", "action": "deny"}, "did you mean 'shell.run'"),
        (
            {"tool": "shell.run", "args": {"cmd": "rm *"}, "action": "deny"},
            "did you mean 'command'",
        ),
        ({"tool": "fs.*", "args": {"pth": "x"}, "action": "deny"}, "did you mean 'path'"),
        ({"tool": "github.*", "action": "deny"}, "matches no tool"),
    ],
)
def test_a_policy_naming_what_does_not_exist_is_refused(
    rule: dict[str, Any], expected: str
) -> None:
    policy = PermissionPolicy.from_data({"rules": [rule]}, source="perms.yaml")
    with pytest.raises(PermissionsError, match="rule 1") as caught:
        check_policy_tools(policy, list(BUILTIN_SPECS), servers=["everything"])
    assert expected in str(caught.value)


def test_rules_on_a_configured_mcp_server_are_accepted() -> None:
    policy = PermissionPolicy.from_data(
        {
            "rules": [
                {"tool": "everything.echo", "args": {"message": "x"}, "action": "deny"},
                {"tool": "*", "action": "ask"},
            ]
        }
    )
    check_policy_tools(policy, list(BUILTIN_SPECS), servers=["everything"])


def test_a_misspelt_policy_stops_the_cli_before_anything_runs(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "perms.yaml"
    policy.write_text("rules:\n  - tool: shell.runn\n    action: deny\n")
    _refused(cli.run(_plan(tmp_path), "--permissions", str(policy)), "shell.runn", "'shell.run'")
    assert cli.rows()["runs"] == 0


async def test_mcp_serve_applies_a_policy(workspace: Path) -> None:
    policy = PermissionPolicy.from_data(
        {
            "rules": [
                {"tool": "shell.run", "action": "deny", "reason": "no shell here"},
                {"tool": "fs.write", "args": {"path": "secret/**"}, "action": "ask"},
            ]
        }
    )
    server = build_server(workspace, policy=policy, sandbox=Sandbox.off())
    async with connect_in_process(server) as client:
        shell = await client.call_tool("shell.run", {"command": "touch ran"})
        asked = await client.call_tool("fs.write", {"path": "secret/a", "content": "x"})
        fine = await client.call_tool("fs.write", {"path": "ok.txt", "content": "x"})
    assert shell.is_error and "denied by the permission policy: no shell here" in str(shell)
    assert asked.is_error and "nobody to ask" in str(asked)
    assert not fine.is_error
    assert not (workspace / "ran").exists() and not (workspace / "secret").exists()


# -- DNS rebinding -----------------------------------------------------------------------------


def _binds(host: str) -> bool:
    try:
        family, _, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind(address)
        return True
    except OSError:
        return False


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.1",
    "localhost",
    "vm",
    "::1",
    "0:0:0:0:0:0:0:1",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_every_loopback_spelling_refuses_a_foreign_host(workspace: Path, host: str) -> None:
    if not _binds(host):
        pytest.skip(f"{host} cannot be bound on this machine")
    import asyncio

    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_http(host, 0, workspace=workspace, on_ready=ready.set_result))
    try:
        url = await asyncio.wait_for(ready, 10)
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as http:
            for foreign in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
                hit = await http.post(url, json=body, headers={**headers, "Host": foreign})
                assert hit.status_code == 421, (host, foreign, hit.status_code)
            page = await http.post(
                url, json=body, headers={**headers, "Origin": "http://evil.example"}
            )
            assert page.status_code in (403, 421), (host, page.status_code)
            own = await http.post(url, json=body, headers=headers)
            assert own.status_code not in (403, 421), (host, own.status_code)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- the rename-exchange race ------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@pytest.fixture(params=["openat2", "component walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "component walk":
        monkeypatch.setattr(beneath, "_openat2_works", False)
    yield request.param


def test_a_folder_swapped_for_a_symlink_never_lets_a_file_tool_out(
    tmp_path: Path, resolution: str
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("no renameat2 in this libc")
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "dir").mkdir(parents=True)
    outside.mkdir()
    (ws / "dir" / "f").write_text("inside")
    (outside / "f").write_text("OUTSIDE")
    (ws / "link").symlink_to(outside)
    tools = BuiltinTools(ws, sandbox=Sandbox.off())
    a, b = os.fsencode(ws / "dir"), os.fsencode(ws / "link")
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            if libc.renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
                swaps += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    escapes = refusals = 0
    try:
        for i in range(3000):
            try:
                read = tools._read(ReadArgs(path="dir/f"))
                escapes += read.output == "OUTSIDE"
            except (OSError, ValueError):
                refusals += 1
            try:
                tools._write(WriteArgs(path=f"dir/new-{i}", content="x"))
            except (OSError, ValueError):
                refusals += 1
    finally:
        stop.set()
        thread.join(5)
    written_outside = [p.name for p in outside.iterdir() if p.name.startswith("new-")]
    assert swaps > 100, f"the race did not run ({swaps} swaps)"
    assert escapes == 0 and written_outside == [], (escapes, len(written_outside), refusals)


def test_a_database_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    cli = Cli(cwd=tmp_path, db=ws / "runs" / "trinity.db", ws=ws)
    result = cli.run(_plan(tmp_path))
    _refused(result, "is inside the workspace", "a step could rewrite the run's history")
    assert not (ws / "a.txt").exists()
