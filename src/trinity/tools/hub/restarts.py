"""When a crashed or wedged server may be started again.

:class:`RestartPolicy` is the user-facing setting (backoff between restarts, a cap on
failures per time window); :class:`_RestartTracker` applies it to one server's failures. They
are kept together because the tracker is nothing but the policy's arithmetic over time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from trinity.errors import ConfigError
from trinity.tools.hub.errors import _Unavailable


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a crashed (or wedged) server may be started again."""

    base_delay_s: float = 0.25
    """Wait before the second restart in a row; doubles for each further one. The first
    restart after a failure is immediate: one crash should cost one process start, no more."""
    max_delay_s: float = 30.0
    """Longest wait between two restarts."""
    max_failures: int = 5
    """After this many failures (crashes, failed starts, timeouts) within ``window_s``, calls
    fail fast, without starting the server, until the oldest of them leaves the window."""
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if min(self.base_delay_s, self.max_delay_s) < 0 or self.window_s <= 0:
            raise ConfigError("RestartPolicy: delays must be >= 0 and window_s > 0")
        if self.max_failures < 1:
            raise ConfigError("RestartPolicy: max_failures must be at least 1")


class _RestartTracker:
    """Applies a :class:`RestartPolicy` to one server's failures."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._failures: deque[float] = deque()
        self._streak = 0  # failures since the last call that went through

    def record_failure(self) -> None:
        self._failures.append(time.monotonic())
        self._streak += 1

    def record_success(self) -> None:
        self._streak = 0

    def delay_before_start(self) -> float:
        """Seconds to wait before the next start; raises :class:`_Unavailable` at the cap."""
        policy, now = self.policy, time.monotonic()
        while self._failures and self._failures[0] <= now - policy.window_s:
            self._failures.popleft()
        if len(self._failures) >= policy.max_failures:
            retry_in = self._failures[0] + policy.window_s - now
            raise _Unavailable(
                f"failed {len(self._failures)} times in the last {policy.window_s:g}s; "
                f"not restarting it for another {retry_in:.1f}s"
            )
        if self._streak <= 1:
            return 0.0
        delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (self._streak - 2))
        return max(0.0, self._failures[-1] + delay - now) if self._failures else 0.0
