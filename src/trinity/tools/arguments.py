"""Arguments as a tool will see them, for the permission policy.

A rule on ``append: false`` must catch a call that leaves ``append`` out (the default applies)
or writes ``0``, ``"no"`` or ``"off"`` (a lax validator reads them as ``false``). So before
matching, the call's arguments get the defaults of the tool's JSON schema, and booleans,
integers and numbers written as other types are read the way pydantic's lax mode reads them
(which is how the built-in tools validate their arguments).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def effective_args(args: Mapping[str, Any], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """``args`` with the schema's defaults filled in and lax spellings of scalars read as the
    schema's type; arguments the schema does not describe are left as they are."""
    out = dict(args)
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return out
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        if name not in out:
            if "default" in prop:
                out[name] = prop["default"]
            continue
        out[name] = _read_as(out[name], _types(prop))
    return out


def _types(prop: Mapping[str, Any]) -> set[str]:
    """The JSON types a property allows (``type``, or the branches of ``anyOf``/``oneOf``)."""
    kinds: set[str] = set()
    declared = prop.get("type")
    if isinstance(declared, str):
        kinds.add(declared)
    elif isinstance(declared, list):
        kinds.update(k for k in declared if isinstance(k, str))
    for key in ("anyOf", "oneOf"):
        for branch in prop.get(key) or ():
            if isinstance(branch, Mapping):
                kinds |= _types(branch)
    return kinds


def _read_as(value: Any, kinds: set[str]) -> Any:
    if "boolean" in kinds and not isinstance(value, bool):
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    if kinds & {"integer", "number"} and isinstance(value, str) and not isinstance(value, bool):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        if "integer" in kinds and number.is_integer():
            return int(number)
        if "number" in kinds:
            return number
    return value
