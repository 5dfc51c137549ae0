"""Trinity Runtime: autonomous, tool-using AI tasks, run safely."""

from trinity.config import Settings
from trinity.runtime import RunRequest, Runtime
from trinity.state import RunState, StopReason

__all__ = ["RunRequest", "RunState", "Runtime", "Settings", "StopReason"]
__version__ = "0.1.0"
