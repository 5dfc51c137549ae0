"""Error types. Every error a user can cause carries a message that names what was wrong.

Hierarchy::

    TrinityError
    ├── InputError            bad task text, plan file, CLI argument or config value
    │   ├── PlanFileError     a plan file that cannot be read, parsed or validated
    │   ├── PermissionsError  a permission policy that cannot be read or validated
    │   │                     (defined in trinity.tools.permissions)
    │   ├── ApprovalPendingError   a run waits for a person to approve or deny a tool call
    │   ├── RunBusyError      another live process is executing the run (it holds the lease)
    │   ├── NotFoundError     no run (or token…) with that id
    │   └── DuplicateRunError a run was already started with that idempotency key
    ├── ConfigError           model string, missing API key, unusable setting
    ├── LLMError              a provider call failed after its retries
    │   ├── LLMTimeoutError
    │   └── StructuredOutputError   the model never produced valid structured output
    ├── ToolError             a tool could not be called (unknown, bad arguments, refused)
    ├── StoreError            persistence failed (disk full, read-only, I/O error, damage)
    │   ├── LeaseLostError    another process took the run over: this one may not write to it
    │   └── RunNotRecordedError   a run stopped, but its end could not be written
    └── EngineError           a graph was mis-built or a node returned something invalid
"""

from __future__ import annotations


class TrinityError(Exception):
    """Base class of all errors raised on purpose by Trinity."""


class InputError(TrinityError):
    """The user gave something Trinity cannot accept (task, arguments, config values)."""


class PlanFileError(InputError):
    """A plan file could not be read, parsed or validated.

    The message always starts with the file name, and with the line when one is known.
    """

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.detail = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class ApprovalPendingError(InputError):
    """A run cannot go on until a person approves or denies its pending tool call."""

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(message)


class RunBusyError(InputError):
    """Another live process holds the run's lease (it is executing the run)."""

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(message)


class NotFoundError(InputError):
    """No run (or other record) with the id given."""


class DuplicateRunError(InputError):
    """A run was already started with this idempotency key: ``run_id`` is that run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"a run was already started with this idempotency key: {run_id}")


class ConfigError(TrinityError):
    """Configuration is unusable: unknown model string, missing API key, bad setting."""


class LLMError(TrinityError):
    """An LLM provider call failed for good (after retries where retrying made sense)."""

    def __init__(
        self, message: str, *, status: int | None = None, attempts: int = 1, detail: str = ""
    ) -> None:
        self.status = status
        self.attempts = attempts
        self.detail = detail
        """The server's own words, when it said something (part of the message too)."""
        super().__init__(message)


class LLMTimeoutError(LLMError):
    """An LLM call did not complete within its timeout."""


class StructuredOutputError(LLMError):
    """The model's reply could not be turned into the expected structure."""

    def __init__(self, message: str, *, raw: str = "", attempts: int = 1) -> None:
        self.raw = raw
        super().__init__(message, attempts=attempts)


class ToolError(TrinityError):
    """A tool could not be called: unknown name, invalid arguments, or refused by policy."""


class StoreError(TrinityError):
    """The run store failed or holds something unexpected."""


class LeaseLostError(StoreError):
    """This process no longer holds the run's lease: another process took the run over (after
    this one stopped renewing it), and every write of this one is refused."""


class RunNotRecordedError(StoreError):
    """A run stopped, but its end (status, report, last checkpoint) could not be written; the
    run's state as this process knew it is in :attr:`state`."""

    def __init__(self, state: object, message: str) -> None:
        self.state = state
        super().__init__(message)


class EngineError(TrinityError):
    """The graph is mis-built, or a node returned an invalid update."""
