"""A tiny MCP server (raw JSON-RPC) whose one tool, ``seen``, answers with the ``_meta`` its
call came with, and over HTTP with the call's ``traceparent`` header too: the tracing tests
read what Trinity sent.

    python meta_server.py              # stdio
    python meta_server.py --http PORT  # streamable HTTP (JSON answers) at /mcp on 127.0.0.1
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer(message: dict[str, Any], headers: dict[str, str] | None = None) -> dict | None:
    """The JSON-RPC answer to ``message`` (``None`` for a notification)."""
    method, request_id = message.get("method"), message.get("id")
    if request_id is None:
        return None
    result: dict[str, Any] = {}
    if method == "initialize":
        result = {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "meta-server", "version": "1.0.0"},
        }
    elif method == "tools/list":
        tool = {"name": "seen", "inputSchema": {"type": "object", "properties": {}}}
        result = {"tools": [tool]}
    elif method == "tools/call":
        seen = dict(message.get("params", {}).get("_meta", {}))
        if headers is not None:
            seen["http_traceparent"] = headers.get("traceparent")
        result = {"content": [{"type": "text", "text": json.dumps(seen)}], "isError": False}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def stdio() -> None:
    for line in sys.stdin:
        if line.strip():
            reply = answer(json.loads(line))
            if reply is not None:
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        headers = {key.lower(): value for key, value in self.headers.items()}
        reply = answer(message, headers)
        if reply is None:
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # no server-sent event stream here
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
    else:
        stdio()
