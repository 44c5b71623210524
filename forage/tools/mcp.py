"""Any MCP server's tools as Forage tools: ``mcp_tools(url)`` for a ToolEnv (needs the ``mcp`` package, 2.x).

Each Forage tool keeps the server's name, description and input schema (so the env validates the
arguments before a call goes out) and calls the server with the official ``mcp`` client over
Streamable HTTP. A result the server marks ``isError`` becomes a :class:`ToolError`, so the agent
reads ``Error: ...`` as it does for any other tool. One connection per call: simple, and nothing is
left open when an episode or a loop goes away.
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from .base import Tool, ToolError

__all__ = ["mcp_tools", "amcp_tools", "MCPTool"]


def _client(url: str, timeout: float):
    try:
        from mcp import Client
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("MCP tools need the mcp package: pip install 'forage-gym[mcp]'") from e
    return Client(url, read_timeout_seconds=timeout)


def _text(result: Any) -> str:
    parts = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')} block]")
    if not parts and getattr(result, "structured_content", None) is not None:
        import json

        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)


class MCPTool(Tool):
    """One tool of an MCP server, called through the ``mcp`` client."""

    def __init__(self, url: str, name: str, description: str, input_schema: Mapping[str, Any],
                 timeout: float = 60.0, meta: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.meta = dict(meta) if meta else None
        schema = dict(input_schema) if input_schema else {"type": "object", "properties": {}}
        super().__init__(name, description or name, schema, timeout=timeout)

    async def run(self, episode: Any = None, **arguments: Any) -> str:
        """Call the tool on the server; an ``isError`` result raises :class:`ToolError`."""
        try:
            async with _client(self.url, self.timeout or 60.0) as client:
                result = await client.call_tool(self.name, arguments, meta=self.meta)
        except ToolError:
            raise
        except Exception as e:
            raise ToolError(f"the MCP server at {self.url} failed: {type(e).__name__}: {e}") from None
        text = _text(result)
        if getattr(result, "is_error", False):
            raise ToolError(text.removeprefix("Error: ") or "the MCP tool reported an error")  # ToolError adds it back
        return text


async def amcp_tools(url: str, timeout: float = 60.0, include: set[str] | None = None,
                     meta: Mapping[str, Any] | None = None) -> list[MCPTool]:
    """Async twin of :func:`mcp_tools`."""
    try:
        async with _client(url, timeout) as client:
            listed = await client.list_tools()
    except ImportError:
        raise
    except Exception as e:
        raise ConnectionError(f"cannot list the tools of the MCP server at {url}: {type(e).__name__}: {e}") from None
    tools = []
    for t in listed.tools:
        if include is not None and t.name not in include:
            continue
        tools.append(MCPTool(url, t.name, t.description or "", t.input_schema or {}, timeout=timeout, meta=meta))
    return tools


def mcp_tools(url: str, timeout: float = 60.0, include: set[str] | None = None,
              meta: Mapping[str, Any] | None = None) -> list[MCPTool]:
    """The tools of the MCP server at ``url`` (Streamable HTTP, e.g. ``http://host:port/mcp``) as Forage tools.

    ``include`` keeps only those names; ``meta`` is sent as each call's ``_meta``. Raises
    ``ConnectionError`` when the server cannot be reached or listed.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(amcp_tools(url, timeout, include, meta))
    raise RuntimeError("mcp_tools() was called inside a running event loop; await amcp_tools() instead")
