"""A tiny MCP server (stdio, raw JSON-RPC) whose one tool, ``seen``, answers with the
``_meta`` its call came with: the tracing tests read the ``traceparent`` Trinity sent."""

from __future__ import annotations

import json
import sys


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "meta-server", "version": "1.0.0"},
            }
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/list":
            tool = {"name": "seen", "inputSchema": {"type": "object", "properties": {}}}
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": [tool]}})
        elif method == "tools/call":
            meta = message.get("params", {}).get("_meta", {})
            text = json.dumps(meta)
            result = {"content": [{"type": "text", "text": text}], "isError": False}
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif request_id is not None:
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})


if __name__ == "__main__":
    main()
