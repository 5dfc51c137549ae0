"""Secrets never spread: planted in the environment of a real ``trinity`` process whose steps
try every way to print them, they reach neither the database file, nor ``runs show`` /
``runs trace``, nor lessons, nor what a (fake, local) model server receives, nor the terminal.
Also: the redaction pass and the registry on their own, and the database's file modes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from llm_server import FakeLLMServer, Reply, fake_llm_server  # noqa: F401
from test_cli import TRINITY, Cli, clean_env
from trinity.security.env import child_environment, looks_secret, register_environment
from trinity.security.secrets import REDACTED, SecretRegistry
from trinity.store import Store

PLANTED = {
    # named like secrets
    "OPENAI_COMPATIBLE_API_KEY": "sk-planted0provider0key0a1b2c3d4",
    "MY_SERVICE_TOKEN": "tok_planted_9f8e7d6c5b4a",
    "MY_DB_PASS": "correct-horse-battery-staple",
    # named like anything else
    "DATABASE_URL": "postgres://app:pl4nted-db-pw@db.internal:5432/app",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0PLANT/B0PLANT/xYz123PlantedHook",
    "OPAQUE_VALUE": "Zq8xP2mV9kL4wR7tPlanted",
}
"""What must never be seen again; the URL's password is the secret part of DATABASE_URL."""
NEEDLES = [
    "sk-planted0provider0key0a1b2c3d4",
    "tok_planted_9f8e7d6c5b4a",
    "correct-horse-battery-staple",
    "pl4nted-db-pw",
    "xYz123PlantedHook",
    "Zq8xP2mV9kL4wR7tPlanted",
]

LEAKY_PLAN = {
    "rationale": "print the environment every way there is",
    "steps": [
        {
            "id": "env",
            "tool": "shell.run",
            "args": {"command": "env; cat /proc/$PPID/environ | tr '\\0' '\\n'; true"},
            "checks": [{"exit_code": 0}],
        },
        {
            "id": "every-environ",
            "tool": "shell.run",
            "args": {"command": "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; true"},
            "checks": [{"exit_code": 0}],
        },
        {
            "id": "python",
            "tool": "python.run",
            "args": {
                "code": "import os\nprint(dict(os.environ))\n"
                "print(open(f'/proc/{os.getppid()}/environ').read())\n"
            },
            "checks": [{"exit_code": 0}],
        },
        {
            "id": "write",
            "tool": "shell.run",
            "args": {"command": "cat /proc/$PPID/environ > env.txt; true"},
            "checks": [{"exit_code": 0}],
        },
        {
            "id": "read-back",
            "tool": "fs.read",
            "args": {"path": "env.txt"},
            "checks": [],
        },
    ],
}


def _judgement() -> Reply:
    return Reply(json.dumps({"passed": True, "reason": "fine"}))


def _context(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    for needle in NEEDLES:
        at = data.find(needle.encode())
        if at >= 0:
            return repr(data[max(0, at - 300) : at + 60])
    return ""


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [needle for needle in NEEDLES if needle.encode() in data]


@pytest.mark.parametrize("sandbox", ["off", "strict"])
def test_planted_secrets_reach_no_store_output_trace_lesson_or_model(
    tmp_path: Path,
    fake_llm_server: FakeLLMServer,  # noqa: F811
    sandbox: str,
) -> None:
    cli = Cli(cwd=tmp_path, db=tmp_path / "data" / "trinity.db", ws=tmp_path / "ws")
    fake_llm_server.script(Reply(json.dumps(LEAKY_PLAN)), *[_judgement() for _ in range(20)])
    model = f"openai-compatible:{fake_llm_server.openai_base_url}#planted-model"
    env = clean_env(**PLANTED, TRINITY_SANDBOX=sandbox)
    record = tmp_path / "recorded.yaml"
    # Without the sandbox a model's plan that reads /proc would wait for approval (the default
    # policy for unsandboxed model plans): this test wants it to run, so it allows everything.
    allow_all = tmp_path / "allow.yaml"
    allow_all.write_text("default: allow\n")
    run = cli.run(
        "print the environment",
        *("--model", model, "--json", "--record", str(record)),
        *("--permissions", str(allow_all)),
        env=env,
    )
    assert run.code == 0, run.stdout
    run_id = json.loads(run.stdout)["run_id"]
    if sandbox == "off":  # the steps did see them: what follows is the redaction's doing
        show_raw = (tmp_path / "ws" / "env.txt").read_bytes()
        assert _leaks(show_raw), "the plan did not reach the secrets; the test proves nothing"

    show = cli("runs", "show", run_id, "--json", env=clean_env())
    trace = cli("runs", "trace", run_id, "--json", env=clean_env())
    assert show.code == 0 and trace.code == 0
    assert REDACTED in show.stdout or sandbox == "strict"
    files = [p for p in (tmp_path / "data").iterdir() if p.is_file()]
    assert files, "no database written"
    for surface, text in [
        ("run output", run.stdout + run.stderr),
        ("runs show --json", show.stdout + show.stderr),
        ("runs trace --json", trace.stdout + trace.stderr),
        *[(f"file {p.name}", p.read_bytes()) for p in files],
        ("recorded LLM traffic", record.read_bytes()),
        # (the provider's own key goes in the Authorization header, as it must: bodies only)
        *[
            (f"model request {i}", json.dumps(r.body))
            for i, r in enumerate(fake_llm_server.requests)
        ],
    ]:
        assert _leaks(text) == [], f"{surface} holds planted secrets: {_context(text)}"

    # A later run, with no secret in its environment, gets the lessons of this one.
    fake_llm_server.unscript()
    fake_llm_server.script(Reply(json.dumps(LEAKY_PLAN)), *[_judgement() for _ in range(20)])
    before = len(fake_llm_server.requests)
    again = cli.run("print the environment again", "--model", model, "--json", env=clean_env())
    assert again.code == 0, again.stderr
    later = fake_llm_server.requests[before:]
    assert later and "A plan that worked" in json.dumps(later[0].body)
    for request in later:
        assert _leaks(json.dumps(request.body)) == []
    store = Store(cli.db)
    try:
        lessons = store.search_lessons("print the environment", limit=20)
        assert lessons
        assert _leaks("\n".join(lesson.text for lesson in lessons)) == []
    finally:
        store.close()


def test_the_database_and_its_folder_are_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "new" / "trinity.db")
    store.close()
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "trinity.db").stat().st_mode) == 0o600


def test_redaction_of_values_and_shapes() -> None:
    registry = SecretRegistry()
    registry.add("short")  # too short to register: it would redact ordinary words
    registry.add('quo"ted\\value-123')
    assert len(registry) >= 1
    text = (
        "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv and sk-proj-AbCdEfGhIjKlMnOpQrSt1234, "
        "gh ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789, aws AKIAIOSFODNN7EXAMPLE, "
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY1, "
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig, "
        "db postgres://bob:hunter2pw@db/x, short stays, "
        'json "quo\\"ted\\\\value-123" and raw quo"ted\\value-123'
    )
    out = registry.redact(text)
    for gone in (
        "AbCdEfGhIjKlMnOpQrStUv",
        "ghp_AbCd",
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI",
        "eyJhbGciOiJIUzI1NiJ9",
        "hunter2pw",
        "ted\\value-123",
        "ted\\\\value-123",
    ):
        assert gone not in out, (gone, out)
    assert "Authorization: Bearer [REDACTED]" in out
    assert "postgres://bob:[REDACTED]@db/x" in out
    assert "short stays" in out
    private_key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    assert registry.redact(f"x {private_key} y") == f"x {REDACTED} y"
    assert registry.redact_data({"a": ["sk-ant-AbCdEfGhIjKlMnOpQrStUv", 3]}) == {"a": [REDACTED, 3]}


def test_a_remembered_redaction_never_outlives_a_new_secret() -> None:
    """Short texts are remembered with their redaction (labels, names): a secret registered
    later is still taken out of a text remembered before it."""
    registry = SecretRegistry()
    label = "model openai:gpt-4o via tenant-Zq8xP2mV9k"
    assert registry.redact(label) == label
    assert registry.redact(label) == label  # remembered
    registry.add("tenant-Zq8xP2mV9k", "test")
    assert registry.redact(label) == f"model openai:gpt-4o via {REDACTED}"
    long_text = "x" * 300 + " tenant-Zq8xP2mV9k"  # past the remembered length: searched each time
    assert registry.redact(long_text).endswith(REDACTED)


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("DATABASE_URL", "postgres://app:pw@db/app", True),
        ("MY_DB_PASS", "plainwordpassword", True),
        ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/abc", True),
        ("OPAQUE", "Zq8xP2mV9kL4wR7t", True),
        ("PWD", "/work/project", False),
        ("VIRTUAL_ENV", "/work/project/.venv", False),
        ("DEBIAN_FRONTEND", "noninteractive", False),
        ("SHLVL", "1", False),
    ],
)
def test_which_removed_variables_count_as_secrets(name: str, value: str, secret: bool) -> None:
    assert looks_secret(name, value) is secret


def test_removed_variables_are_registered_and_allowed_ones_are_not() -> None:
    from trinity.security.secrets import SECRETS

    environ = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MY_TOKEN": "abcdef123456xyz"}
    assert child_environment((), environ) == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    register_environment((), environ)
    assert SECRETS.redact("abcdef123456xyz") == REDACTED
    assert "environment variable MY_TOKEN" in SECRETS.sources()


# -- the keyring ---------------------------------------------------------------------------------


def _keyring_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), tests) if p)
    settings = {
        "PYTHONPATH": path,
        "PYTHON_KEYRING_BACKEND": "keyring_backend.FileKeyring",
        "TRINITY_TEST_KEYRING": str(tmp_path / "keyring.json"),
    }
    return clean_env(**{**settings, **extra})


def test_secrets_in_the_keyring_are_stored_listed_used_and_deleted(tmp_path: Path) -> None:
    cli = Cli(cwd=tmp_path, db=tmp_path / "trinity.db", ws=tmp_path / "ws")
    key = "sk-keyring0stored0key0123456789"
    env = _keyring_env(tmp_path)
    stored = subprocess.run(
        [*TRINITY, "secrets", "set", "OPENAI_API_KEY"],
        input=key,
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    assert key not in stored.stdout + stored.stderr
    assert key in (tmp_path / "keyring.json").read_text()  # it really went to the backend

    listed = cli("secrets", "list", env=env, with_db=False)
    assert listed.code == 0 and re.search(r"OPENAI_API_KEY\s+set", listed.stdout)
    assert key not in listed.stdout

    unused = cli("doctor", env=env)
    used = cli("doctor", env=_keyring_env(tmp_path, TRINITY_KEYRING="true"))
    assert re.search(r"OPENAI_API_KEY\s*│\s*not set", unused.stdout), unused.stdout
    assert re.search(r"OPENAI_API_KEY\s*│\s*set", used.stdout), used.stdout
    assert key not in used.stdout + used.stderr

    deleted = cli("secrets", "delete", "OPENAI_API_KEY", env=env, with_db=False)
    assert deleted.code == 0
    again = cli("secrets", "delete", "OPENAI_API_KEY", env=env, with_db=False)
    assert again.code == 2 and "not in the keyring" in again.stderr
    assert cli("secrets", "list", env=env, with_db=False).stdout.strip() == "no secrets stored"


def test_without_an_os_keyring_the_secrets_commands_say_so(tmp_path: Path) -> None:
    cli = Cli(cwd=tmp_path, db=tmp_path / "trinity.db", ws=tmp_path / "ws")
    env = _keyring_env(tmp_path, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    result = cli("secrets", "list", env=env, with_db=False)
    assert result.code == 2 and "no OS keyring" in result.stderr
    assert "Traceback" not in result.stderr
