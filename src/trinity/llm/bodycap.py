"""How much of an LLM server's answer is read: a response hook of the SDK's HTTP client that
stops reading a body past its cap, before the SDK has it in memory.

A streamed reply's text is capped where it is read (``MAX_STREAMED_CHARS``), but a whole reply
is read by the SDK, all of it, before Trinity sees it; and a stream's framing, comments or one
line that never ends are not text. A local server (or a proxy gone wrong) that sends gigabytes
within the attempt's timeout would take the process's memory with it. Past the cap the attempt
fails at once, not retried (:class:`~trinity.llm.replies.ReplyProblem`): asking again would
read the same again.

It is an ``event_hooks["response"]`` of the client (run before the body is read, whatever
transport or proxy the client uses): the response's byte stream is wrapped, and a declared
``Content-Length`` over the cap fails before a byte of the body is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2

from trinity.llm.replies import ReplyProblem

MAX_BODY_BYTES = 64 * 2**20
"""The most of a whole reply read (a 4,000,000-character reply is a few MB of JSON)."""
MAX_STREAM_BYTES = 512 * 2**20
"""The most of an event stream read, framing and all (its text stops at 4,000,000 chars)."""


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, limit: int, what: str) -> None:
        self._inner = inner
        self._limit = limit
        self._what = what

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._inner:
            received += len(chunk)
            if received > self._limit:
                raise _too_big(self._what, self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _too_big(what: str, limit: int) -> ReplyProblem:
    return ReplyProblem(
        f"the server's {what} went past {limit // 2**20} MB and was read no further (not an "
        "LLM API, or a broken one?)"
    )


async def cap_body(response: httpx2.Response) -> None:
    """The response hook: cap the body about to be read."""
    streamed = "event-stream" in response.headers.get("content-type", "")
    limit, what = (MAX_STREAM_BYTES, "event stream") if streamed else (MAX_BODY_BYTES, "reply")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await response.aclose()
        raise _too_big(what, limit)
    response.stream = _Capped(response.stream, limit, what)
