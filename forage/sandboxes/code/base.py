"""The sandbox interface shared by the docker, bwrap and local backends: config, results, session logic."""

from __future__ import annotations

import abc
import asyncio
import itertools
import json
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from importlib.resources import files
from typing import Any, Coroutine, TypeVar

__all__ = ["SandboxConfig", "ExecResult", "Sandbox", "SandboxError", "SandboxUnavailable", "server_source",
           "run_on_sandbox_loop", "live_sandboxes"]

T = TypeVar("T")
_HDR = struct.Struct(">I")
_MAX_FRAME = 64 << 20


class SandboxError(RuntimeError):
    """A sandbox could not be started or talked to (the message says why)."""


class SandboxUnavailable(SandboxError):
    """The backend cannot run on this machine (no daemon, no bubblewrap, not allowed)."""


@dataclass
class SandboxConfig:
    """Limits and options of one sandbox; every default is the safe one."""

    timeout: float = 10.0
    """Wall-clock seconds per call; on expiry the interpreter is killed and restarted."""
    memory_mb: int = 512
    """Memory limit of everything in the sandbox."""
    pids: int = 64
    """Most processes/threads at once (fork bombs stop here)."""
    cpus: float = 1.0
    """CPU quota in cores (docker and bwrap with cgroups)."""
    output_limit: int = 16_384
    """Bytes of stdout and of stderr kept per call; the rest is dropped with a marker."""
    workdir_mb: int = 64
    """Size of the writable tmpfs work dir (/work); /tmp gets a quarter of it."""
    stateless: bool = False
    """Wipe variables and files after every call instead of keeping them like a notebook."""
    image: str | None = None
    """Docker image tag, or root directory for bwrap; None = the built default image."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the code (the host's environment is never passed)."""
    start_timeout: float = 60.0
    """Seconds to wait for a new interpreter to say it is ready."""
    docker_runtime: str | None = None
    """OCI runtime of the docker backend: None = the daemon's default (runc), ``"runsc"`` = gVisor."""

    def __post_init__(self) -> None:
        for name in ("timeout", "start_timeout", "cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxConfig.{name} must be > 0, not {getattr(self, name)!r}")
        for name in ("memory_mb", "pids", "output_limit", "workdir_mb"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SandboxConfig.{name} must be a positive int, not {getattr(self, name)!r}")
        if self.docker_runtime is not None and not (isinstance(self.docker_runtime, str) and self.docker_runtime):
            raise ValueError(f"SandboxConfig.docker_runtime must be None or a runtime name, "
                             f"not {self.docker_runtime!r}")


@dataclass
class ExecResult:
    """What one call gave: output, exit code, duration, and how it ended."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    duration: float = 0.0
    status: str = "ok"
    """``ok``, ``error`` (an exception or non-zero exit), ``timeout`` or ``crashed`` (the interpreter died)."""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when the code ran to the end without an exception."""
        return self.status == "ok"

    def to_text(self, empty: str = "(no output)") -> str:
        """The result as the observation an agent reads."""
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append(("stderr:\n" if self.stdout else "") + self.stderr.rstrip("\n"))
        if self.status == "error" and not self.stderr and self.exit_code:
            parts.append(f"(exit status {self.exit_code})")
        if self.status == "timeout":
            parts.append(f"Error: timed out after {self.duration:.1f} s; the interpreter was restarted and its state is lost.")
        elif self.status == "crashed":
            parts.append("Error: the interpreter was killed (" + (self.stderr.strip() if not parts else "see above")
                         + "); it was restarted and its state is lost.")
        return "\n".join(parts) if parts else empty


# -- one event loop thread for every sandbox -----------------------------------------------------
_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def _sandbox_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _loop_lock:
        # A forked child inherits the loop object but not its thread: it needs its own.
        if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
            threading.Thread(target=_loop.run_forever, daemon=True, name="forage-sandbox-loop").start()
        return _loop


async def run_on_sandbox_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the sandboxes' own loop, so sandboxes work from any loop or thread."""
    loop = _sandbox_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def call_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the sandbox loop from synchronous code."""
    return asyncio.run_coroutine_threadsafe(coro, _sandbox_loop()).result(timeout)


_live: "weakref.WeakSet[Sandbox]" = weakref.WeakSet()
_CLOSE_LOCK_WAIT = 10.0  # seconds close() waits for a running call before killing underneath it


def live_sandboxes() -> list["Sandbox"]:
    """Sandboxes started in this process and not closed yet."""
    return list(_live)


def server_source() -> str:
    """The source of the in-sandbox interpreter (forage/sandboxes/code/server.py)."""
    return files(__package__).joinpath("server.py").read_text()


def _result_of(reply: dict[str, Any]) -> ExecResult:
    """An ExecResult from the interpreter's reply, whose fields are checked (sandboxed code can forge replies)."""
    def num(key: str, kind: type) -> Any:
        v = reply.get(key, 0)
        return kind(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else kind(0)

    out, err = reply.get("stdout", ""), reply.get("stderr", "")
    status = reply.get("status", "ok")
    if not isinstance(out, str) or not isinstance(err, str) or status not in ("ok", "error", "timeout", "crashed"):
        return ExecResult(status="crashed", exit_code=-9, stderr="protocol error: a malformed reply")
    out_dropped, err_dropped = num("stdout_dropped", int), num("stderr_dropped", int)
    if out_dropped:
        out += f"\n... [output truncated: {out_dropped} more bytes]"
    if err_dropped:
        err += f"\n... [output truncated: {err_dropped} more bytes]"
    return ExecResult(stdout=out, stderr=err, exit_code=num("exit_code", int), duration=num("duration", float),
                      status=status, truncated=out_dropped + err_dropped > 0)


class _Process(abc.ABC):
    """One running interpreter: its protocol streams and how to kill it."""

    @abc.abstractmethod
    async def read(self, n: int) -> bytes:
        """Read exactly ``n`` protocol bytes (IncompleteReadError at EOF)."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send protocol bytes."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """Kill the interpreter and everything it started; release its resources."""

    async def death_reason(self) -> str:
        """Why the process died, when the backend can tell (e.g. out of memory)."""
        return "it exited unexpectedly"


class Sandbox(abc.ABC):
    """A session with a long-lived interpreter in an isolated backend.

    Use ``await sb.run(code)`` (or ``sb.run_sync(code)``); variables and files persist until
    ``reset()`` (or after every call with ``stateless=True``). Close with ``close()`` or use
    ``async with``. All methods can be called from any event loop or thread.
    """

    backend: str = ""
    _ids = itertools.count()

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or SandboxConfig(), **overrides)
        self.id = f"{self.backend}-{next(self._ids)}"
        self._proc: _Process | None = None
        self._lock: asyncio.Lock | None = None
        self.closed = False
        self.calls = 0
        """Calls run since the interpreter last started (0 = fresh, never touched)."""
        self.restarts = 0

    # -- backend hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def _spawn(self) -> _Process:
        """Start a new interpreter running :func:`server_source`."""

    async def _cleanup(self) -> None:
        """Release backend resources kept across interpreter restarts (called once by close)."""

    # -- public API --------------------------------------------------------------------------------
    async def start(self) -> "Sandbox":
        """Start the interpreter (idempotent)."""
        return await run_on_sandbox_loop(self._ensure_started())

    async def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run ``code`` (a notebook cell: a final expression's value is printed) and return the result."""
        return await run_on_sandbox_loop(self._run(code, timeout))

    async def reset(self) -> None:
        """Forget variables, delete files in the work dir and kill leftover processes."""
        await run_on_sandbox_loop(self._reset())

    async def restart(self) -> None:
        """Replace the interpreter with a new one (nothing of the old one survives)."""
        await run_on_sandbox_loop(self._restart())

    async def close(self) -> None:
        """Kill the interpreter and release everything (idempotent)."""
        await run_on_sandbox_loop(self._close())

    def run_sync(self, code: str, timeout: float | None = None) -> ExecResult:
        """Synchronous :meth:`run`."""
        return call_sync(self._run(code, timeout))

    def close_sync(self) -> None:
        """Synchronous :meth:`close`."""
        call_sync(self._close())

    async def __aenter__(self) -> "Sandbox":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._proc else "idle")
        return f"<{type(self).__name__} {self.id} {state}>"

    # -- internals (run on the sandbox loop) --------------------------------------------------------
    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _ensure_started(self) -> "Sandbox":
        if self.closed:
            raise SandboxError(f"{self.id} is closed")
        if self._proc is None:
            _live.add(self)
            proc = await self._spawn()
            try:
                hello = await asyncio.wait_for(self._recv(proc), self.config.start_timeout)
            except BaseException as e:
                await proc.kill()
                if isinstance(e, asyncio.CancelledError):
                    raise
                why = await proc.death_reason()
                raise SandboxError(f"the {self.backend} interpreter did not start: {type(e).__name__}: {e} ({why})") from None
            if not hello.get("ready"):
                await proc.kill()
                raise SandboxError(f"the {self.backend} interpreter sent {hello!r} instead of its greeting")
            if self.closed:  # closed while it booted: nobody would ever kill it
                await proc.kill()
                raise SandboxError(f"{self.id} was closed while starting")
            self._proc = proc
            self.calls = 0
        return self

    async def _recv(self, proc: _Process) -> dict[str, Any]:
        n = _HDR.unpack(await proc.read(4))[0]
        if n > _MAX_FRAME:
            raise SandboxError(f"protocol frame of {n} bytes")
        reply = json.loads(await proc.read(n))
        if not isinstance(reply, dict):   # code in the sandbox can write to the protocol pipe: trust no shape
            raise SandboxError(f"protocol reply is a {type(reply).__name__}, not an object")
        return reply

    async def _request(self, proc: _Process, req: dict[str, Any]) -> dict[str, Any]:
        self._seq = getattr(self, "_seq", 0) + 1
        data = json.dumps({**req, "seq": self._seq}).encode("utf-8", "surrogatepass")
        proc.write(_HDR.pack(len(data)) + data)
        reply = await self._recv(proc)
        if reply.get("seq") != self._seq:   # a reply forged by the code, or one left over from it: start over
            raise SandboxError(f"protocol reply out of step (seq {reply.get('seq')!r}, expected {self._seq})")
        return reply

    async def _kill_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.kill()

    async def _run(self, code: str, timeout: float | None) -> ExecResult:
        if not isinstance(code, str):
            raise TypeError("code must be a str")
        limit = timeout if timeout is not None else self.config.timeout
        async with self._get_lock():
            await self._ensure_started()
            proc = self._proc
            assert proc is not None
            self.calls += 1
            started = time.perf_counter()
            try:
                reply = await asyncio.wait_for(
                    self._request(proc, {"op": "exec", "code": code, "limit": self.config.output_limit}), limit)
            except asyncio.TimeoutError:
                elapsed = time.perf_counter() - started
                await self._kill_proc()
                self.restarts += 1
                return ExecResult(status="timeout", exit_code=-9, duration=elapsed)
            except asyncio.CancelledError:
                # The caller gave up mid-call: the reply would arrive out of step, so start over.
                await asyncio.shield(self._kill_proc())
                raise
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, SandboxError) as e:
                why = await proc.death_reason() if not isinstance(e, (ValueError, SandboxError)) else f"protocol error: {e}"
                await self._kill_proc()
                self.restarts += 1
                return ExecResult(status="crashed", exit_code=-9, duration=time.perf_counter() - started, stderr=why)
            if self.config.stateless:
                await self._reset_locked()
        return _result_of(reply)

    async def _reset_locked(self) -> None:
        if self._proc is None:
            return
        try:
            # ``calls`` is not zeroed: module state survives a soft reset, so the interpreter is not "fresh".
            await asyncio.wait_for(self._request(self._proc, {"op": "reset"}), self.config.timeout)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, SandboxError):
            await self._kill_proc()  # the next call starts a new interpreter

    async def _reset(self) -> None:
        async with self._get_lock():
            await self._reset_locked()

    async def _restart(self) -> None:
        async with self._get_lock():
            await self._kill_proc()
            self.restarts += 1
            await self._ensure_started()

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True  # from here no call or restart starts a new interpreter
        lock = self._get_lock()
        try:
            await asyncio.wait_for(lock.acquire(), _CLOSE_LOCK_WAIT)
            locked = True
        except asyncio.TimeoutError:  # a call is stuck holding the lock: kill underneath it
            locked = False
        try:
            await self._kill_proc()
            await self._cleanup()
            _live.discard(self)
        finally:
            if locked:
                lock.release()

