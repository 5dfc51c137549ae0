"""Native structured output: asking a server to enforce a reply's JSON schema itself.

Each API has its own way: OpenAI's ``response_format: {"type": "json_schema"}`` (``strict`` when
the schema allows it), Anthropic's forced tool use (the reply is the ``input`` of a tool call).
Servers that speak an API but lack the feature (many OpenAI-compatible ones, older models)
answer with HTTP 400: the provider then drops the feature, remembers that for the server and
model (:data:`REFUSED`, for the life of the process), and asks again, down to the schema in the
prompt that every model understands. The lenient parser of :mod:`trinity.llm.structured`
reads every reply whichever way it was asked for: nothing here is trusted more than a reply.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

FEATURE_WORDS: dict[str, tuple[str, ...]] = {
    "json_schema": ("json_schema", "response_format", "structured output", "strict"),
    "json_object": ("json_object", "response_format", "json mode"),
    "tool": ("tool", "function"),
    "stream_usage": ("stream_options", "include_usage"),
}
"""A feature, and the words a server's 400 message uses when it does not support it."""

REFUSED: dict[tuple[str, str], set[str]] = {}
"""``(endpoint, model) -> features`` the server refused: not asked for again in this process."""

_NAME = re.compile(r"[^A-Za-z0-9_-]")


def refused(endpoint: str, model: str) -> set[str]:
    """The features this server refused for this model (a live set: add to it)."""
    return REFUSED.setdefault((endpoint, model), set())


def refused_feature(message: str, tried: list[str]) -> str | None:
    """Which of the features a request ``tried`` a server's error ``message`` names."""
    lowered = message.lower()
    for feature in tried:
        if any(word in lowered for word in FEATURE_WORDS[feature]):
            return feature
    return None


def note_refusal(endpoint: str, model: str, feature: str, message: str) -> None:
    refused(endpoint, model).add(feature)
    log.info(
        "%s at %s does not support %s (%s): asking without it from now on",
        model,
        endpoint,
        feature,
        message[:200],
    )


def schema_name(name: str) -> str:
    """A name both APIs accept (``^[A-Za-z0-9_-]{1,64}$``)."""
    return (_NAME.sub("_", name) or "reply")[:64]


def is_object_schema(schema: dict[str, Any]) -> bool:
    """Both APIs want an object at the top (Anthropic's tool input, OpenAI's json_schema)."""
    return schema.get("type") == "object" and isinstance(schema.get("properties"), dict)


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` as OpenAI's strict mode takes it, or ``None`` when strict mode cannot express
    it without changing its meaning.

    Strict mode wants every object closed (``additionalProperties: false``) with every property
    required. A schema with optional fields or open dictionaries (a step's ``args``) would have
    to change for that, so it is sent without ``strict``: the server is guided by the schema,
    and the reply is validated here as always.
    """
    closed = copy.deepcopy(schema)
    nodes = [closed, *closed.get("$defs", {}).values()]
    while nodes:
        node = nodes.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") == "object" or "properties" in node:
            properties = node.get("properties")
            if not isinstance(properties, dict) or not properties:
                return None  # an open dictionary
            if set(node.get("required", [])) != set(properties):
                return None  # an optional field
            if node.get("additionalProperties", False) is not False:
                return None
            node["additionalProperties"] = False
            nodes.extend(properties.values())
        for key in ("items", "anyOf", "allOf", "oneOf"):
            value = node.get(key)
            nodes.extend(value if isinstance(value, list) else [value] if value else [])
    return closed


def openai_response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """OpenAI's ``response_format`` for ``schema``: strict when the schema allows it."""
    strict = strict_schema(schema)
    return {
        "type": "json_schema",
        "json_schema": {
            "name": schema_name(name),
            "schema": lean_schema(strict if strict is not None else schema),
            "strict": strict is not None,
        },
    }


def anthropic_tool(schema: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Anthropic's ``tools`` entry and the ``tool_choice`` that forces it."""
    tool_name = schema_name(name)
    tool = {
        "name": tool_name,
        "description": "Give your reply as this tool's input.",
        "input_schema": lean_schema(schema),
    }
    return tool, {"type": "tool", "name": tool_name}


def lean_schema(schema: Any) -> Any:
    """A schema as a model needs it: without pydantic's ``title`` keywords (``"title":
    "Reason"`` for a field named ``reason``: a fifth of a schema's tokens that tell a model
    nothing) and without the docstrings of the classes (a model's ``description``, written for
    Python readers). A *property* named ``title`` stays, and so do fields' descriptions."""
    if isinstance(schema, list):
        return [lean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    is_model = isinstance(schema.get("properties"), dict)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "description" and is_model and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: lean_schema(sub) for name, sub in value.items()}
        else:
            out[key] = lean_schema(value)
    return out
