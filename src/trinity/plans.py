"""Plan files: YAML or JSON, validated, with errors that name the file, line and field.

A plan file looks like::

    task: Create a greeting and count its words
    steps:
      - id: write
        tool: fs.write
        args: {path: hello.txt, content: "Hello from Trinity"}
        expected: hello.txt holds the greeting
        checks:
          - file_contains: {path: hello.txt, text: Hello}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trinity.errors import PlanFileError
from trinity.security.inputs import MAX_DEPTH, HostileInputError, depth_of, load_json, load_yaml
from trinity.state import Check, Plan, Step, StepSpec, VerificationLevel, task_checks

PLAN_SUFFIXES = (".yaml", ".yml", ".json")


class PlanFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = ""
    """What the plan is for; shown in run lists and used to find lessons."""
    steps: list[StepSpec] = Field(min_length=1)
    rationale: str = ""
    verification: VerificationLevel | None = None
    """Force a verification level (otherwise the Meta-Planner chooses)."""
    success: list[Check] = Field(default_factory=list, max_length=20)
    """File checks that must hold once every step passed (see :attr:`Plan.success`)."""

    @field_validator("success")
    @classmethod
    def _file_checks_only(cls, success: list[Check]) -> list[Check]:
        return task_checks(success)

    def duplicate_step(self) -> int | None:
        """Index of the first step that repeats an earlier step's id."""
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.id in seen:
                return index
            seen.add(step.id)
        return None

    def to_plan(self) -> Plan:
        return Plan(
            steps=[Step(**spec.model_dump()) for spec in self.steps],
            rationale=self.rationale,
            source="file",
            success=self.success,
        )


def looks_like_plan_file(target: str) -> bool:
    """A plan file path rather than a task in words: ends in .yaml/.yml/.json and either is
    one word or names a file that exists ("tidy up settings.yaml" is a task)."""
    text = target.strip()
    if "\n" in text or not text.lower().endswith(PLAN_SUFFIXES):
        return False
    return " " not in text or Path(text).expanduser().is_file()


def load_plan_file(path: str | Path, *, max_bytes: int = 1_000_000) -> PlanFile:
    name = str(path)
    file = Path(path)
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise PlanFileError(name, "file not found") from None
    except OSError as exc:
        raise PlanFileError(name, f"cannot read: {exc.strerror}") from None
    if file.is_dir():
        raise PlanFileError(name, "is a directory, not a plan file")
    if size > max_bytes:
        raise PlanFileError(name, f"file is {size} bytes; the limit is {max_bytes}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlanFileError(name, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PlanFileError(name, f"cannot read: {exc.strerror}") from None
    return parse_plan_data(_parse(name, text), name, text)


def parse_plan_data(data: Any, name: str = "plan", text: str | None = None) -> PlanFile:
    """A plan file's content, already parsed (a JSON body), checked like a file: errors name
    ``name`` and the field, and the line when ``text`` is the source."""
    if data is None:
        raise PlanFileError(name, "file is empty")
    if depth_of(data) > MAX_DEPTH:
        raise PlanFileError(name, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise PlanFileError(name, f"expected a mapping with 'steps', got {type(data).__name__}", 1)
    try:
        plan = PlanFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
        field = _dotted(loc)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        line = _line_of(text, loc) if text is not None else None
        message = error["msg"].removeprefix("Value error, ")
        raise PlanFileError(name, f"{field}: {message}{more}", line) from None
    duplicate = plan.duplicate_step()
    if duplicate is not None:
        step_id = plan.steps[duplicate].id
        line = _line_of(text, ["steps", duplicate, "id"]) if text is not None else None
        raise PlanFileError(name, f"steps[{duplicate}].id: duplicate step id {step_id!r}", line)
    return plan


def _parse(name: str, text: str) -> Any:
    if name.lower().endswith(".json"):
        try:
            return load_json(text)
        except HostileInputError as exc:
            raise PlanFileError(name, str(exc), exc.line) from None
        except json.JSONDecodeError as exc:
            raise PlanFileError(
                name, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno
            ) from None
    try:
        # libyaml's parser when PyYAML has it: ten times faster on a long plan. On an error,
        # the pure-Python parser says it better (it names the character it found).
        return load_yaml(text)
    except HostileInputError as exc:
        raise PlanFileError(name, str(exc), exc.line) from None
    except yaml.YAMLError:
        pass
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise PlanFileError(name, f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise PlanFileError(name, f"invalid YAML: {problem}", line) from None


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(text: str, loc: list[Any]) -> int | None:
    """The 1-based line of the node at ``loc`` (or its nearest ancestor) in YAML/JSON text."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:  # an extra key: point at the key itself
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key.start_mark.line + 1 if key is not None else line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
