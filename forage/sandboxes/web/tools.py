"""The browser as agent tools: each reads the episode's :class:`Browser` from ``episode.state["browser"]``."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ...tools import Tool, ToolError
from .browser import Browser

__all__ = ["BROWSER_TOOLS", "make_browser_tools", "browser_of"]

BROWSER_TOOLS = ("open", "click", "find", "scroll", "back", "search")


def browser_of(episode: Any) -> Browser:
    """The episode's browser (``episode.state["browser"]``), or a ToolError when there is none."""
    state = getattr(episode, "state", None)
    browser = state.get("browser") if isinstance(state, dict) else None
    if not isinstance(browser, Browser):
        raise ToolError("no browser is attached to this episode")
    return browser


def _obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def make_browser_tools(names: Iterable[str] = BROWSER_TOOLS, timeout: float | None = 60.0,
                       after: Callable[[Any, Browser], None] | None = None) -> list[Tool]:
    """Browser tools named in ``names``; ``after(episode, browser)`` runs after each successful navigation tool."""

    def wrap(method: str) -> Callable[..., Any]:
        async def run(episode: Any = None, **kwargs: Any) -> str:
            browser = browser_of(episode)
            out = getattr(browser, method)(**kwargs)
            if hasattr(out, "__await__"):
                out = await out
            if after is not None:
                after(episode, browser)
            return out

        return run

    specs = {
        "open": ("Open a URL (absolute, or relative to the current page) and show its first view.",
                 _obj({"url": {"type": "string", "description": "the address to open"}}, ["url"])),
        "click": ("Follow a link of the current page by its number (links are shown as [id: text]).",
                  _obj({"link_id": {"type": "integer", "minimum": 1, "description": "the link's number"}},
                       ["link_id"])),
        "find": ("Find text on the current page and jump to the view that contains it.",
                 _obj({"text": {"type": "string", "description": "the text to look for"}}, ["text"])),
        "scroll": ("Move the view of the current page down or up (or to the top/bottom).",
                   _obj({"direction": {"type": "string", "enum": ["down", "up", "top", "bottom"]}}, ["direction"])),
        "back": ("Go back to the previous page.", _obj({}, [])),
        "search": ("Search the site and show the results page.",
                   _obj({"query": {"type": "string", "description": "a few keywords"}}, ["query"])),
    }
    tools = []
    for name in names:
        if name not in specs:
            raise ValueError(f"unknown browser tool {name!r}; choose from {', '.join(BROWSER_TOOLS)}")
        desc, params = specs[name]
        tools.append(Tool(name, desc, params, wrap(name), episode_arg="episode", concurrent=False, timeout=timeout))
    return tools
