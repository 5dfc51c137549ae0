"""The CLI starts without loading what a command does not need: no MCP SDK, LLM SDK or
jsonschema for help, listings, doctor, or a plan that uses built-in tools only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("mcp", "openai", "anthropic", "jsonschema", "httpx")
PROBE = """
import atexit, json, sys
heavy = {heavy!r}
atexit.register(lambda: sys.stderr.write(
    "LOADED " + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n"))
sys.argv = ["trinity", *{args!r}]
from trinity.cli import main
main()
"""


def loaded_by(args: list[str], cwd: Path) -> tuple[int, list[str], str]:
    """The heavy modules a ``trinity`` command has loaded by the time it exits."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, args=args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert marker, done.stderr
    return done.returncode, json.loads(marker[-1].removeprefix("LOADED ")), done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["runs", "list", "--db", "t.db"],
        ["doctor", "--db", "t.db"],
        ["run", str(ROOT / "examples" / "hello.yaml"), "-w", "ws", "--db", "t.db"],
    ],
    ids=["help", "runs list", "doctor", "built-in plan"],
)
def test_commands_load_nothing_they_do_not_need(args: list[str], tmp_path: Path) -> None:
    code, loaded, stderr = loaded_by(args, tmp_path)
    assert code == 0, stderr
    assert loaded == [], f"trinity {' '.join(args)} loaded {loaded}"


def test_a_plan_with_an_mcp_server_does_load_the_sdk(tmp_path: Path) -> None:
    """The laziness hides nothing: the first hub with a server loads the MCP SDK."""
    (tmp_path / "mcp.json").write_text(
        json.dumps({"mcpServers": {"ghost": {"command": "/nonexistent/server"}}})
    )
    args = ["run", str(ROOT / "examples" / "hello.yaml"), "-w", "ws", "--db", "t.db"]
    code, loaded, stderr = loaded_by([*args, "--mcp", "mcp.json"], tmp_path)
    assert code == 0, stderr
    assert "mcp" in loaded
