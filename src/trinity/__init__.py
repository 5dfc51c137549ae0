"""Trinity Runtime: autonomous, tool-using AI tasks, run safely.

The names below are loaded on first use, so importing a part of Trinity (the CLI, the store)
does not load all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trinity.config import Settings
    from trinity.limits import RunLimits
    from trinity.runtime import RunRequest, Runtime
    from trinity.state import RunState, StopReason

__all__ = ["RunLimits", "RunRequest", "RunState", "Runtime", "Settings", "StopReason"]
__version__ = "0.1.0"

_HOMES = {
    "RunLimits": "trinity.limits",
    "RunRequest": "trinity.runtime",
    "Runtime": "trinity.runtime",
    "Settings": "trinity.config",
    "RunState": "trinity.state",
    "StopReason": "trinity.state",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'trinity' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
