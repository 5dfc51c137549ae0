"""A deliberately bad MCP server (stdio, raw JSON-RPC, no SDK): it reads and never answers.

By default it answers nothing at all, not even ``initialize``. With ``--handshake`` it answers
``initialize`` and ``tools/list`` (one tool, ``wait``) but never a ``tools/call``: a server that
starts fine and then wedges. Either way it ignores SIGTERM, as a wedged process might; only
SIGKILL ends it before its stdin closes.
"""

from __future__ import annotations

import json
import signal
import sys


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handshake = "--handshake" in sys.argv[1:]
    for line in sys.stdin:
        if not handshake or not line.strip():
            continue
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hang-server", "version": "1.0.0"},
            }
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/list":
            tool = {"name": "wait", "inputSchema": {"type": "object", "properties": {}}}
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": [tool]}})
        # tools/call and everything else: silence


if __name__ == "__main__":
    main()
