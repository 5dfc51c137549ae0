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
        if isinstance(behaviour, Reply):
            self._send_json(200, self._reply_body(behaviour, body, next(fake._ids)))
        elif isinstance(behaviour, Status):
            error = behaviour.body
            if error is None:
                error = self._error_body(behaviour.status, behaviour.message)
            self._send_json(behaviour.status, error, behaviour.headers)
        elif isinstance(behaviour, Raw):
            self.send_response(behaviour.status)
            self.send_header("Content-Type", behaviour.content_type)
            self.send_header("Content-Length", str(len(behaviour.body)))
            self.end_headers()
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

    def _reply_body(self, reply: Reply, request: dict[str, Any], n: int) -> dict[str, Any]:
        model = request.get("model", "fake-model")
        if self._anthropic:
            message = {
                "id": f"msg_fake_{n}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": reply.text}],
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
                    "message": {"role": "assistant", "content": reply.text},
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


@pytest.fixture
def fake_llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    """A running :class:`FakeLLMServer`, stopped after the test."""
    # A proxy configured in the environment must not intercept calls to the loopback server.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with FakeLLMServer() as server:
        yield server
