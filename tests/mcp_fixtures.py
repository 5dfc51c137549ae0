"""Where the reference MCP servers live for the tests, and how they get installed.

The npm servers (server-everything, server-filesystem) are pinned by tests/mcp_servers/
package-lock.json and installed there with ``npm ci``; .ci/run does that up front, and
:func:`ensure_npm_servers` does it for a developer who has not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SERVERS = Path(__file__).resolve().parent / "mcp_servers"
MODULES = SERVERS / "node_modules" / "@modelcontextprotocol"
EVERYTHING_JS = MODULES / "server-everything" / "dist" / "index.js"
FILESYSTEM_JS = MODULES / "server-filesystem" / "dist" / "index.js"
CRASH_SERVER = SERVERS / "crash_server.py"
HANG_SERVER = SERVERS / "hang_server.py"
NODE = shutil.which("node")


def ensure_npm_servers() -> None:
    """Install the npm reference servers from the lockfile if they are missing."""
    if EVERYTHING_JS.exists() and FILESYSTEM_JS.exists():
        return
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not"
    command = [npm, "ci" if (SERVERS / "package-lock.json").exists() else "install"]
    done = subprocess.run(
        [*command, "--no-audit", "--no-fund"],
        cwd=SERVERS,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm failed in {SERVERS}:\n{done.stdout}\n{done.stderr}"
