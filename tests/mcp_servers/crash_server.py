"""A deliberately bad MCP server (stdio, raw JSON-RPC, no SDK): it dies on request.

Tools: ``echo`` (returns its text), ``crash`` (writes a last word to stderr and exits with
status 3 without answering), ``grow`` (adds a tool named ``extra`` and sends
``notifications/tools/list_changed``), ``extra`` (once grown), ``structured`` (structured
content and no text block), ``stats`` (how many requests of each method this process served
before this one, as JSON), ``spawn`` (starts a ``sleep`` grandchild that outlives this server
unless someone kills the process group; returns its pid). Anything else is a JSON-RPC error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

TOOLS = {
    "echo": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    "crash": {"type": "object", "properties": {}},
    "grow": {"type": "object", "properties": {}},
    "structured": {"type": "object", "properties": {}},
    "stats": {"type": "object", "properties": {}},
    "spawn": {"type": "object", "properties": {}},
}
SERVED: dict[str, int] = {}


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text_result(request_id: object, text: str) -> None:
    content = [{"type": "text", "text": text}]
    send({"jsonrpc": "2.0", "id": request_id, "result": {"content": content}})


def main() -> None:
    print(f"crash_server {os.getpid()} ready", file=sys.stderr, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue  # notifications need no answer
        counts = dict(SERVED)
        SERVED[method] = SERVED.get(method, 0) + 1
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "result": {
                        "protocolVersion": message["params"]["protocolVersion"],
                        "capabilities": {"tools": {"listChanged": True}},
                        "serverInfo": {"name": "crash-server", "version": "1.0.0"},
                    },
                }
            )
        elif method == "tools/list":
            tools = [{"name": name, "inputSchema": schema} for name, schema in TOOLS.items()]
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}})
        elif method == "tools/call":
            name = message["params"]["name"]
            args = message["params"].get("arguments") or {}
            if name == "echo":
                text_result(request_id, args["text"])
            elif name == "crash":
                print("crash_server: crashing as asked", file=sys.stderr, flush=True)
                os._exit(3)
            elif name == "grow":
                TOOLS["extra"] = {"type": "object", "properties": {}}
                send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                text_result(request_id, "grown")
            elif name == "extra" and "extra" in TOOLS:
                text_result(request_id, "extra tool here")
            elif name == "structured":
                result = {"content": [], "structuredContent": {"answer": 42, "unit": "none"}}
                send({"jsonrpc": "2.0", "id": request_id, "result": result})
            elif name == "spawn":
                devnull = subprocess.DEVNULL
                child = subprocess.Popen(["sleep", "300"], stdin=devnull, stdout=devnull)
                text_result(request_id, str(child.pid))
            elif name == "stats":
                text_result(request_id, json.dumps(counts))
            else:
                error = {"code": -32602, "message": f"Unknown tool: {name}"}
                send({"jsonrpc": "2.0", "id": request_id, "error": error})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        else:
            error = {"code": -32601, "message": f"Method not found: {method}"}
            send({"jsonrpc": "2.0", "id": request_id, "error": error})


if __name__ == "__main__":
    main()
