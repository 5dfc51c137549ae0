"""Helpers behind ``http.fetch``: vetting caller headers, building requests pinned to an
address that :mod:`trinity.tools.netguard` has already checked (so a second DNS answer cannot
redirect them), and reading a response into a capped text result.

The fetch loop itself (redirects followed by hand, each hop vetted) is
``BuiltinTools._fetch_following``.
"""

from __future__ import annotations

import codecs
import re

import httpx

from trinity.state import ToolResult
from trinity.tools import netguard
from trinity.tools.builtin.args import MAX_HEADER_VALUE_CHARS
from trinity.tools.builtin.output import _cap
from trinity.tools.netguard import NetworkPolicyError

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers the fetch tool owns: overriding them would change where or how the request goes.
_MANAGED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")


class _Borrowed(httpx.AsyncBaseTransport):
    """A transport the client may use but not close: it belongs to whoever passed it in and
    serves every fetch, while each fetch's client is closed when the fetch ends."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None


def _vet_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise NetworkPolicyError(f"header name {name[:100]!r} is not a valid token")
        if name.lower() in _MANAGED_HEADERS or name.lower().startswith("proxy-"):
            raise NetworkPolicyError(f"header {name!r} is set by the tool and cannot be given")
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise NetworkPolicyError(
                f"header {name!r} is longer than {MAX_HEADER_VALUE_CHARS} characters"
            )
        if any(ch in value for ch in "\r\n\x00"):
            raise NetworkPolicyError(f"header {name!r} contains a line break or NUL")
    return headers


def _pinned_request(
    client: httpx.AsyncClient,
    target: netguard.Target,
    address: netguard.IPAddress,
    headers: dict[str, str],
) -> httpx.Request:
    """A request that connects to the vetted ``address`` itself, so no second DNS answer (a
    rebinding attack) can move it, while Host and TLS (SNI and certificate checks) still use
    the URL's host name."""
    host = f"[{address}]" if address.version == 6 else str(address)
    url = f"{target.scheme}://{host}:{target.port}{target.path}"
    sent = {"Accept-Encoding": "identity", "User-Agent": "trinity-http-fetch"} | headers
    sent["Host"] = target.host_header
    extensions = {}
    if target.scheme == "https" and target.ip is None:
        extensions["sni_hostname"] = target.host
    return client.build_request("GET", url, headers=sent, extensions=extensions)


async def _read_response(
    response: httpx.Response, target: netguard.Target, hops: int, max_bytes: int
) -> ToolResult:
    body = bytearray()
    cut = False
    async for chunk in response.aiter_bytes():
        room = max_bytes - len(body)
        body += chunk[:room]
        if len(chunk) > room:
            cut = True
            break
    content_type = response.headers.get("content-type", "no content-type")
    if b"\x00" in body[:8192]:
        text = f"[binary content: {len(body)} bytes not shown]"
    else:
        text = bytes(body).decode(_charset(response), errors="replace")
    text, truncated = _cap(text)
    if cut:
        text, truncated = text + f"\n[… response cut at {max_bytes} bytes]", True
    status = response.status_code
    head = f"HTTP {status} {response.reason_phrase}; {content_type}; {len(body)} bytes"
    if hops:
        head += f"; after {hops} redirect{'s' if hops > 1 else ''}, from {target.url}"
    ok = status < 400
    return ToolResult(
        ok=ok,
        output=f"{head}\n\n{text}",
        truncated=truncated,
        error=None if ok else f"http.fetch: HTTP {status} {response.reason_phrase}",
    )


def _charset(response: httpx.Response) -> str:
    name = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        return "utf-8"
    return name
