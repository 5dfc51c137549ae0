"""``/readyz``'s look at the MCP servers configured with ``start = "eager"``: the ones a
deployment says must be up before work starts.

They are started in a tool hub of their own (as a run would start them), then closed. The
result is kept for ``ttl_s`` and one check runs at a time, so a burst of probes (a load
balancer, several of them) starts the servers once, not once per probe; a check that takes
longer than ``timeout_s`` reports the servers that did not come up.
"""

from __future__ import annotations

import asyncio
import time

from trinity.errors import TrinityError
from trinity.runtime import Runtime


class McpReadiness:
    def __init__(
        self,
        runtime: Runtime,
        servers_file: str | None,
        *,
        ttl_s: float = 10.0,
        timeout_s: float = 15.0,
    ) -> None:
        self.runtime = runtime
        self.servers_file = servers_file
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._last: dict[str, str] = {}
        self._checked_at: float | None = None

    async def check(self) -> dict[str, str]:
        """``{server: "ok" | "failing: why"}`` for every eager server (empty: none
        configured)."""
        async with self._lock:
            fresh = (
                self._checked_at is not None and time.monotonic() - self._checked_at < self.ttl_s
            )
            if not fresh:
                self._last = await self._probe()
                self._checked_at = time.monotonic()
            return dict(self._last)

    async def _probe(self) -> dict[str, str]:
        try:
            hub = self.runtime.tool_hub(mcp_servers_file=self.servers_file)
        except TrinityError as exc:  # the servers file cannot be read or is not valid
            return {"mcp_config": f"failing: {exc}"}
        eager = hub.eager_servers()
        if not eager:
            await hub.aclose()
            return {}
        problems: dict[str, str] = {}
        try:
            async with asyncio.timeout(self.timeout_s):
                problems = await hub.start()
        except TimeoutError:  # started together: which one hangs is not known
            problems = dict.fromkeys(eager, f"not all started within {self.timeout_s:g}s")
        finally:
            await hub.aclose()
        return {name: f"failing: {problems[name]}" if name in problems else "ok" for name in eager}
