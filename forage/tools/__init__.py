"""Tool specs (JSON schema), tool-call parsing and formatting, tool results."""

from .base import Tool, ToolCall, ToolError, ToolResult, schema_from_function, tool
from .formats import (
    FORMATS,
    HermesFormat,
    OpenAIFormat,
    ParsedAction,
    ToolCallFormat,
    XMLTagFormat,
    get_format,
    truncate_text,
)

__all__ = [
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "tool",
    "schema_from_function",
    "FORMATS",
    "HermesFormat",
    "OpenAIFormat",
    "ParsedAction",
    "ToolCallFormat",
    "XMLTagFormat",
    "get_format",
    "truncate_text",
]


def __getattr__(name: str):  # forage.tools.mcp_tools without importing the mcp package up front
    if name in ("mcp_tools", "amcp_tools", "MCPTool"):
        from . import mcp

        return getattr(mcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
