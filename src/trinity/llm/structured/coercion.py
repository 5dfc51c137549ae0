"""Schema-guided forgiveness: fix what a reply's JSON gets slightly wrong before validation.

Given a pydantic model's JSON schema, these helpers unwrap or wrap the top-level value
(:func:`_reshape`), forgive type slips the schema makes unambiguous (:func:`_coerce`), and rank
failed candidates by how many fields they name (:func:`_relevance`). Everything they leave alone
is pydantic's to judge; :func:`~trinity.llm.structured.parse_structured` ties them together.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from trinity.llm.structured.limits import MAX_DEPTH


@functools.lru_cache(maxsize=256)
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, or ``{}`` when it has none (then nothing is coerced).

    Cached: building a schema costs far more than parsing a typical reply. Never mutated.
    """
    try:
        return model.model_json_schema()
    except Exception:  # a field type without a JSON schema: coercion is only a nicety
        return {}


def _resolve(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and single-item ``allOf``) to the schema node that describes a value."""
    for _ in range(32):  # a bound, in case of a self-referencing alias
        if not isinstance(node, dict):
            return {}
        if "$ref" in node and isinstance(node["$ref"], str):
            node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node
    return {}


def _non_null_branch(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    """For ``X | None`` (``anyOf`` with one non-null branch), the schema of ``X``."""
    branches = node.get("anyOf")
    if not isinstance(branches, list):
        return None
    others = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    return _resolve(others[0], defs) if len(others) == 1 else None


def _is_array(node: Any, defs: dict[str, Any]) -> bool:
    node = _resolve(node, defs)
    node = _non_null_branch(node, defs) or node
    return node.get("type") == "array"


def _coerce(value: Any, node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """Forgive the type slips the schema makes unambiguous; leave everything else to pydantic.

    * a number where a string is expected becomes its text;
    * a single value where an array is expected becomes a one-item array;
    * a boolean written as text with spaces around it loses them (pydantic does the rest).

    Unions other than ``X | None`` are left alone: which branch was meant is not clear.
    """
    if depth > MAX_DEPTH or value is None:
        return value
    node = _resolve(node, defs)
    if "anyOf" in node:
        branch = _non_null_branch(node, defs)
        return value if branch is None else _coerce(value, branch, defs, depth + 1)
    kind = node.get("type")
    if kind == "string":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif kind == "boolean":
        if isinstance(value, str):
            return value.strip()
    elif kind == "array":
        items = value if isinstance(value, list) else [value]
        item_schema = node.get("items")
        if not isinstance(item_schema, dict):
            return items
        coerced = []
        for item in items:
            coerced.append(_coerce(item, item_schema, defs, depth + 1))
        return coerced
    elif kind == "object" and isinstance(value, dict):
        properties = node.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        extra = node.get("additionalProperties")
        result = {}
        for key, item in value.items():
            item_schema = properties.get(key, extra)
            fits = isinstance(item_schema, dict)
            result[key] = _coerce(item, item_schema, defs, depth + 1) if fits else item
        return result
    return value


def _reshape(value: Any, schema: dict[str, Any]) -> Any:
    """Fix the top-level shape: unwrap ``{"plan": {...}}``, wrap a bare list.

    A single-key object whose key is not a field and whose value holds the model's fields is a
    wrapper; a top-level array goes into the model's only array field, or its only required
    one (a plan's ``steps``, not its optional ``success``).
    """
    defs = schema.get("$defs", {})
    root = _resolve(schema, defs)
    properties = root.get("properties")
    if not isinstance(properties, dict) or not properties:
        return value
    array_fields = [name for name, node in properties.items() if _is_array(node, defs)]
    if len(array_fields) > 1:
        array_fields = [name for name in array_fields if name in root.get("required", [])]
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key not in properties:
            holds_fields = isinstance(inner, dict) and bool(properties.keys() & inner.keys())
            holds_items = isinstance(inner, list) and len(array_fields) == 1
            if holds_fields or holds_items:
                value = inner
    if isinstance(value, list) and len(array_fields) == 1:
        value = {array_fields[0]: value}
    return value


def _relevance(value: Any, schema: dict[str, Any]) -> int:
    """How many of the model's fields a candidate names: to pick which failure to report."""
    properties = _resolve(schema, schema.get("$defs", {})).get("properties")
    if not isinstance(value, dict) or not isinstance(properties, dict):
        return 0
    return len(properties.keys() & value.keys())
