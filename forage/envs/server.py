"""Serve any registered Gymnasium env over HTTP as JSON sessions (``forage serve env ID``).

Endpoints (all JSON):

- ``GET  /health``                      -> ``{"status": "ok", "env_id", "sessions", "max_sessions", ...}``
- ``POST /sessions``                    -> ``{"session_id", "env_id", "session_timeout"}`` (body: ``{"env_id"?, "kwargs"?}``)
- ``POST /sessions/{sid}/reset``        -> ``{"observation", "info"}`` (body: ``{"seed"?, "options"?}``)
- ``POST /sessions/{sid}/step``         -> ``{"observation", "reward", "terminated", "truncated", "info"}`` (body: ``{"action"}``)
- ``POST /sessions/{sid}/end_episode``  -> ``{"reward", "info"}`` (body: ``{"reason"?}``): end the running episode as
  truncated now (scored and torn down, as ``ToolEnv.aend_episode``); the session stays open for the next reset
- ``DELETE /sessions/{sid}``            -> ``{"closed": true}``
- ``WS   /ws``                          -> the same operations, pipelined: see below

Over ``/ws`` a client sends frames (JSON text, or msgpack binary: see ``wire``) holding one request or a list of them, each
``{"id": any, "op": "create"|"reset"|"step"|"end_episode"|"close", "session_id"?, ...the HTTP body's fields}``, and
gets back frames holding lists of ``{"id", "result"}`` or ``{"id", "error", "type", "status"}`` (the
HTTP status it would have had), in completion order. A reset's result leaves out the big ``info``
values (lists, dicts, long strings) equal to those of the session's previous reset and names them in
``"same": [keys]``. One connection carries any number of
sessions; a step that cannot suspend (sync tools) is answered inline, and the replies to one frame
go back as one frame. Sessions created over a connection are closed when it closes.

Forage ``ToolEnv`` sessions run on the server's event loop through ``areset``/``astep``; any other
env runs its sync API in a worker thread. Each session serialises its own calls, sessions run
concurrently, and sessions idle longer than ``session_timeout`` seconds are closed by a reaper.
Errors come back as ``{"error": message, "type": kind}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from .wire import decode, dumps, encode, to_jsonable

__all__ = ["EnvServerConfig", "SessionManager", "create_app", "serve_env", "to_jsonable"]

log = logging.getLogger("forage.envs.server")

MAX_BODY_BYTES = 16 << 20
MAX_BATCH = 4096        # requests in one WebSocket frame
REPLY_CHUNK = 16        # a frame of more requests sends its first half's answers before doing the rest


@dataclass
class EnvServerConfig:
    """What the env server serves and how many sessions it keeps, for how long."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    session_timeout: float = 600.0      # seconds a session may stay idle before it is reaped
    max_sessions: int = 1024
    allow_client_kwargs: bool = False   # let clients pass constructor kwargs (trusted networks only)
    reap_interval: float | None = None  # default: min(session_timeout / 4, 10) seconds


class ApiError(Exception):
    """An error the server reports to the client with an HTTP status."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass
class _Session:
    sid: str
    env: gym.Env
    is_async: bool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0


class SessionManager:
    """Creates, steps, reaps and closes env sessions."""

    def __init__(self, config: EnvServerConfig) -> None:
        self.config = config
        self.sessions: dict[str, _Session] = {}
        self.reaped = 0
        self.created = 0
        self._reaper: asyncio.Task | None = None

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the reaper task."""
        self._reaper = asyncio.create_task(self._reap_loop())

    async def stop(self) -> None:
        """Stop the reaper and close every session."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self.close(sid) for sid in list(self.sessions)), return_exceptions=True)

    async def _reap_loop(self) -> None:
        cfg = self.config
        interval = cfg.reap_interval or max(0.05, min(cfg.session_timeout / 4, 10.0))
        while True:
            await asyncio.sleep(interval)
            await self.reap_idle()

    async def reap_idle(self) -> int:
        """Close sessions idle longer than the timeout; return how many."""
        now = time.monotonic()
        stale = [s.sid for s in self.sessions.values()
                 if s.busy == 0 and now - s.last_used > self.config.session_timeout]
        for sid in stale:
            log.info("reaping idle session %s", sid)
            await self.close(sid)
        self.reaped += len(stale)
        return len(stale)

    # -- operations -----------------------------------------------------------------------
    async def create(self, env_id: str | None = None, kwargs: dict[str, Any] | None = None) -> _Session:
        """Make a new env session."""
        cfg = self.config
        if env_id is not None and env_id != cfg.env_id:
            raise ApiError(400, "wrong_env", f"this server serves {cfg.env_id!r}, not {env_id!r}")
        if kwargs and not cfg.allow_client_kwargs:
            raise ApiError(403, "kwargs_forbidden", "this server does not accept client env kwargs "
                           "(start it with --allow-client-kwargs, or set them with --kwarg on the server)")
        if len(self.sessions) >= cfg.max_sessions:
            await self.reap_idle()
            if len(self.sessions) >= cfg.max_sessions:
                raise ApiError(503, "too_many_sessions", f"the server holds its maximum of {cfg.max_sessions} sessions; "
                               "close some (DELETE /sessions/ID) or retry later")
        merged = {**cfg.kwargs, **(kwargs or {})}
        try:
            env = (await asyncio.to_thread(gym.make, cfg.env_id, disable_env_checker=True, **merged)).unwrapped
        except TypeError as e:
            raise ApiError(400, "bad_kwargs", f"could not make {cfg.env_id!r} with kwargs {merged}: {e}") from e
        from .base import ToolEnv

        sid = uuid.uuid4().hex
        session = _Session(sid, env, isinstance(env, ToolEnv))
        self.sessions[sid] = session
        self.created += 1
        return session

    def get(self, sid: str) -> _Session:
        """The live session ``sid`` (404 if unknown, closed or reaped)."""
        session = self.sessions.get(sid)
        if session is None:
            raise ApiError(404, "no_session", f"no session {sid!r} (closed, or reaped after "
                           f"{self.config.session_timeout:g} s idle); create a new one")
        return session

    def try_inline(self, sid: str, name: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """``(True, reply)`` when ``reset``/``step`` ran to completion right now (a Forage env whose
        call cannot suspend, on an idle session); ``(False, None)`` when it has to go the async way,
        ``(False, task)`` when it started but suspended (await the task for the reply)."""
        session = self.get(sid)
        env = session.env
        if session.busy or not session.is_async or not env.runs_inline(name):
            return False, None
        coro = getattr(env, "a" + name)(*args, **kwargs)
        session.busy += 1
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return True, _REPLIES[name](session, stop.value)
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()
        # It suspended after all (runs_inline() was wrong): finish it in a task, holding the session.
        return False, asyncio.ensure_future(self._finish(session, name, coro, yielded))

    async def _finish(self, session: _Session, name: str, coro: Any, yielded: Any) -> dict[str, Any]:
        from .base import _resume

        session.busy += 1
        try:
            return _REPLIES[name](session, await _resume(coro, yielded))
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()

    async def _call(self, session: _Session, name: str, *args: Any, **kwargs: Any) -> Any:
        session.busy += 1
        try:
            async with session.lock:
                if session.is_async:
                    return await getattr(session.env, "a" + name)(*args, **kwargs)
                return await asyncio.to_thread(getattr(session.env, name), *args, **kwargs)
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()

    async def reset(self, sid: str, seed: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Reset a session's env."""
        done, out = self.try_inline(sid, "reset", seed=seed, options=options)
        if done or out is not None:
            return out if done else await out
        session = self.get(sid)
        return _reset_reply(session, await self._call(session, "reset", seed=seed, options=options))

    async def step(self, sid: str, action: Any) -> dict[str, Any]:
        """Step a session's env with ``action``."""
        done, out = self.try_inline(sid, "step", action=action)
        if done or out is not None:
            return out if done else await out
        session = self.get(sid)
        return _step_reply(session, await self._call(session, "step", action))

    async def end_episode(self, sid: str, reason: str = "truncated") -> dict[str, Any]:
        """End a session's running episode now (scored, torn down): ``{"reward", "info"}`` as ``aend_episode`` gives.

        An env without ``aend_episode``/``end_episode`` (a plain Gymnasium env) has nothing to end: ``0.0`` and
        empty ``rewards``, as the rollout engine treats such an env in-process.
        """
        session = self.get(sid)
        env = session.env
        if not (session.is_async and hasattr(env, "aend_episode")) and not callable(getattr(env, "end_episode", None)):
            return {"reward": 0.0, "info": {"rewards": {}, "stop_reason": None, "answer": None}}
        reward, info = await self._call(session, "end_episode", reason)
        return {"reward": float(reward), "info": info}

    async def close(self, sid: str) -> bool:
        """Close and forget a session; False if it did not exist."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        try:
            async with session.lock:
                if session.is_async:
                    await session.env.aclose()
                else:
                    await asyncio.to_thread(session.env.close)
        except Exception as e:  # a failing close must not break the server
            log.warning("closing session %s failed: %s", sid, e)
        return True


def _reset_reply(session: _Session, out: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    obs, info = out
    return {"observation": _obs(session.env, obs), "info": info}


def _step_reply(session: _Session, out: tuple[Any, Any, Any, Any, dict[str, Any]]) -> dict[str, Any]:
    obs, reward, terminated, truncated, info = out
    return {"observation": _obs(session.env, obs), "reward": float(reward), "terminated": bool(terminated),
            "truncated": bool(truncated), "info": info}


_REPLIES = {"reset": _reset_reply, "step": _step_reply}


def _obs(env: gym.Env, obs: Any) -> Any:
    if isinstance(obs, str):
        return obs
    try:
        return to_jsonable(env.observation_space.to_jsonable([obs])[0])
    except Exception:
        return to_jsonable(obs)


def _error_reply(e: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON error body for an exception raised while serving a request."""
    if isinstance(e, ApiError):
        return e.status, {"error": e.message, "type": e.kind}
    log.exception("env call failed")     # the env raised: report it, keep serving
    name = type(e).__name__
    status = 409 if name == "ResetNeeded" else 500
    return status, {"error": f"{name}: {e}", "type": "env_error" if status == 500 else "reset_needed"}


def _reset_args(data: dict[str, Any]) -> dict[str, Any]:
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ApiError(400, "bad_seed", "seed must be an integer or null")
    options = data.get("options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "bad_options", "options must be a JSON object or null")
    return {"seed": seed, "options": options}


def _step_args(data: dict[str, Any]) -> dict[str, Any]:
    if "action" not in data:
        raise ApiError(400, "no_action", "the body needs an 'action'")
    return {"action": data["action"]}


MAX_REASON_CHARS = 200


def _end_args(data: dict[str, Any]) -> dict[str, Any]:
    reason = data.get("reason", "truncated")
    if reason is None:
        reason = "truncated"
    if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_CHARS:
        raise ApiError(400, "bad_reason", f"reason must be a non-empty string of at most {MAX_REASON_CHARS} characters")
    return {"reason": reason}


class _Ops:
    """The operations both the HTTP routes and the WebSocket serve, each defined once."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.config = manager.config
        self.ws_links = 0       # open WebSocket connections
        self.ws_frames = 0      # frames received over them
        self.ws_requests = 0    # requests those frames held

    async def create(self, data: dict[str, Any]) -> dict[str, Any]:
        kwargs = data.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ApiError(400, "bad_kwargs", "kwargs must be a JSON object")
        env_id = data.get("env_id")
        if env_id is not None and not isinstance(env_id, str):
            raise ApiError(400, "wrong_env", "env_id must be a string or null")
        session = await self.manager.create(env_id, kwargs)
        env = session.env
        spaces = {"observation_max_length": getattr(env.observation_space, "max_length", None),
                  "action_max_length": getattr(env.action_space, "max_length", None)}
        return {"session_id": session.sid, "env_id": self.config.env_id, "session_timeout": self.config.session_timeout,
                "spaces": spaces, "metadata": to_jsonable(getattr(env, "metadata", {}))}

    async def reset(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        args = _reset_args(data)
        return await self.manager.reset(sid, **args)

    async def step(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.step(sid, **_step_args(data))

    async def end_episode(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.end_episode(sid, **_end_args(data))

    async def close(self, sid: str) -> dict[str, Any]:
        if not await self.manager.close(sid):
            self.manager.get(sid)  # raises the 404
        return {"closed": True}

    def health(self) -> dict[str, Any]:
        m, cfg = self.manager, self.config
        return {"status": "ok", "env_id": cfg.env_id, "sessions": len(m.sessions), "max_sessions": cfg.max_sessions,
                "session_timeout": cfg.session_timeout, "sessions_created": m.created, "sessions_reaped": m.reaped,
                "protocols": ["http", "ws"], "ws_links": self.ws_links, "ws_frames": self.ws_frames,
                "ws_requests": self.ws_requests}


class _WSLink:
    """One WebSocket client: many sessions, pipelined requests, batched replies; its sessions close with it."""

    def __init__(self, ops: _Ops, websocket: Any) -> None:
        self.ops = ops
        self.ws = websocket
        self.owned: set[str] = set()
        self.out: list[dict[str, Any]] = []
        self.wake = asyncio.Event()
        self.binary = False                # reply in the kind of frame the client last sent
        self.tasks: set[asyncio.Task] = set()
        self.queued: dict[str, int] = {}   # async ops not finished, by session: later ops on it wait their turn
        self.sent: dict[str, dict[str, Any]] = {}   # big reset-info values last sent, by session

    async def serve(self) -> None:
        """Answer frames until the client goes; then close the sessions it opened."""
        writer = asyncio.create_task(self._write())
        self.ops.ws_links += 1
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                frame = message.get("bytes")
                if frame is None:
                    frame = message.get("text") or ""
                self.binary = isinstance(frame, bytes)
                await self._frame(frame)
                self.wake.set()
        finally:
            self.ops.ws_links -= 1
            writer.cancel()
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(writer, *self.tasks, return_exceptions=True)
            for sid in list(self.owned):   # abandoned by a client that went away
                await self.ops.manager.close(sid)

    async def _write(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.out:
                batch, self.out = self.out, []
                frame = encode(batch, self.binary)
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_text(frame)

    async def _frame(self, frame: bytes | str) -> None:
        try:
            requests = decode(frame)
        except ValueError as e:
            self._fail(None, ApiError(400, "bad_json", f"the frame cannot be read: {e}"))
            return
        if isinstance(requests, dict):
            requests = [requests]
        if not isinstance(requests, list):
            self._fail(None, ApiError(400, "bad_json", "a frame holds one request object or a list of them"))
            return
        if len(requests) > MAX_BATCH:
            self._fail(None, ApiError(413, "too_large", f"{len(requests)} requests in one frame; the limit is {MAX_BATCH}"))
            return
        self.ops.ws_frames += 1
        self.ops.ws_requests += len(requests)
        chunk = max(REPLY_CHUNK, (len(requests) + 1) // 2)
        for n, request in enumerate(requests, 1):
            self._dispatch(request)
            if n % chunk == 0 and n < len(requests) and len(self.out) >= REPLY_CHUNK:
                # Send what is answered so far before doing the rest: the client steps those sessions on
                # meanwhile, instead of both ends taking turns to wait for a whole frame.
                self.wake.set()
                await asyncio.sleep(0)

    def _shrink(self, sid: str, result: dict[str, Any]) -> dict[str, Any]:
        """Leave out the reset-info values (tool schemas, system prompt...) this session was sent last
        time, listing their keys under ``same``; the client fills them back in."""
        info = result.get("info")
        if not isinstance(info, dict):
            return result
        last = self.sent.setdefault(sid, {})
        same = []
        for key, value in list(info.items()):
            if isinstance(value, (list, dict)) or (isinstance(value, str) and len(value) > 64):
                if key in last and last[key] == value:
                    same.append(key)
                    del info[key]
                else:
                    last[key] = value
        if same:
            result["same"] = same
        return result

    def _fail(self, rid: Any, e: Exception) -> None:
        status, body = _error_reply(e)
        body["id"], body["status"] = rid, status
        self.out.append(body)

    def _dispatch(self, request: Any) -> None:
        if not isinstance(request, dict):
            self._fail(None, ApiError(400, "bad_request", "each request must be a JSON object"))
            return
        rid = request.get("id")
        try:
            op = request.get("op")
            if op not in ("create", "reset", "step", "end_episode", "close"):
                raise ApiError(400, "bad_op", f"unknown op {op!r}; use create, reset, step, end_episode or close")
            sid = request.get("session_id")
            if op != "create" and not isinstance(sid, str):
                raise ApiError(400, "no_session_id", f"op {op!r} needs a 'session_id' string")
            started = None
            if op in ("reset", "step") and not self.queued.get(sid):  # type: ignore[arg-type]
                args = _reset_args(request) if op == "reset" else _step_args(request)
                done, started = self.ops.manager.try_inline(sid, op, **args)
                if done:
                    self.out.append({"id": rid, "result": self._shrink(sid, started) if op == "reset" else started})
                    return
        except Exception as e:
            self._fail(rid, e)
            return
        if sid is not None:
            self.queued[sid] = self.queued.get(sid, 0) + 1
        task = asyncio.create_task(self._run(rid, op, sid, request, started))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, rid: Any, op: str, sid: str | None, request: dict[str, Any], started: Any) -> None:
        try:
            if started is not None:
                result = await started
            elif op == "create":
                result = await self.ops.create(request)
                live = self.ops.manager.sessions   # forget the sessions the reaper closed meanwhile
                self.owned = {sid for sid in self.owned if sid in live}
                self.sent = {sid: v for sid, v in self.sent.items() if sid in live}
                self.owned.add(result["session_id"])
            elif op == "close":
                self.owned.discard(sid)  # type: ignore[arg-type]
                self.sent.pop(sid, None)  # type: ignore[arg-type]
                result = await self.ops.close(sid)  # type: ignore[arg-type]
            else:
                result = await getattr(self.ops, op)(sid, request)
            if op == "reset":
                result = self._shrink(sid, result)  # type: ignore[arg-type]
            self.out.append({"id": rid, "result": result})
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._fail(rid, e)
        finally:
            if sid is not None:
                left = self.queued.pop(sid, 1) - 1
                if left:
                    self.queued[sid] = left
        self.wake.set()


def create_app(config: EnvServerConfig) -> Any:
    """The Starlette app serving ``config.env_id`` (its ``state.manager`` is the SessionManager)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    manager = SessionManager(config)
    ops = _Ops(manager)

    def reply(data: Any, status: int = 200) -> Response:
        return Response(dumps(data), status_code=status, media_type="application/json")

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ApiError(400, "bad_json", f"the request body is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "the request body must be a JSON object")
        return data

    def handler(fn: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                return reply(await fn(request))
            except Exception as e:
                status, body = _error_reply(e)
                return reply(body, status)
        return wrapped

    async def health(request: Request) -> dict[str, Any]:
        return ops.health()

    async def create(request: Request) -> dict[str, Any]:
        return await ops.create(await body_of(request))

    async def reset(request: Request) -> dict[str, Any]:
        return await ops.reset(request.path_params["sid"], await body_of(request))

    async def step(request: Request) -> dict[str, Any]:
        return await ops.step(request.path_params["sid"], await body_of(request))

    async def end_episode(request: Request) -> dict[str, Any]:
        return await ops.end_episode(request.path_params["sid"], await body_of(request))

    async def close(request: Request) -> dict[str, Any]:
        return await ops.close(request.path_params["sid"])

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await _WSLink(ops, websocket).serve()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        await manager.start()
        try:
            yield
        finally:
            await manager.stop()

    app = Starlette(routes=[
        Route("/health", handler(health), methods=["GET"]),
        Route("/sessions", handler(create), methods=["POST"]),
        Route("/sessions/{sid}/reset", handler(reset), methods=["POST"]),
        Route("/sessions/{sid}/step", handler(step), methods=["POST"]),
        Route("/sessions/{sid}/end_episode", handler(end_episode), methods=["POST"]),
        Route("/sessions/{sid}", handler(close), methods=["DELETE"]),
        WebSocketRoute("/ws", ws),
    ], lifespan=lifespan)
    app.state.manager = manager
    return app


def serve_env(config: EnvServerConfig, host: str = "127.0.0.1", port: int = 8010, log_level: str = "warning") -> None:
    """Run the env server in the foreground until interrupted (closing every session on exit)."""
    import uvicorn

    import forage  # noqa: F401  (registers the forage/ envs and plugins)

    if config.env_id not in gym.registry:
        raise ValueError(f"unknown env id {config.env_id!r}; see `forage envs`")
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
