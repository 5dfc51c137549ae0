"""The built-in tools' limits and argument models.

The size limits (``MAX_*``) bound what a caller may pass in and what a tool hands back; the
pydantic models turn them into each tool's JSON schema and validation, so a schema and the
checks behind it come from one place. :class:`WorkspaceError` (a refusal by the workspace
rules) and :class:`ProcessLimits` (the kernel limits for child Python processes) live here
too: every other module of the package uses them, and they depend on nothing in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trinity.tools import netguard

MAX_OUTPUT_CHARS = 64_000
MAX_WRITE_CHARS = 5_000_000
MAX_PATH_CHARS = 4096
MAX_PATTERN_CHARS = 1000
MAX_COMMAND_CHARS = 20_000
MAX_CODE_CHARS = 100_000
MAX_EDIT_FILE_BYTES = 10_000_000
MAX_FETCH_BYTES = 2_000_000
MAX_REDIRECTS = 5
MAX_HEADERS = 32
MAX_HEADER_VALUE_CHARS = 4096
_CAPTURE_BYTES = MAX_OUTPUT_CHARS * 4  # enough bytes for MAX_OUTPUT_CHARS of any UTF-8 text


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


_PathField = Field(max_length=MAX_PATH_CHARS, description="File path relative to the workspace")
_TimeoutField = Field(
    default=None, gt=0, le=3600, description="Seconds before it is killed (default: the tools')"
)


class ReadArgs(_Args):
    path: str = _PathField


class WriteArgs(_Args):
    path: str = _PathField
    content: str = Field(max_length=MAX_WRITE_CHARS, description="Text to write")
    append: bool = Field(default=False, description="Append instead of replacing")


class EditArgs(_Args):
    path: str = _PathField
    old: str = Field(min_length=1, max_length=MAX_WRITE_CHARS, description="Exact text to replace")
    new: str = Field(max_length=MAX_WRITE_CHARS, description="Replacement text")
    count: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="How many occurrences of `old` there must be (all are replaced); "
        "default: exactly one",
    )
    all: bool = Field(default=False, description="Replace every occurrence, however many")

    @model_validator(mode="after")
    def _count_or_all(self) -> EditArgs:
        if self.all and self.count is not None:
            raise ValueError("give `count` or `all`, not both")
        return self


class ListArgs(_Args):
    path: str = Field(
        default=".", max_length=MAX_PATH_CHARS, description="Directory relative to the workspace"
    )
    recursive: bool = False


class GlobArgs(_Args):
    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Glob relative to the workspace: `*`, `?`, `[..]`, and `**` for any "
        "number of directories (e.g. `src/**/*.py`)",
    )
    max_results: int = Field(default=500, ge=1, le=10_000)


class SearchArgs(_Args):
    pattern: str = Field(
        min_length=1, max_length=MAX_PATTERN_CHARS, description="Regular expression (Python)"
    )
    path: str = Field(
        default=".", max_length=MAX_PATH_CHARS, description="File or directory to search"
    )
    literal: bool = Field(default=False, description="Match `pattern` as plain text")
    ignore_case: bool = False
    include: str | None = Field(
        default=None,
        max_length=MAX_PATTERN_CHARS,
        description="Only files matching this glob (`*.py` matches the name anywhere; a "
        "pattern with `/` matches the path from the workspace root)",
    )
    max_matches: int = Field(default=100, ge=1, le=1000)
    timeout_s: float | None = _TimeoutField


class ShellArgs(_Args):
    command: str = Field(
        min_length=1, max_length=MAX_COMMAND_CHARS, description="Shell command line"
    )
    timeout_s: float | None = _TimeoutField

    @field_validator("command")
    @classmethod
    def _no_nul(cls, command: str) -> str:
        # A command line is a C string: the kernel cannot take a NUL inside one.
        if "\x00" in command:
            raise ValueError("the command contains a NUL character, which no shell can run")
        return command


class PythonArgs(_Args):
    code: str = Field(
        min_length=1, max_length=MAX_CODE_CHARS, description="Python source to run as a script"
    )
    timeout_s: float | None = _TimeoutField


MAX_QUESTION_CHARS = 2_000
MAX_CHOICES = 20


class AskArgs(_Args):
    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, description="What to ask the person"
    )
    choices: list[str] = Field(
        default_factory=list,
        max_length=MAX_CHOICES,
        description="The answers the person may give; empty: any text",
    )


class FetchArgs(_Args):
    url: str = Field(
        min_length=1, max_length=netguard.MAX_URL_CHARS, description="http:// or https:// URL"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_HEADERS, description="Extra request headers"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=300)
    max_bytes: int | None = Field(
        default=None, gt=0, description="Read at most this many bytes of the body"
    )


class WorkspaceError(ValueError):
    """A path, pattern or file the workspace rules refuse."""


@dataclass(frozen=True, slots=True)
class ProcessLimits:
    """Kernel resource limits for child Python processes (``python.run``, the search worker).

    Applied with ``setrlimit`` in the child before the interpreter that runs the untrusted
    code starts, so neither the code nor anything it spawns can raise them.
    """

    cpu_s: int = 60
    """CPU seconds; the kernel sends SIGXCPU when they are spent."""
    memory_bytes: int = 1 << 30
    """Address space: allocations past it fail (``MemoryError``)."""
    file_size_bytes: int = 256 << 20
    """Largest file the process may write (SIGXFSZ past it)."""
    open_files: int = 256


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(arguments)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
