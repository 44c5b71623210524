"""A Forage env's tools as an MCP server (Streamable HTTP, the ``mcp`` 2.x SDK): ``forage serve mcp ENV``.

Every MCP session gets its own env episode. The tools listed are the env's own (name, description,
input schema) plus ``reset`` (start an episode: ``seed`` or ``task_id``; returns the task prompt).
Each call is one env step through :class:`~forage.integrations.session.EnvSession`, so argument
checks, budgets, error texts and rewards are the native API's; the result's ``structuredContent``
carries ``reward``, ``terminated``, ``truncated``, ``episode_reward`` and the reward components, and
``isError`` is set when the env reported an error.

Which episode a call belongs to: the ``Mcp-Session-Id`` of a session-ful (2025 handshake) client;
a client on the stateless 2026-07-28 protocol has no session, so ``reset`` hands it an episode id,
which later calls send as ``_meta["forage/episode"]`` (``mcp_tools(url, meta=...)`` does that).
Episodes idle for ``session_timeout`` seconds are closed (a client that disappears leaks nothing),
a session's ``DELETE`` closes its episode at once, and at most ``max_sessions`` are held.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from .session import EnvSession

__all__ = ["MCPEnvConfig", "create_mcp_app", "serve_mcp", "EPISODE_META_KEY"]

EPISODE_META_KEY = "forage/episode"
RESET_TOOL = "reset"


@dataclass
class MCPEnvConfig:
    """What ``forage serve mcp`` serves and its limits."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    session_timeout: float = 600.0   # seconds of idleness after which an episode is closed
    max_sessions: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ValueError("env_id must be a registered env id")
        if not self.session_timeout > 0:
            raise ValueError("session_timeout must be > 0")
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ValueError("max_sessions must be a positive integer")


@dataclass
class _Held:
    session: EnvSession
    lock: asyncio.Lock
    last_used: float


class _Episodes:
    """The env sessions held for MCP sessions: created on demand, reaped when idle or deleted."""

    def __init__(self, config: MCPEnvConfig) -> None:
        self.config = config
        self.held: dict[str, _Held] = {}
        self.closed = 0

    def _idle(self) -> list[str]:
        now = time.monotonic()
        return [k for k, h in self.held.items() if now - h.last_used > self.config.session_timeout and not h.lock.locked()]

    def reap(self) -> None:
        """Close the episodes idle for longer than the timeout."""
        for key in self._idle():
            self.close(key)

    async def areap(self) -> None:
        """Close the idle episodes, their teardown off the event loop."""
        gone = [self.held.pop(k) for k in self._idle()]
        for held in gone:
            self.closed += 1
            try:
                await asyncio.to_thread(held.session.close)
            except Exception:
                pass

    def close(self, key: str) -> None:
        """Close one episode (if held)."""
        held = self.held.pop(key, None)
        if held is not None:
            self.closed += 1
            try:
                held.session.close()
            except Exception:
                pass

    def get(self, key: str, create: bool) -> _Held | None:
        held = self.held.get(key)
        if held is None and create:
            if len(self.held) >= self.config.max_sessions:
                raise RuntimeError(f"the server holds {self.config.max_sessions} episodes already; try again later")
            held = _Held(EnvSession(self.config.env_id, self.config.env_kwargs), asyncio.Lock(), time.monotonic())
            self.held[key] = held
        if held is not None:
            held.last_used = time.monotonic()
        return held

    def close_all(self) -> None:
        """Close every episode (server shutdown)."""
        for key in list(self.held):
            self.close(key)


def _reset_tool_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {
        "seed": {"type": "integer", "description": "seed of the task draw (optional)"},
        "task_id": {"type": "string", "description": "a task id to play (optional)"}},
        "additionalProperties": False}


def create_mcp_app(config: MCPEnvConfig, host: str = "127.0.0.1"):
    """The Starlette app of the MCP server at ``/mcp`` (and ``GET /health``)."""
    import mcp_types as types
    from mcp.server import Server
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    probe = EnvSession(config.env_id, config.env_kwargs)   # fails here, clearly, for an unknown env id
    try:
        env_tools = [types.Tool(name=t.name, description=t.description, input_schema=t.parameters) for t in probe.tools]
        names = {t.name for t in probe.tools}
        prompt_hint = probe.env.system_prompt
    finally:
        probe.close()
    if RESET_TOOL in names:
        raise ValueError(f"{config.env_id} has a tool named {RESET_TOOL!r}; the MCP server needs that name")
    reset_tool = types.Tool(name=RESET_TOOL, description=f"Start a new episode of {config.env_id} and return the "
                            "task. Call it first.", input_schema=_reset_tool_schema())
    episodes = _Episodes(config)

    def result(text: str, error: bool, structured: dict[str, Any] | None = None):
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error,
                                    structured_content=structured)

    def episode_key(ctx: Any, params: Any) -> str | None:
        given = None
        for meta in (getattr(params, "meta", None), getattr(ctx, "meta", None)):
            if meta is not None and hasattr(meta, "model_dump"):
                meta = meta.model_dump(by_alias=True)
            if isinstance(meta, Mapping) and meta.get(EPISODE_META_KEY):
                given = meta[EPISODE_META_KEY]
                break
        if isinstance(given, str) and given:
            return "ep:" + given
        request = getattr(ctx, "request", None)
        sid = request.headers.get("mcp-session-id") if request is not None else None
        return "sid:" + sid if sid else None

    async def list_tools(ctx: Any, params: Any):
        await episodes.areap()
        return types.ListToolsResult(tools=[reset_tool, *env_tools])

    async def call_tool(ctx: Any, params: Any):
        await episodes.areap()
        name, arguments = params.name, params.arguments or {}
        key = episode_key(ctx, params)
        if name == RESET_TOOL:
            bad = [k for k in arguments if k not in ("seed", "task_id")]
            if bad:
                return result(f"Error: invalid arguments for reset: unexpected {bad}", True)
            seed, task_id = arguments.get("seed"), arguments.get("task_id")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                return result(f"Error: invalid arguments for reset: seed must be an integer, got {seed!r}", True)
            new_id = None
            if key is None:    # a stateless client: the episode id travels in _meta from now on
                new_id = uuid.uuid4().hex
                key = "ep:" + new_id
            try:
                held = episodes.get(key, create=True)
            except RuntimeError as e:
                return result(f"Error: {e}", True)
            async with held.lock:
                try:
                    obs, info = await asyncio.to_thread(held.session.reset, seed, task_id)
                except (KeyError, ValueError, TypeError) as e:
                    return result(f"Error: {e}", True)
            structured = {"task_id": info.get("task_id"), "system_prompt": prompt_hint}
            if new_id is not None:
                structured["episode"] = new_id
            return result(obs, False, structured)
        if key is None or episodes.get(key, create=False) is None:
            hint = "" if key is not None else (f" (this connection has no MCP session: send the episode id that "
                                               f"reset returned as _meta[{EPISODE_META_KEY!r}])")
            return result(f"Error: no episode is running; call {RESET_TOOL} first{hint}", True)
        held = episodes.get(key, create=False)
        async with held.lock:
            out = await asyncio.to_thread(held.session.call, name, arguments)
        errors = out.info.get("tool_errors") or []
        return result(out.text, bool(errors), {
            "reward": out.reward, "terminated": out.terminated, "truncated": out.truncated,
            "episode_reward": held.session.reward, "rewards": dict(out.info.get("rewards") or {}),
            "stop_reason": out.info.get("stop_reason")})

    server = Server(f"forage:{config.env_id}", on_list_tools=list_tools, on_call_tool=call_tool,
                    instructions=prompt_hint)
    app = server.streamable_http_app(session_idle_timeout=config.session_timeout, host=host,
                                     max_sessions=config.max_sessions)

    async def health(request: Request):
        await episodes.areap()
        return JSONResponse({"status": "ok", "env": config.env_id, "episodes": len(episodes.held),
                             "closed": episodes.closed})

    app.router.routes.append(Route("/health", health, methods=["GET"]))

    inner_lifespan = app.router.lifespan_context

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(a: Any):
        async def reaper() -> None:   # idle episodes go even when no request comes
            while True:
                await asyncio.sleep(min(30.0, config.session_timeout))
                await episodes.areap()

        task = asyncio.create_task(reaper())
        try:
            async with inner_lifespan(a):
                yield
        finally:
            task.cancel()
            episodes.close_all()

    app.router.lifespan_context = lifespan

    class _CloseOnDelete:
        """A session-ful client's DELETE /mcp ends its MCP session: close its episode too."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and scope.get("method") == "DELETE":
                sid = dict(scope.get("headers") or []).get(b"mcp-session-id")
                if sid:
                    episodes.close("sid:" + sid.decode("latin-1"))
            await self.inner(scope, receive, send)

    wrapped = _CloseOnDelete(app)
    wrapped.episodes = episodes  # type: ignore[attr-defined]
    wrapped.router = app.router  # type: ignore[attr-defined]
    return wrapped


def serve_mcp(config: MCPEnvConfig, host: str = "127.0.0.1", port: int = 8030) -> None:
    """Run the MCP server in the foreground (uvicorn) until interrupted."""
    import uvicorn

    uvicorn.run(create_mcp_app(config, host), host=host, port=port, log_level="warning", access_log=False)
