"""A scripted fake LLM HTTP server, so provider tests run the real SDKs over real HTTP.

It speaks just enough of OpenAI's ``POST /v1/chat/completions`` and Anthropic's
``POST /v1/messages`` for the official SDKs to parse its replies. Each test scripts what the
next requests get (:class:`Reply`, :class:`Status`, :class:`Hang`, :class:`Trickle`) and can
then inspect every request received (:attr:`FakeLLMServer.requests`).

Usage in a test module (pytest puts ``tests/`` on ``sys.path``)::

    from llm_server import Reply, Status, fake_llm_server  # noqa: F401  (fixture)

    def test_x(fake_llm_server): ...
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Reply:
    """A normal completion: ``text``, with the given token usage."""

    text: str = "ok"
    input_tokens: Any = 11
    output_tokens: Any = 7
    """Sent as given: a test may send ``None``, ``-5``, ``"12"`` or ``2**64``."""
    usage: bool = True
    """``False``: the reply has no usage object at all."""
    cut_off: bool = False
    """The reply says it stopped at max_tokens (``finish_reason: length``,
    ``stop_reason: max_tokens``)."""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    """Native tool calls ``(name, arguments)`` sent instead of text (OpenAI ``tool_calls``)."""
    stall_s: float = 0.0
    """Go silent this long before the reply (streamed: after its first piece)."""
    stream_cut: bool = False
    """Streamed: close the connection after the first piece, without the final events."""


@dataclass(frozen=True)
class Status:
    """An error response: ``status`` with ``headers``, and an error body in the API's shape.

    ``body`` replaces the error body entirely (a dict is sent as JSON, a str as is).
    """

    status: int
    message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | str | None = None


@dataclass(frozen=True)
class Hang:
    """Read the request, then send nothing for ``seconds`` and close the connection."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Trickle:
    """Send a 200 status and headers, then one byte of body every ``interval_s``, never finishing
    (until ``seconds`` have passed). Defeats per-read client timeouts."""

    interval_s: float = 0.2
    seconds: float = 30.0


@dataclass(frozen=True)
class Raw:
    """Any status, content type and body bytes: an HTML page, a non-UTF-8 body, an error object
    sent with status 200."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    declared: bool = True
    """Send ``Content-Length``; ``False``: the body ends when the connection closes."""


Behaviour = Reply | Status | Hang | Trickle | Raw


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: Any
    """The JSON body, parsed (``None`` when empty or not JSON)."""
    arrived: float
    """:func:`time.monotonic` when the request line and headers had been read."""


class FakeLLMServer:
    """The server: on 127.0.0.1, a free port, in a daemon thread. Use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-llm-server",
            daemon=True,
        )

    # -- scripting and inspection -------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue what the next requests get, in order. Once the queue is empty, every request
        gets a 500 saying so (a test that expected fewer requests then sees the extra ones)."""
        with self._lock:
            self._script.extend(behaviours)

    def unscript(self) -> int:
        """Drop what is still queued (replies a run did not need); returns how many."""
        with self._lock:
            left = len(self._script)
            self._script.clear()
            return left

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for the OpenAI SDK (its paths are relative to ``/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for the Anthropic SDK (its paths start with ``/v1``)."""
        return self.base_url

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging and trickling handlers notice and return at once."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- used by the handler ----------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self._requests.append(request)
            if self._script:
                return self._script.popleft()
        return Status(500, "fake LLM server: no scripted behaviour left for this request")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not wait for handler threads on close: a hanging one may still be sleeping.
    block_on_close = False
    fake: FakeLLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"no route for GET {self.path}"}})

    def do_POST(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake = self.server.fake
        headers = {name.lower(): value for name, value in self.headers.items()}
        behaviour = fake._record(RecordedRequest("POST", self.path, headers, body, arrived))
        try:
            self._act(behaviour, body if isinstance(body, dict) else {}, fake)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up; nothing more to do

    @property
    def _anthropic(self) -> bool:
        return self.path.split("?")[0].rstrip("/").endswith("/messages")

    def _act(self, behaviour: Behaviour, body: dict[str, Any], fake: FakeLLMServer) -> None:
        if isinstance(behaviour, Reply) and body.get("stream"):
            self._stream(behaviour, body, next(fake._ids), fake)
        elif isinstance(behaviour, Reply):
            if behaviour.stall_s and fake._stopping.wait(behaviour.stall_s):
                return
            self._send_json(200, self._reply_body(behaviour, body, next(fake._ids)))
        elif isinstance(behaviour, Status):
            error = behaviour.body
            if error is None:
                error = self._error_body(behaviour.status, behaviour.message)
            self._send_json(behaviour.status, error, behaviour.headers)
        elif isinstance(behaviour, Raw):
            self.send_response(behaviour.status)
            self.send_header("Content-Type", behaviour.content_type)
            if behaviour.declared:
                self.send_header("Content-Length", str(len(behaviour.body)))
            else:
                self.close_connection = True
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that stopped reading
                self.wfile.write(behaviour.body)
                self.wfile.flush()
        elif isinstance(behaviour, Hang):
            fake._stopping.wait(behaviour.seconds)
            self.close_connection = True
        elif isinstance(behaviour, Trickle):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            deadline = time.monotonic() + behaviour.seconds
            # Leading spaces keep the body valid JSON so far; it just never ends.
            while time.monotonic() < deadline and not fake._stopping.wait(behaviour.interval_s):
                self.wfile.write(b" ")
                self.wfile.flush()
            self.close_connection = True

    def _stream(self, reply: Reply, request: dict[str, Any], n: int, fake: FakeLLMServer) -> None:
        """The reply as server-sent events, the way each API streams."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        whole = self._reply_body(reply, request, n)
        events = _anthropic_events(whole) if self._anthropic else _openai_chunks(whole, request)
        for name, data in events:
            if name == "cut" and reply.stream_cut:
                return
            if name == "cut":
                if reply.stall_s and fake._stopping.wait(reply.stall_s):
                    return
                continue
            line = f"event: {name}\n" if name else ""
            self.wfile.write(f"{line}data: {data}\n\n".encode())
            self.wfile.flush()

    def _reply_body(self, reply: Reply, request: dict[str, Any], n: int) -> dict[str, Any]:
        model = request.get("model", "fake-model")
        if self._anthropic:
            content: dict[str, Any] = {"type": "text", "text": reply.text}
            choice = request.get("tool_choice") or {}
            if choice.get("type") == "tool":  # forced tool use: the reply is the tool's input
                try:
                    given = json.loads(reply.text)
                except ValueError:
                    given = None
                if isinstance(given, dict):
                    content = {
                        "type": "tool_use",
                        "id": f"toolu_fake_{n}",
                        "name": choice.get("name"),
                        "input": given,
                    }
            message = {
                "id": f"msg_fake_{n}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [content],
                "stop_reason": "max_tokens" if reply.cut_off else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
            }
            if not reply.usage:
                del message["usage"]
            return message
        completion = {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text or None}
                    | (
                        {
                            "tool_calls": [
                                {
                                    "id": f"call_{i}",
                                    "type": "function",
                                    "function": {"name": name, "arguments": json.dumps(args)},
                                }
                                for i, (name, args) in enumerate(reply.tool_calls)
                            ]
                        }
                        if reply.tool_calls
                        else {}
                    ),
                    "finish_reason": "length" if reply.cut_off else "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
            },
        }
        if not reply.usage:
            del completion["usage"]
        return completion

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        if self._anthropic:
            return {"type": "error", "error": {"type": f"http_{status}_error", "message": message}}
        return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}

    def _send_json(
        self, status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None
    ) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _pieces(text: str) -> list[str]:
    """A reply's text in the pieces a stream sends (three, or fewer for short text)."""
    size = max(1, -(-len(text) // 3))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _openai_chunks(whole: dict[str, Any], request: dict[str, Any]) -> list[tuple[str, str]]:
    """A chat.completion as the chunks of a stream; ``("cut", "")`` marks the first pause."""
    choice = whole["choices"][0]
    message = choice["message"]
    base = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[str, str]:
        body = base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return "", json.dumps(body)

    out = [chunk({"role": "assistant", "content": ""})]
    for number, piece in enumerate(_pieces(message.get("content") or "")):
        out.append(chunk({"content": piece}))
        if number == 0:
            out.append(("cut", ""))
    for i, call in enumerate(message.get("tool_calls", [])):
        function = call["function"]
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in _pieces(function["arguments"]):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    out.append(chunk({}, choice["finish_reason"]))
    if "usage" in whole and (request.get("stream_options") or {}).get("include_usage"):
        out.append(("", json.dumps(base | {"choices": [], "usage": whole["usage"]})))
    out.append(("", "[DONE]"))
    return out


def _anthropic_events(whole: dict[str, Any]) -> list[tuple[str, str]]:
    """A message as the events of a stream; ``("cut", "")`` marks the first pause."""
    usage = whole.get("usage") or {}
    start = {k: v for k, v in whole.items() if k not in ("content", "usage")}
    start |= {"content": [], "stop_reason": None}
    if "usage" in whole:
        start["usage"] = {"input_tokens": usage.get("input_tokens"), "output_tokens": 1}
    out = [("message_start", json.dumps({"type": "message_start", "message": start}))]
    for index, block in enumerate(whole["content"]):
        if block["type"] == "text":
            opening, pieces = {"type": "text", "text": ""}, _pieces(block["text"])
            deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
        else:
            opening = {k: v for k, v in block.items() if k != "input"} | {"input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in _pieces(json.dumps(block["input"]))
            ]
        out.append(
            (
                "content_block_start",
                json.dumps(
                    {"type": "content_block_start", "index": index, "content_block": opening}
                ),
            )
        )
        for number, delta in enumerate(deltas):
            out.append(
                (
                    "content_block_delta",
                    json.dumps({"type": "content_block_delta", "index": index, "delta": delta}),
                )
            )
            if number == 0:
                out.append(("cut", ""))
        out.append(
            ("content_block_stop", json.dumps({"type": "content_block_stop", "index": index}))
        )
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
    }
    if "usage" in whole:
        delta["usage"] = {"output_tokens": usage.get("output_tokens")}
    out.append(("message_delta", json.dumps(delta)))
    out.append(("message_stop", json.dumps({"type": "message_stop"})))
    return out


@pytest.fixture
def fake_llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    """A running :class:`FakeLLMServer`, stopped after the test."""
    # A proxy configured in the environment must not intercept calls to the loopback server.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeLLMServer() as server:
        yield server
