"""Hostile input: JSON and YAML read with a nesting cap, and YAML without aliases.

A 453-byte YAML file of nested aliases expands to gigabytes, and a few kilobytes of brackets
exhaust Python's recursion limit. Every file Trinity reads (plans, policies, MCP and scripted
model configurations) and every argument a step carries goes through here first.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from trinity.errors import InputError

MAX_DEPTH = 64
"""The deepest nesting of lists and mappings accepted anywhere (a plan's arguments, a policy,
an MCP configuration): far above any real document, far below Python's recursion limit."""

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class HostileInputError(InputError):
    """A document refused before it was used; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def check_yaml(text: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Refuse YAML with an alias (``*name``) or nested deeper than ``max_depth``, before it is
    built into objects. Parse errors are left to the loader, which words them better."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1 if event.start_mark else None
                raise HostileInputError(
                    f"YAML aliases (*{event.anchor}) are not allowed: an alias repeats a "
                    "whole subtree, and nested ones expand without bound; write the value out",
                    line,
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise HostileInputError(f"nested deeper than {max_depth} levels", line)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return


def load_yaml(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``yaml.safe_load`` of ``text`` after :func:`check_yaml`; raises :class:`HostileInputError` or
    ``yaml.YAMLError``."""
    check_yaml(text, max_depth=max_depth)
    return yaml.load(text, Loader=_LOADER)


def load_json(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` (rather than crashing
    with ``RecursionError``); raises :class:`HostileInputError` or ``json.JSONDecodeError``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise HostileInputError(f"nested deeper than {max_depth} levels") from None
    check_depth(value, max_depth=max_depth)
    return value


def depth_of(value: Any, *, stop_at: int = MAX_DEPTH + 1) -> int:
    """How deeply lists, tuples and mappings nest in ``value`` (a scalar: 0), counted without
    recursion; counting stops at ``stop_at``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest >= stop_at:
                return deepest
        stack.extend((child, level) for child in children)
    return deepest


def check_depth(value: Any, *, max_depth: int = MAX_DEPTH, what: str = "value") -> None:
    if depth_of(value, stop_at=max_depth + 1) > max_depth:
        raise HostileInputError(f"{what} is nested deeper than {max_depth} levels")
