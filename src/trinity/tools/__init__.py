"""Tools Tetyana can call: the :class:`ToolProvider` protocol and the built-in tools."""

from trinity.tools.base import ToolProvider, ToolSpec
from trinity.tools.builtin import BuiltinTools

__all__ = ["BuiltinTools", "ToolProvider", "ToolSpec"]
