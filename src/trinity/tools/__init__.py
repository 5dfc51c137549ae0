"""Tools Tetyana can call: the :class:`ToolProvider` protocol, the built-in tools, and the
:class:`ToolHub` that puts them together with any number of MCP servers."""

from trinity.tools.base import ToolProvider, ToolSpec
from trinity.tools.builtin import BuiltinTools
from trinity.tools.hub import ToolHub
from trinity.tools.mcp_config import McpConfig, load_mcp_config, parse_mcp_config

__all__ = [
    "BuiltinTools",
    "McpConfig",
    "ToolHub",
    "ToolProvider",
    "ToolSpec",
    "load_mcp_config",
    "parse_mcp_config",
]
