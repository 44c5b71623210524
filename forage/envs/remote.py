"""RemoteEnv: a Gymnasium env whose episodes run on a ``forage serve env`` server (WebSocket or HTTP)."""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from typing import Any, Literal

import gymnasium as gym
import httpx

from . import wire
from .spaces import UnicodeText

__all__ = ["RemoteEnv", "RemoteEnvError", "SessionExpired"]


class RemoteEnvError(RuntimeError):
    """The env server is unreachable, timed out, or answered with an error."""


class SessionExpired(RemoteEnvError):
    """The server no longer knows this session (closed, or reaped after idling); ``reset()`` starts a new one."""


MAX_FRAME_BYTES = 64 << 20


def _ws_url(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):] + "/ws"
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):] + "/ws"
    return url + "/ws"


def _error_of(url: str, op: str, reply: dict[str, Any]) -> RemoteEnvError:
    """The exception for an error reply of the server (``SessionExpired`` for an unknown session)."""
    if reply.get("type") == "no_session":
        return SessionExpired(f"{url}: {reply.get('error')}")
    return RemoteEnvError(f"{op} on {url} failed with HTTP {reply.get('status')}: {reply.get('error', reply)}")


def _restore(seen: dict[str | None, dict[str, Any]], sid: str | None, op: str, result: dict[str, Any]) -> dict[str, Any]:
    """Put back the reset-info values the server left out as unchanged (``same``), and remember the new ones.

    The values put back are the objects of the session's earlier reset (treat ``info`` as read-only).
    """
    if op == "close":
        seen.pop(sid, None)
        return result
    if op != "reset" or not isinstance(result.get("info"), dict):
        return result
    info = result["info"]
    cache = seen.setdefault(sid, {})
    for key in result.pop("same", ()):
        if key not in cache:
            raise RemoteEnvError(f"protocol error: the server left out info[{key!r}] as unchanged, but it was never sent")
        info[key] = cache[key]
    for key, value in info.items():
        if isinstance(value, (list, dict)) or (isinstance(value, str) and len(value) > 64):
            cache[key] = value
    return result


def _nothing_to_end() -> tuple[float, dict[str, Any]]:
    """What ``end_episode`` gives when no episode ever started (as ``ToolEnv.aend_episode`` does)."""
    return 0.0, {"rewards": {}, "stop_reason": None, "answer": None}


class _Mux:
    """One WebSocket to a server, shared by the RemoteEnvs of one event loop.

    Requests are pipelined (each waits only for its own reply), and those issued in one turn of
    the loop leave in one frame; replies are matched by id. A dropped connection fails every
    pending request with a clear error, and the next request opens a new connection.
    """

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Mux]]" = weakref.WeakKeyDictionary()

    def __init__(self, url: str, timeout: float, connect_timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.users = 0
        self.pending: dict[int, tuple[asyncio.Future, float, str, float]] = {}   # id -> (reply, deadline, op, timeout)
        self.out: list[dict[str, Any]] = []
        self.ids = itertools.count()
        self.seen: dict[str | None, dict[str, Any]] = {}
        self.ws: Any = None
        self.broken: RemoteEnvError | None = None
        self._opening: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()

    @classmethod
    def of(cls, url: str, timeout: float, connect_timeout: float) -> "_Mux":
        """The live connection of the running loop to ``url`` (a new one if there is none, or it broke)."""
        muxes = cls._by_loop.setdefault(asyncio.get_running_loop(), {})
        mux = muxes.get(url)
        if mux is None or mux.broken is not None:
            mux = muxes[url] = cls(url, timeout, connect_timeout)
        mux.timeout = min(mux.timeout, timeout)   # the sweep runs often enough for the shortest
        return mux

    async def _open(self) -> None:
        from websockets.asyncio.client import connect

        try:
            self.ws = await connect(_ws_url(self.url), open_timeout=self.connect_timeout, compression=None,
                                    ping_interval=None, max_size=MAX_FRAME_BYTES, proxy=None)
        except Exception as e:
            self.broken = RemoteEnvError(f"the env server at {self.url} is unreachable over WebSocket "
                                         f"({type(e).__name__}: {e or 'connection failed'})")
            raise self.broken from e
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write()),
                       asyncio.create_task(self._expire())]

    async def call(self, op: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait up to ``timeout`` s for its reply's ``result`` (raising the server's error)."""
        if self.ws is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
            await asyncio.shield(self._opening)
        if self.broken is not None:
            raise self.broken
        rid = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[rid] = (future, time.monotonic() + timeout, op, timeout)
        body["id"], body["op"] = rid, op
        self.out.append(body)
        self._wake.set()
        reply = await future
        if "result" in reply:
            return _restore(self.seen, body.get("session_id"), op, reply["result"])
        raise _error_of(self.url, op, reply)

    async def _expire(self) -> None:
        """Fail the requests the server left unanswered past their deadline (one sweep, not a timer each)."""
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = time.monotonic()
            for rid in [r for r, entry in self.pending.items() if entry[1] < now]:
                future, _, op, timeout = self.pending.pop(rid)
                if not future.done():
                    future.set_exception(RemoteEnvError(f"the env server at {self.url} did not answer {op} in time "
                                                        f"({timeout:g} s)"))

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.out:
                    batch, self.out = self.out, []
                    await self.ws.send(wire.encode(batch, binary=True))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._break(e)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                replies = wire.decode(frame)
                for reply in replies if isinstance(replies, list) else [replies]:
                    entry = self.pending.pop(reply.get("id"), None)
                    if entry is not None and not entry[0].done():
                        entry[0].set_result(reply)
                    elif reply.get("id") is None and "error" in reply:   # a frame the server could not read
                        self._break(RuntimeError(reply["error"]))
            self._break(ConnectionError("the server closed the connection"))
        except asyncio.CancelledError:
            # released, or the loop is ending without aclose(): drop the socket now, so the server
            # closes this connection's sessions at once rather than when the GC gets to it
            transport = getattr(self.ws, "transport", None)
            if transport is not None:
                transport.abort()
            raise
        except Exception as e:
            self._break(e)

    def _break(self, e: BaseException) -> None:
        if self.broken is None:
            self.broken = RemoteEnvError(f"the env server at {self.url} is unreachable "
                                         f"({type(e).__name__}: {e or 'connection lost'})")
        pending, self.pending = self.pending, {}
        for future, *_ in pending.values():
            if not future.done():
                future.set_exception(self.broken)

    async def release(self) -> None:
        """One user fewer; the last one closes the connection."""
        self.users -= 1
        if self.users > 0:
            return
        muxes = self._by_loop.get(asyncio.get_running_loop(), {})
        if muxes.get(self.url) is self:
            del muxes[self.url]
        self.broken = self.broken or RemoteEnvError(f"the connection to {self.url} was closed")
        for t in self._tasks:
            t.cancel()
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:
                pass
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _SyncWS:
    """A blocking WebSocket for one RemoteEnv used from sync code: one request, one reply."""

    def __init__(self, url: str, timeout: float, connect_timeout: float) -> None:
        self.url, self.timeout, self.connect_timeout = url, timeout, connect_timeout
        self.ws: Any = None
        self.ids = itertools.count()
        self.seen: dict[str | None, dict[str, Any]] = {}

    def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        from websockets.sync.client import connect

        try:
            if self.ws is None:
                self.ws = connect(_ws_url(self.url), open_timeout=self.connect_timeout, compression=None,
                                  ping_interval=None, max_size=MAX_FRAME_BYTES, proxy=None)
            rid = next(self.ids)
            body["id"], body["op"] = rid, op
            self.ws.send(wire.encode(body, binary=True))
            while True:
                replies = wire.decode(self.ws.recv(timeout=self.timeout))
                reply = next((r for r in replies if r.get("id") in (rid, None)), None)
                if reply is not None:
                    break
        except TimeoutError as e:
            self.close()
            raise RemoteEnvError(f"the env server at {self.url} did not answer {op} in time ({self.timeout:g} s)") from e
        except (OSError, EOFError, ValueError, RuntimeError) as e:   # refused, reset, closed, garbled
            self.close()
            raise RemoteEnvError(f"the env server at {self.url} is unreachable ({type(e).__name__}: "
                                 f"{e or 'connection lost'})") from e
        except Exception as e:
            if type(e).__module__.startswith("websockets"):
                self.close()
                raise RemoteEnvError(f"the env server at {self.url} is unreachable ({type(e).__name__}: {e})") from e
            raise
        if "result" in reply:
            return _restore(self.seen, body.get("session_id"), op, reply["result"])
        raise _error_of(self.url, op, reply)

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None


class RemoteEnv(gym.Env[str, str]):
    """A Forage env hosted by ``forage serve env ID`` on another process or machine.

    Description:
        Proxies ``reset``/``step``/``end_episode`` (and the async twins ``areset``/``astep``/``aend_episode``) to one session of
        the env server at ``url``. Observations, rewards and ``info`` (JSON) are the remote env's.
        The session is created on the first reset and closed by ``close()``; if the server reaped
        it after idling, the next ``reset()`` opens a new one.

        With ``transport="ws"`` (the default) requests travel over a WebSocket: every RemoteEnv of
        one event loop shares one connection to a server, requests are pipelined and the ones made
        in the same loop turn leave in one frame, so many concurrent sessions cost little more than
        one. Sessions opened over a connection close when it closes (a client that dies leaves
        nothing behind). ``transport="http"`` uses the plain JSON routes, one request each.

    Action Space:
        ``UnicodeText``: the agent's message (tool calls in the env's tool format).

    Observation Space:
        ``UnicodeText``: the task prompt after reset, tool results after each step.

    Rewards:
        Those of the remote env; named components in ``info["rewards"]``.

    Starting State:
        ``reset(seed=..., options={"task_id": ...})`` is forwarded to the remote env.

    Episode End:
        As the remote env decides (``terminated``/``truncated``), or from outside with
        ``end_episode(reason)``/``aend_episode`` (a rollout engine's turn or context limit): the server's
        env scores and tears the episode down then, and its reward and info come back.

    Arguments:
        url: base URL of the server, e.g. ``http://10.0.0.5:8010``.
        env_id: if given, the server must serve this id (checked when the session is created).
        transport: ``"ws"`` (pipelined WebSocket) or ``"http"`` (one HTTP request per call).
        timeout: seconds to wait for one reset/step answer (tools can be slow).
        connect_timeout: seconds to wait for a connection before declaring the server unreachable.
        **kwargs: constructor kwargs for the remote env (the server must allow client kwargs).
    """

    metadata = {"render_modes": []}

    def __init__(self, url: str, env_id: str | None = None, *, transport: Literal["ws", "http"] = "ws",
                 timeout: float = 120.0, connect_timeout: float = 5.0, **kwargs: Any) -> None:
        if transport not in ("ws", "http"):
            raise ValueError(f"transport must be 'ws' or 'http', got {transport!r}")
        self.url = url.rstrip("/")
        self.env_id = env_id
        self.env_kwargs = kwargs
        self.transport = transport
        self.timeout_s, self.connect_timeout_s = timeout, connect_timeout
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.observation_space = UnicodeText()
        self.action_space = UnicodeText()
        self.session_id: str | None = None
        self.server_info: dict[str, Any] = {}
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._sync_ws: _SyncWS | None = None
        self._mux: _Mux | None = None
        self._mux_loop: asyncio.AbstractEventLoop | None = None

    # -- HTTP transport ---------------------------------------------------------------------
    def _sync(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=self.timeout)
        return self._client

    def _async(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            # a client is bound to the loop it was made on; a new loop needs a new client
            self._aclient = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
            self._aloop = loop
        return self._aclient

    def _check(self, method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = {"error": response.text[:500]}
        if response.status_code == 404 and data.get("type") == "no_session":
            self.session_id = None
            raise SessionExpired(f"{self.url}: {data.get('error')}")
        if response.status_code >= 400:
            raise RemoteEnvError(f"{method} {self.url}{path} failed with HTTP {response.status_code}: "
                                 f"{data.get('error', data)}")
        return data

    def _unreachable(self, method: str, path: str, e: Exception) -> RemoteEnvError:
        if isinstance(e, httpx.TimeoutException):
            return RemoteEnvError(f"the env server at {self.url} did not answer {method} {path} in time "
                                  f"({type(e).__name__}; timeouts: {self.timeout})")
        return RemoteEnvError(f"the env server at {self.url} is unreachable ({type(e).__name__}: {e or 'connection lost'})")

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._sync().request(method, path, json=body)
        except httpx.HTTPError as e:
            raise self._unreachable(method, path, e) from e
        return self._check(method, path, response)

    async def _arequest(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._async().request(method, path, json=body)
        except httpx.HTTPError as e:
            raise self._unreachable(method, path, e) from e
        return self._check(method, path, response)

    @staticmethod
    def _route(op: str, sid: str | None) -> tuple[str, str]:
        if op == "create":
            return "POST", "/sessions"
        if op == "close":
            return "DELETE", f"/sessions/{sid}"
        return "POST", f"/sessions/{sid}/{op}"

    # -- one operation, either transport ----------------------------------------------------------
    def _op(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        sid = self.session_id
        try:
            if self.transport == "http":
                method, path = self._route(op, sid)
                return self._request(method, path, body if method == "POST" else None)
            if self._sync_ws is None:
                self._sync_ws = _SyncWS(self.url, self.timeout_s, self.connect_timeout_s)
            return self._sync_ws.call(op, {**body, "session_id": sid})
        except SessionExpired:
            self.session_id = None
            raise

    async def _aop(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        sid = self.session_id
        try:
            if self.transport == "http":
                method, path = self._route(op, sid)
                return await self._arequest(method, path, body if method == "POST" else None)
            loop = asyncio.get_running_loop()
            if self._mux is None or self._mux_loop is not loop or self._mux.broken is not None:
                if self._mux is not None and self._mux_loop is loop:
                    await self._mux.release()
                self._mux, self._mux_loop = _Mux.of(self.url, self.timeout_s, self.connect_timeout_s), loop
                self._mux.users += 1
            return await self._mux.call(op, {**body, "session_id": sid}, self.timeout_s)
        except SessionExpired:
            self.session_id = None
            raise

    def _create_body(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "kwargs": self.env_kwargs}

    def _created(self, data: dict[str, Any]) -> None:
        self.session_id = data["session_id"]
        self.server_info = data
        self.env_id = data.get("env_id", self.env_id)
        spaces = data.get("spaces") or {}
        if spaces.get("observation_max_length"):
            self.observation_space = UnicodeText(spaces["observation_max_length"])
        if spaces.get("action_max_length"):
            self.action_space = UnicodeText(spaces["action_max_length"])

    # -- Gymnasium API --------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The server's ``/health`` answer."""
        return self._request("GET", "/health")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on the server (opening a session first if needed)."""
        super().reset(seed=seed)
        body = {"seed": seed, "options": options}
        if self.session_id is not None:
            try:
                data = self._op("reset", body)
                return data["observation"], data["info"]
            except SessionExpired:
                pass
        self._created(self._op("create", self._create_body()))
        data = self._op("reset", body)
        return data["observation"], data["info"]

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Send ``action`` to the remote env."""
        if self.session_id is None:
            raise RemoteEnvError("call reset() before step() (no session on the server yet)")
        d = self._op("step", {"action": action})
        return d["observation"], d["reward"], d["terminated"], d["truncated"], d["info"]

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Async twin of :meth:`reset`."""
        super().reset(seed=seed)
        body = {"seed": seed, "options": options}
        if self.session_id is not None:
            try:
                data = await self._aop("reset", body)
                return data["observation"], data["info"]
            except SessionExpired:
                pass
        self._created(await self._aop("create", self._create_body()))
        data = await self._aop("reset", body)
        return data["observation"], data["info"]

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Async twin of :meth:`step`."""
        if self.session_id is None:
            raise RemoteEnvError("call areset() before astep() (no session on the server yet)")
        d = await self._aop("step", {"action": action})
        return d["observation"], d["reward"], d["terminated"], d["truncated"], d["info"]

    def end_episode(self, reason: str = "truncated") -> tuple[float, dict[str, Any]]:
        """End the running remote episode now (scored and torn down on the server): see :meth:`aend_episode`."""
        if self.session_id is None:
            return _nothing_to_end()
        d = self._op("end_episode", {"reason": reason})
        return d["reward"], d["info"]

    async def aend_episode(self, reason: str = "truncated") -> tuple[float, dict[str, Any]]:
        """End the running remote episode as truncated for ``reason``: the server env's ``aend_episode``.

        Returns its terminal reward and info (``rewards``, ``stop_reason``, ``answer``...); the session stays
        open for the next reset. Without a session (never reset) there is nothing to end: ``0.0``, empty
        ``rewards``. A session the server no longer knows raises :class:`SessionExpired`.
        """
        if self.session_id is None:
            return _nothing_to_end()
        d = await self._aop("end_episode", {"reason": reason})
        return d["reward"], d["info"]

    def close(self) -> None:
        """Close the remote session (best effort: a dead server is not an error here)."""
        if self.session_id is not None:
            try:
                self._op("close", {})
            except RemoteEnvError:
                pass
            self.session_id = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._sync_ws is not None:
            self._sync_ws.close()
            self._sync_ws = None
        self._aclient = None  # bound to a loop that may be gone; the GC closes its pool
        self._mux = None      # likewise; the server closes the sessions of a connection that goes away

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        loop = asyncio.get_running_loop()
        if self.transport == "http" and self._aclient is not None and self._aloop is loop:
            if self.session_id is not None:
                try:
                    await self._aop("close", {})
                except RemoteEnvError:
                    pass
                self.session_id = None
            await self._aclient.aclose()
            self._aclient = None
        if self._mux is not None and self._mux_loop is loop:
            if self.session_id is not None and self._mux.broken is None:
                try:
                    await self._aop("close", {})
                except RemoteEnvError:
                    pass
            self.session_id = None
            mux, self._mux = self._mux, None
            await mux.release()
        self.close()
