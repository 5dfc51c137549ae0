"""A listed tool and the check of a call's arguments against its input schema.

:class:`_Tool` holds a server's tool under its namespaced name and validates arguments with
jsonschema before anything is sent. :func:`_quick_object_check` (with :func:`_field_types`) is
the fast path in front of jsonschema for the flat object schemas most tools have; it only
ever says yes when jsonschema would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from mcp import types

from trinity.tools.base import ToolSpec

# One logger for the whole hub, named as before the split, so logging configured for
# "trinity.tools.hub" sees the same records under the same name.
logger = logging.getLogger("trinity.tools.hub")

_MAX_ARGUMENT_ERRORS = 5


class _Tool:
    """A listed tool, its spec under the namespaced name, and its argument validator."""

    def __init__(self, server: str, tool: types.Tool) -> None:
        self.name = tool.name
        schema = dict(tool.input_schema or {})
        hints = tool.annotations
        # A server's word that a tool is read-only or idempotent is believed: a crash during
        # a call of it then costs a repeat of the call, never a second side effect.
        idempotent = hints is not None and bool(hints.read_only_hint or hints.idempotent_hint)
        self.spec = ToolSpec(
            f"{server}.{tool.name}", tool.description or "", schema, idempotent=idempotent
        )
        self._validator: Validator | None = None
        self._quick_check: Callable[[dict[str, Any]], bool] | None = None
        self._compiled = False

    def argument_errors(self, args: dict[str, Any]) -> str | None:
        """``"<path>: <message>; …"`` when ``args`` break the input schema, else None."""
        validator = self._validator_once()
        if validator is None or (self._quick_check is not None and self._quick_check(args)):
            return None
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        parts = [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(arguments)'}: {error.message}"
            for error in errors[:_MAX_ARGUMENT_ERRORS]
        ]
        if len(errors) > _MAX_ARGUMENT_ERRORS:
            parts.append(f"and {len(errors) - _MAX_ARGUMENT_ERRORS} more")
        return "; ".join(parts)

    def _validator_once(self) -> Validator | None:
        # Compiled on first call, not at listing: a server may list hundreds of tools.
        if not self._compiled:
            self._compiled = True
            schema = self.spec.input_schema
            try:
                cls = validator_for(schema)
                cls.check_schema(schema)
                self._validator = cls(schema)
            except SchemaError as exc:
                # The server's bug, not the caller's: let the server judge the arguments.
                logger.warning("%s: input schema is not valid JSON schema: %s", self.spec.name, exc)
            else:
                self._quick_check = _quick_object_check(schema)
        return self._validator


# Keywords that never make an instance invalid (``format`` too: jsonschema asserts formats only
# when given a format checker, and the hub's validators have none).
_ANNOTATIONS = frozenset(
    {"description", "title", "default", "examples", "$comment", "format", "deprecated"}
)
_TOP_KEYWORDS = _ANNOTATIONS | {"$schema", "type", "properties", "required", "additionalProperties"}
_JSON_TYPES: dict[str, frozenset[type]] = {
    # Exact Python types, so bool (a subclass of int) is never taken for a number.
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "null": frozenset({type(None)}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
}
_ANY_TYPE = frozenset[type]()


def _quick_object_check(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """A fast yes for the flat schemas most tools have; None for any other schema.

    jsonschema costs tens of microseconds per call even for ``{"message": string}``, a tenth of
    a whole local MCP round trip. Most tool schemas are one object of typed fields, and for
    those this check says "valid" in about a microsecond. It only ever says yes when jsonschema
    would (anything it is unsure of is a no), and a no goes to jsonschema, which decides and
    writes the messages.
    """
    if not set(schema) <= _TOP_KEYWORDS or schema.get("type", "object") != "object":
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra_allowed = schema.get("additionalProperties", True)
    if (
        not isinstance(properties, dict)
        or not isinstance(required, list)
        or not all(isinstance(name, str) for name in required)
        or not isinstance(extra_allowed, bool)
    ):
        return None
    fields: dict[str, frozenset[type]] = {}
    for name, subschema in properties.items():
        allowed = _field_types(subschema)
        if allowed is None:
            return None
        fields[name] = allowed
    needed = tuple(required)

    def check(args: dict[str, Any]) -> bool:
        for name in needed:
            if name not in args:
                return False
        for name, value in args.items():
            allowed = fields.get(name)
            if allowed is None:  # not a listed property
                if not extra_allowed:
                    return False
            elif allowed and type(value) not in allowed:
                return False
        return True

    return check


def _field_types(subschema: Any) -> frozenset[type] | None:
    """The exact Python types a field may have (empty: any); None if the check can't say."""
    if subschema is True:
        return _ANY_TYPE
    if not isinstance(subschema, dict) or not set(subschema) <= _ANNOTATIONS | {"type"}:
        return None
    kind = subschema.get("type")
    if kind is None:
        return _ANY_TYPE
    kinds = [kind] if isinstance(kind, str) else kind
    if not isinstance(kinds, list) or not all(k in _JSON_TYPES for k in kinds):
        return None
    return frozenset().union(*(_JSON_TYPES[k] for k in kinds))
