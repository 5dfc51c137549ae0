"""Helpers behind ``http.fetch``: vetting caller headers, building requests pinned to an
address that :mod:`trinity.tools.netguard` has already checked (so a second DNS answer cannot
redirect them), and reading a response into a capped text result.

and the fetch itself (:func:`fetch`: redirects followed by hand, each hop vetted and pinned
like the first). Imported by the first fetch: a run that fetches nothing does not load httpx.
"""

from __future__ import annotations

import asyncio
import codecs
import re
from urllib.parse import urljoin

import httpx

from trinity.state import ToolResult
from trinity.tools import netguard
from trinity.tools.builtin.args import MAX_HEADER_VALUE_CHARS, MAX_REDIRECTS, FetchArgs
from trinity.tools.builtin.output import _cap
from trinity.tools.netguard import AllowList, NetworkPolicyError, Resolver

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


async def fetch(
    args: FetchArgs,
    *,
    limit: float,
    max_bytes: int,
    allow: AllowList,
    resolver: Resolver | None,
    transport: httpx.AsyncBaseTransport | None,
) -> ToolResult:
    """``http.fetch``: GET ``args.url`` within ``limit`` seconds, at most ``max_bytes`` read."""
    headers = _vet_headers(args.headers)
    target = netguard.parse_url(args.url)
    try:
        async with asyncio.timeout(limit):
            return await _following(target, headers, max_bytes, limit, allow, resolver, transport)
    except TimeoutError:
        return ToolResult(ok=False, error=f"http.fetch: timed out after {limit:g}s")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return ToolResult(ok=False, error=f"http.fetch: {type(exc).__name__}: {exc}")


async def _following(
    target: netguard.Target,
    headers: dict[str, str],
    max_bytes: int,
    limit: float,
    allow: AllowList,
    resolver: Resolver | None,
    transport: httpx.AsyncBaseTransport | None,
) -> ToolResult:
    """GET ``target``, following redirects by hand so that every hop is vetted and pinned like
    the first one."""
    first_origin = target.origin
    borrowed = _Borrowed(transport) if transport else None
    async with httpx.AsyncClient(
        transport=borrowed,
        trust_env=False,  # an environment proxy would connect on our behalf, unchecked
        follow_redirects=False,
        timeout=httpx.Timeout(limit),
    ) as client:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                address = await netguard.resolve_and_check(target, allow, resolver)
            except NetworkPolicyError as exc:
                if hop == 0:
                    raise
                raise NetworkPolicyError(f"redirect to {target.url!r}: {exc}") from None
            # Caller headers (say, a token) go to the origin they were meant for only.
            extra = headers if target.origin == first_origin else {}
            request = _pinned_request(client, target, address, extra)
            response = await client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code not in _REDIRECT_STATUSES or not location:
                    return await _read_response(response, target, hop, max_bytes)
            finally:
                await response.aclose()
            next_url = urljoin(target.url, location)
            try:
                target = netguard.parse_url(next_url)
            except NetworkPolicyError as exc:
                raise NetworkPolicyError(f"redirect to {next_url!r}: {exc}") from None
    return ToolResult(ok=False, error=f"http.fetch: more than {MAX_REDIRECTS} redirects")
