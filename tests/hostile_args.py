"""Hostile arguments for the built-in tools, and what the tests need to throw them safely.

- :data:`CORPUS`: one row per attack, with the text its refusal must contain. The tools are
  built by :func:`corpus_tools`; ``{server}`` and ``{outside}`` in a row are filled in at run
  time (a local HTTP server's origin, a directory next to the workspace).
- :class:`LocalHTTPServer`: a small HTTP server on 127.0.0.1 for ``http.fetch`` tests.
- :func:`guard_network`: makes any connection or name lookup that would leave this machine
  fail the test (and records it), so an SSRF bug can never send real traffic.
- :class:`RecordingTransport`: an httpx transport that records every request it is given.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from trinity.tools.builtin import BuiltinTools, ProcessLimits

# -- a local HTTP server --------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        route = parts.path
        if route == "/hello":
            self._reply(200, b"hello from the test server\n", "text/plain; charset=utf-8")
        elif route == "/headers":
            echoed = "".join(f"{name.lower()}: {value}\n" for name, value in self.headers.items())
            self._reply(200, echoed.encode(), "text/plain")
        elif route == "/big":
            self._reply(200, b"z" * 3_000_000, "text/plain")
        elif route == "/slow":
            time.sleep(3)
            self._reply(200, b"late\n", "text/plain")
        elif route == "/binary":
            self._reply(200, b"\x89PNG\x00\x00\x01binary", "application/octet-stream")
        elif route == "/latin1":
            self._reply(200, "café\n".encode("latin-1"), "text/plain; charset=latin-1")
        elif route == "/missing":
            self._reply(404, b"no such page\n", "text/plain")
        elif route == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._reply(404, b"unknown route\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LocalHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) with fixed routes."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- no traffic off this machine ---------------------------------------------------------------


@dataclass
class NetworkLog:
    """Connections and lookups that would have left this machine (and were stopped)."""

    blocked: list[str] = field(default_factory=list)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host in ("localhost", "localhost.localdomain", "ip6-localhost")


def guard_network(monkeypatch: pytest.MonkeyPatch) -> NetworkLog:
    """Patch the socket layer so that connecting to, or resolving, anything that is not this
    machine raises (and is logged). asyncio, anyio and httpx all connect through these."""
    log = NetworkLog()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(what: str) -> OSError:
        log.blocked.append(what)
        return OSError(f"test network guard: {what} would leave this machine")

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise refuse(f"connect to {address[0]}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise refuse(f"connect to {address[0]}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _loopback(str(name)):
            raise refuse(f"resolve {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return log


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` (by default a real transport) and records them."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


FAKE_DNS: dict[str, list[str]] = {
    "internal.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "192.168.0.10"],
    "v6private.test": ["fd12:3456::1"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    """Name resolution for tests: a fixed table, never the real DNS."""
    try:
        return FAKE_DNS[host]
    except KeyError:
        raise OSError(f"fake resolver: no such host {host!r}") from None


CORPUS_LIMITS = ProcessLimits(
    cpu_s=2, memory_bytes=512 * 1024 * 1024, file_size_bytes=1024 * 1024, open_files=64
)


def corpus_tools(
    workspace: Path, transport: httpx.AsyncBaseTransport, allow: tuple[str, ...]
) -> BuiltinTools:
    return BuiltinTools(
        workspace,
        default_timeout_s=20,
        allow_hosts=allow,
        resolver=fake_resolver,
        http_transport=transport,
        python_limits=CORPUS_LIMITS,
    )


def make_escape_links(workspace: Path, outside: Path) -> None:
    """Symlinks inside the workspace that point out of it."""
    (workspace / "dirlink").symlink_to(outside, target_is_directory=True)
    (workspace / "filelink").symlink_to(outside / "secret.txt")
    (workspace / "dangling").symlink_to(outside / "created-by-attack.txt")
    (workspace / "redos.txt").write_text("a" * 5000 + "!\n", encoding="utf-8")


# -- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    id: str
    tool: str
    args: dict[str, Any]
    expect: str
    """Text the refusal (error, or output for a tool that reports and goes on) must contain."""
    in_output: bool = False
    """The tool succeeds but leaves the hostile part out, saying so in its output."""
    allow: tuple[str, ...] = ()
    """Allow-list for ``http.fetch`` (for the rows that need the local server)."""
    max_seconds: float = 10.0


def _ssrf(id: str, url: str, expect: str, **extra: Any) -> Hostile:
    return Hostile(id, "http.fetch", {"url": url}, expect, **extra)


_BIG = 5_000_001
CORPUS: tuple[Hostile, ...] = (
    # -- path traversal ----------------------------------------------------------------------
    Hostile("dotdot", "fs.read", {"path": "../x"}, "outside the workspace"),
    Hostile("dotdot-after-dir", "fs.read", {"path": "a/../../x"}, "outside the workspace"),
    Hostile(
        "dotdot-write",
        "fs.write",
        {"path": "../../escape.txt", "content": "x"},
        "outside the workspace",
    ),
    Hostile(
        "very-deep-dotdot",
        "fs.read",
        {"path": "../" * 1000 + "etc/passwd"},
        "outside the workspace",
    ),
    Hostile("percent-encoded", "fs.read", {"path": "%2e%2e/%2e%2e/etc/passwd"}, "encoded '..'"),
    Hostile("percent-encoded-slash", "fs.read", {"path": "..%2f..%2fetc%2fpasswd"}, "encoded '..'"),
    Hostile(
        "double-encoded",
        "fs.write",
        {"path": "%252e%252e/escape.txt", "content": "x"},
        "encoded '..'",
    ),
    Hostile(
        "overlong-utf8", "fs.read", {"path": "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd"}, "encoded '..'"
    ),
    Hostile("backslashes", "fs.read", {"path": "..\\..\\etc\\passwd"}, "encoded '..'"),
    Hostile(
        "fullwidth-dots",
        "fs.read",
        {"path": "\uff0e\uff0e/\uff0e\uff0e/etc/passwd"},
        "encoded '..'",
    ),
    Hostile("absolute-passwd", "fs.read", {"path": "/etc/passwd"}, "outside the workspace"),
    Hostile("proc-environ", "fs.read", {"path": "/proc/self/environ"}, "outside the workspace"),
    Hostile(
        "absolute-write",
        "fs.write",
        {"path": "{outside}/pwned.txt", "content": "x"},
        "outside the workspace",
    ),
    Hostile("list-root", "fs.list", {"path": "/"}, "outside the workspace"),
    Hostile(
        "edit-dotdot",
        "fs.edit",
        {"path": "../outside/secret.txt", "old": "top", "new": "x"},
        "outside the workspace",
    ),
    Hostile("glob-dotdot", "fs.glob", {"pattern": "../*"}, "contains '..'"),
    Hostile("glob-absolute", "fs.glob", {"pattern": "/etc/*"}, "is absolute"),
    Hostile(
        "search-absolute", "fs.search", {"pattern": "root", "path": "/etc"}, "outside the workspace"
    ),
    Hostile(
        "search-dotdot", "fs.search", {"pattern": "secret", "path": "../"}, "outside the workspace"
    ),
    Hostile(
        "search-include-dotdot", "fs.search", {"pattern": "x", "include": "../**"}, "contains '..'"
    ),
    # -- symlinks leading out ----------------------------------------------------------------
    Hostile("symlink-dir-read", "fs.read", {"path": "dirlink/secret.txt"}, "outside the workspace"),
    Hostile("symlink-file-read", "fs.read", {"path": "filelink"}, "outside the workspace"),
    Hostile(
        "symlink-dir-write",
        "fs.write",
        {"path": "dirlink/new.txt", "content": "x"},
        "outside the workspace",
    ),
    Hostile(
        "symlink-dangling-write",
        "fs.write",
        {"path": "dangling", "content": "x"},
        "outside the workspace",
    ),
    Hostile(
        "symlink-edit",
        "fs.edit",
        {"path": "filelink", "old": "top", "new": "x"},
        "outside the workspace",
    ),
    Hostile("symlink-list", "fs.list", {"path": "dirlink"}, "outside the workspace"),
    Hostile(
        "symlink-list-names",
        "fs.list",
        {"path": "."},
        "3 entries that lead outside the workspace: dangling, dirlink, filelink",
        in_output=True,
    ),
    Hostile(
        "symlink-list-recursive",
        "fs.list",
        {"path": ".", "recursive": True},
        "3 entries that lead outside the workspace: dangling, dirlink, filelink",
        in_output=True,
    ),
    Hostile(
        "symlink-glob-into",
        "fs.glob",
        {"pattern": "dirlink/*"},
        "1 entry that leads outside the workspace: dirlink",
        in_output=True,
    ),
    Hostile(
        "symlink-glob-all",
        "fs.glob",
        {"pattern": "**"},
        "entries that lead outside the workspace: dangling, dirlink, filelink",
        in_output=True,
    ),
    Hostile(
        "symlink-search-tree",
        "fs.search",
        {"pattern": "top s[e]cret"},
        "entries that lead outside the workspace: dangling, dirlink, filelink",
        in_output=True,
    ),
    Hostile(
        "symlink-search-file",
        "fs.search",
        {"pattern": "top", "path": "filelink"},
        "outside the workspace",
    ),
    # -- NUL bytes ---------------------------------------------------------------------------
    Hostile("nul-read", "fs.read", {"path": "a\x00/../../etc/passwd"}, "NUL byte"),
    Hostile("nul-glob", "fs.glob", {"pattern": "a\x00*"}, "NUL byte"),
    # -- SSRF: refused before any connection ------------------------------------------------
    _ssrf("ssrf-loopback", "http://127.0.0.1/", "loopback address"),
    _ssrf("ssrf-localhost", "http://localhost:8080/", "names this machine"),
    _ssrf("ssrf-unspecified", "http://0.0.0.0/", "unspecified address"),
    _ssrf("ssrf-ipv6-loopback", "http://[::1]/", "IPv6 loopback"),
    _ssrf("ssrf-metadata", "http://169.254.169.254/latest/meta-data/", "cloud metadata endpoint"),
    _ssrf("ssrf-10", "http://10.0.0.1/", "private address (10.0.0.0/8)"),
    _ssrf("ssrf-172", "http://172.16.0.1/", "private address (172.16.0.0/12)"),
    _ssrf("ssrf-192", "http://192.168.1.1/", "private address (192.168.0.0/16)"),
    _ssrf("ssrf-cgnat", "http://100.64.0.1/", "carrier-grade NAT"),
    _ssrf("ssrf-mapped", "http://[::ffff:127.0.0.1]/", "wrapping 127.0.0.1, a loopback"),
    _ssrf("ssrf-mapped-metadata", "http://[::ffff:169.254.169.254]/", "wrapping 169.254.169.254"),
    _ssrf("ssrf-ula", "http://[fd00::1]/", "unique-local"),
    _ssrf("ssrf-v6-link-local", "http://[fe80::1]/", "link-local IPv6"),
    _ssrf("ssrf-multicast", "http://224.0.0.1/", "multicast"),
    _ssrf("ssrf-decimal", "http://2130706433/", "means 127.0.0.1, which is a loopback"),
    _ssrf("ssrf-hex", "http://0x7f000001/", "means 127.0.0.1, which is a loopback"),
    _ssrf("ssrf-octal", "http://0177.0.0.1/", "means 127.0.0.1, which is a loopback"),
    _ssrf("ssrf-short", "http://127.1/", "means 127.0.0.1, which is a loopback"),
    _ssrf("ssrf-dns-private", "http://internal.test/", "resolves to 10.1.2.3, which is a private"),
    _ssrf("ssrf-dns-metadata", "http://metadata.test/", "resolves to 169.254.169.254"),
    _ssrf("ssrf-dns-one-bad-answer", "http://mixed.test/", "resolves to 192.168.0.10"),
    _ssrf("ssrf-dns-v6-private", "http://v6private.test/", "resolves to fd12:3456::1"),
    _ssrf("ssrf-credentials-trick", "http://127.0.0.1%2f@example.com/", "credentials"),
    _ssrf(
        "redirect-to-metadata",
        "{server}/redirect?to=http://169.254.169.254/latest/meta-data/",
        "redirect to 'http://169.254.169.254/latest/meta-data/'",
        allow=("127.0.0.1",),
    ),
    _ssrf(
        "redirect-to-localhost",
        "{server}/redirect?to=http://localhost:1/",
        "names this machine",
        allow=("127.0.0.1",),
    ),
    _ssrf(
        "redirect-to-file",
        "{server}/redirect?to=file:///etc/passwd",
        "scheme 'file' is not allowed",
        allow=("127.0.0.1",),
    ),
    _ssrf("scheme-file", "file:///etc/passwd", "scheme 'file' is not allowed"),
    _ssrf("scheme-gopher", "gopher://127.0.0.1:6379/_INFO", "scheme 'gopher' is not allowed"),
    _ssrf("scheme-ftp", "ftp://example.com/x", "scheme 'ftp' is not allowed"),
    Hostile(
        "header-injection",
        "http.fetch",
        {"url": "http://example.com/", "headers": {"X-A": "1\r\nHost: 127.0.0.1"}},
        "line break",
    ),
    Hostile(
        "header-host-override",
        "http.fetch",
        {"url": "http://example.com/", "headers": {"Host": "127.0.0.1"}},
        "set by the tool",
    ),
    # -- oversized inputs --------------------------------------------------------------------
    Hostile(
        "huge-content",
        "fs.write",
        {"path": "big.txt", "content": "x" * _BIG},
        "content: String should have at most 5000000 characters",
    ),
    Hostile(
        "huge-command",
        "shell.run",
        {"command": "echo " + "x" * 20_000},
        "command: String should have at most 20000 characters",
    ),
    Hostile(
        "huge-search-pattern",
        "fs.search",
        {"pattern": "a" * 1001},
        "pattern: String should have at most 1000 characters",
    ),
    Hostile(
        "huge-glob-pattern",
        "fs.glob",
        {"pattern": "*" * 1001},
        "pattern: String should have at most 1000 characters",
    ),
    Hostile(
        "huge-code",
        "python.run",
        {"code": "#" * 100_001},
        "code: String should have at most 100000 characters",
    ),
    Hostile(
        "huge-url",
        "http.fetch",
        {"url": "http://example.com/" + "a" * 8192},
        "url: String should have at most 8192 characters",
    ),
    Hostile(
        "huge-path",
        "fs.read",
        {"path": "a/" * 2500},
        "path: String should have at most 4096 characters",
    ),
    Hostile(
        "huge-edit",
        "fs.edit",
        {"path": "f.txt", "old": "x" * _BIG, "new": ""},
        "old: String should have at most 5000000 characters",
    ),
    Hostile(
        "too-many-headers",
        "http.fetch",
        {"url": "http://example.com/", "headers": {f"X-{i}": "v" for i in range(33)}},
        "headers: Dictionary should have at most 32 items",
    ),
    # -- runaway processes -------------------------------------------------------------------
    Hostile(
        "python-memory-bomb", "python.run", {"code": "x = bytearray(4 * 1024 ** 3)"}, "MemoryError"
    ),
    Hostile(
        "python-growing-memory",
        "python.run",
        {"code": "hoard = []\nwhile True:\n    hoard.append(bytearray(10 ** 7))"},
        "MemoryError",
    ),
    Hostile(
        "python-infinite-loop",
        "python.run",
        {"code": "while True:\n    pass"},
        "killed by SIGXCPU: CPU time limit of 2s exceeded",
    ),
    Hostile(
        "python-sleep",
        "python.run",
        {"code": "import time\ntime.sleep(60)", "timeout_s": 1},
        "timed out after 1s",
    ),
    Hostile(
        "python-file-bomb",
        "python.run",
        {"code": "open('bomb.bin', 'wb').write(b'x' * (8 << 20))"},
        "File too large: the file size limit is 1048576 bytes",
    ),
    Hostile(
        "python-child-sleeps",
        "python.run",
        {
            "code": "import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)",
            "timeout_s": 1,
        },
        "timed out after 1s",
    ),
    Hostile(
        "shell-sleep", "shell.run", {"command": "sleep 60", "timeout_s": 1}, "timed out after 1s"
    ),
    Hostile(
        "shell-fork-ish",
        "shell.run",
        {"command": "for i in $(seq 30); do sleep 60 & done; wait", "timeout_s": 1},
        "timed out after 1s",
    ),
    Hostile(
        "search-redos",
        "fs.search",
        {"pattern": "(a+)+$", "path": "redos.txt", "timeout_s": 1},
        "timed out after 1s",
    ),
)
