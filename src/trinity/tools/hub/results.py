"""What a call returns: an MCP result made a :class:`ToolResult`.

:func:`_convert_result` flattens a result's content blocks to text (non-text blocks
summarised, structured content when there is no text) and caps it at the built-in tools'
output limit.
"""

from __future__ import annotations

import json
from typing import Any

from mcp import types

from trinity.state import ToolResult
from trinity.tools.builtin import MAX_OUTPUT_CHARS


def _convert_result(qualified: str, result: types.CallToolResult) -> ToolResult:
    """Text blocks joined; other blocks summarised; structured content when there is no text."""
    parts = [_render_block(block) for block in result.content]
    has_text = any(isinstance(block, types.TextContent) for block in result.content)
    if not has_text and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text, truncated = _cap("\n".join(parts))
    exit_code = _exit_code(result.structured_content)
    if result.is_error:
        return ToolResult(
            ok=False,
            output=text,
            error=text or f"{qualified} reported an error without a message",
            exit_code=exit_code,
            truncated=truncated,
        )
    return ToolResult(ok=True, output=text, exit_code=exit_code, truncated=truncated)


def _exit_code(structured: Any) -> int | None:
    """A process exit code a server reports in structured content (Trinity's own server sends
    its whole ToolResult there), so ``exit_code`` checks work on shell tools behind MCP too."""
    if isinstance(structured, dict):
        code = structured.get("exit_code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _render_block(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, {_base64_size(block.data)} bytes]"
    if isinstance(block, types.ResourceLink):
        label = f" ({block.name})" if block.name else ""
        return f"[resource link: {block.uri}{label}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        mime = f", {resource.mime_type}" if resource.mime_type else ""
        if isinstance(resource, types.TextResourceContents):
            return f"[resource: {resource.uri}{mime}, {len(resource.text)} characters]"
        return f"[resource: {resource.uri}{mime}, {_base64_size(resource.blob)} bytes]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _base64_size(data: str) -> int:
    """Decoded size of base64 ``data`` without decoding it."""
    stripped = data.strip()
    padding = len(stripped) - len(stripped.rstrip("="))
    return max(0, len(stripped) * 3 // 4 - padding)


def _cap(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text, False
    cut = len(text) - MAX_OUTPUT_CHARS
    return text[:MAX_OUTPUT_CHARS] + f"\n[… {cut} characters cut]", True
