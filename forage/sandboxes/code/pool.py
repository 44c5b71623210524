"""A warm pool of sandboxes: pre-started, handed out to episodes, recycled on return, safe under concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from .base import Sandbox, SandboxConfig, SandboxError, SandboxUnavailable, run_on_sandbox_loop

__all__ = ["SandboxPool", "PoolStats", "make_sandbox"]

log = logging.getLogger("forage.sandboxes.pool")

_CLOSE_TASK_WAIT = 15.0  # seconds close() gives cancelled background starts/recycles to finish
_CLOSE_REMOVAL_WAIT = 30.0  # seconds close() waits for the removals it started (docker: until no container is listed)


def make_sandbox(backend: str, config: SandboxConfig | None = None, **kwargs: Any) -> Sandbox:
    """A new (not started) sandbox of ``backend``: ``"docker"``, ``"bwrap"`` or ``"local"``."""
    if backend == "docker":
        from .docker import DockerSandbox

        return DockerSandbox(config, **kwargs)
    if backend == "bwrap":
        from .bwrap import BwrapSandbox

        return BwrapSandbox(config, **kwargs)
    if backend == "local":
        from .local import LocalSandbox

        return LocalSandbox(config, **kwargs)
    raise ValueError(f"unknown sandbox backend {backend!r}; use 'docker', 'bwrap' or 'local'")


@dataclass
class PoolStats:
    """Counters of a pool (for logs and benchmarks)."""

    size: int
    max_size: int
    idle: int
    busy: int
    starting: int
    acquired: int
    started: int
    recycled: int
    broken: int
    hosts: dict[str, int] = field(default_factory=dict)
    """Sandboxes placed on each docker host (docker backend)."""


class SandboxPool:
    """Pre-started sandboxes handed out with :meth:`acquire` / :meth:`release` (or ``async with pool.session()``).

    ``size`` sandboxes are kept warm; under load the pool grows to ``max_size``, after which
    ``acquire`` waits for a release (it never fails for lack of a sandbox). A returned sandbox is
    recycled in the background before anyone gets it again: ``recycle="restart"`` (default) gives
    it a new interpreter and work dir, so nothing of the previous episode survives;
    ``recycle="reset"`` only wipes variables, files and processes (faster, but module state set
    by earlier code stays). ``acquire(fresh=True)`` guarantees an interpreter that no code has
    touched since it started (use it for grading).
    """

    def __init__(self, backend: str | Callable[[], Sandbox] = "bwrap", size: int = 2, max_size: int = 64,
                 config: SandboxConfig | None = None, recycle: str = "restart", start_concurrency: int = 4,
                 hosts: Any = None, slots: int | None = None, **sandbox_kwargs: Any) -> None:
        if recycle not in ("restart", "reset"):
            raise ValueError("recycle must be 'restart' or 'reset'")
        if not 0 <= size <= max_size or max_size < 1:
            raise ValueError("need 0 <= size <= max_size and max_size >= 1")
        if (hosts is not None or slots is not None) and backend != "docker":
            raise ValueError("hosts= and slots= are options of the 'docker' backend")
        self.backend = backend if isinstance(backend, str) else getattr(backend, "backend", "custom")
        self.hosts: Any = None
        """The docker backend's :class:`~.hosts.DockerHosts` (None for other backends)."""
        if backend == "docker":  # one set of hosts for every sandbox of the pool: placement sees them all
            sandbox_kwargs = {**sandbox_kwargs, "hosts": hosts, "slots": slots}
        if isinstance(backend, str):
            def factory() -> Sandbox:
                sb = make_sandbox(backend, config, **sandbox_kwargs)
                if backend == "docker" and self.hosts is None:
                    self.hosts = sandbox_kwargs["hosts"] = sb.hosts  # type: ignore[attr-defined]
                return sb

            self._factory: Callable[[], Sandbox] = factory
        else:
            self._factory = backend
        self.size, self.max_size, self.recycle = size, max_size, recycle
        self.config = config
        self._start_concurrency = start_concurrency
        self._idle: list[Sandbox] = []
        self._all: set[Sandbox] = set()
        self._busy: set[Sandbox] = set()
        self._booting: set[Sandbox] = set()
        self._starting = 0
        self._cond: asyncio.Condition | None = None
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closing: set[asyncio.Future] = set()  # closes of dropped sandboxes, which close() must outwait
        self.closed = False
        self._n = {"acquired": 0, "started": 0, "recycled": 0, "broken": 0}
        # Fail now (not at the first episode) when the backend cannot run here.
        probe = self._factory()
        self._idle_unstarted = [probe]

    # -- public API (any loop, any thread) --------------------------------------------------------
    async def start(self) -> "SandboxPool":
        """Start ``size`` sandboxes now (otherwise they start on demand)."""
        await run_on_sandbox_loop(self._fill(wait=True))
        return self

    async def acquire(self, fresh: bool = False) -> Sandbox:
        """A started sandbox for exclusive use; waits when ``max_size`` are busy."""
        return await run_on_sandbox_loop(self._acquire(fresh))

    async def release(self, sandbox: Sandbox) -> None:
        """Give ``sandbox`` back; it is recycled before it is handed out again."""
        await run_on_sandbox_loop(self._release(sandbox))

    @contextlib.asynccontextmanager
    async def session(self, fresh: bool = False) -> AsyncIterator[Sandbox]:
        """``async with pool.session() as sb:`` acquire and release around a block."""
        sb = await self.acquire(fresh)
        try:
            yield sb
        finally:
            await self.release(sb)

    async def close(self) -> None:
        """Close every sandbox, idle or busy (idempotent); returns once their resources are gone.

        Docker: waits (up to 30 s, then logs what is left) until no daemon that answers lists a container
        of the pool, so removals still in flight when it was called have finished when it returns.
        """
        await run_on_sandbox_loop(self._close())

    def close_sync(self) -> None:
        """Synchronous :meth:`close`."""
        from .base import call_sync

        call_sync(self._close())

    def stats(self) -> PoolStats:
        """Current counts."""
        hosts = {h.name: h.used for h in self.hosts.hosts} if self.hosts is not None else {}
        return PoolStats(self.size, self.max_size, len(self._idle), len(self._busy), self._starting, **self._n,
                         hosts=hosts)

    async def __aenter__(self) -> "SandboxPool":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<SandboxPool {self.backend} idle={s.idle} busy={s.busy} max={s.max_size}>"

    # -- internals (sandbox loop) --------------------------------------------------------------------
    def _sync(self) -> tuple[asyncio.Condition, asyncio.Semaphore]:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._sem = asyncio.Semaphore(self._start_concurrency)
        assert self._sem is not None
        return self._cond, self._sem

    def _total(self) -> int:
        return len(self._all) + self._starting

    def _room(self) -> int:
        """How many more sandboxes may start now (``max_size``, and the docker hosts' free slots)."""
        room = self.max_size - self._total()
        if self.hosts is not None:  # starts that have not taken their slot yet will take one
            placed = sum(1 for sb in self._booting if getattr(sb, "host", None) is not None)
            room = min(room, self.hosts.free_slots() - (self._starting - placed))
        return room

    async def _new(self) -> Sandbox | None:
        """Start one sandbox (counted in ``_starting`` while it boots); None if it failed."""
        _, sem = self._sync()
        self._starting += 1
        sb: Sandbox | None = None
        try:
            async with sem:
                sb = self._idle_unstarted.pop() if self._idle_unstarted else self._factory()
                self._booting.add(sb)  # close() reaches it even while it boots
                try:
                    await sb._ensure_started()
                finally:
                    self._booting.discard(sb)
        except BaseException:
            self._n["broken"] += 1
            if sb is not None:  # also when cancelled (pool closing): release what it holds
                await asyncio.shield(sb._close())
            raise
        finally:
            self._starting -= 1
        if self.closed:
            await sb._close()
            raise SandboxError("the pool is closed")
        self._all.add(sb)
        self._n["started"] += 1
        return sb

    async def _put_idle(self, sb: Sandbox) -> None:
        cond, _ = self._sync()
        async with cond:
            self._idle.append(sb)
            cond.notify()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, wait: bool = False) -> None:
        need = min(self.size - len(self._idle) - self._starting, self._room())
        if need <= 0:
            return

        async def one() -> None:
            try:
                sb = await self._new()
            except Exception:
                return
            if sb is not None:
                await self._put_idle(sb)

        jobs = [one() for _ in range(need)]
        if wait:
            await asyncio.gather(*jobs)
        else:
            for j in jobs:
                self._spawn(j)

    async def _acquire(self, fresh: bool) -> Sandbox:
        if self.closed:
            raise SandboxError("the pool is closed")
        cond, _ = self._sync()
        while True:
            async with cond:
                while self._idle and getattr(self._idle[-1], "lost", False):  # its docker host went down
                    self._drop(self._idle.pop())
                if self._idle:
                    sb = self._idle.pop()
                    break
                if self._room() > 0:
                    sb = None
                    break
                if self.hosts is not None and not self.hosts.live() and not self._starting:
                    await self.hosts.revive_due()  # one may have come back
                    if not self.hosts.live():
                        raise SandboxUnavailable(f"no docker host answers ({self.hosts.describe()})")
                    continue
                try:  # a host coming back frees slots without a release: look again now and then
                    await asyncio.wait_for(cond.wait(), 1.0 if self.hosts is not None else None)
                except asyncio.TimeoutError:
                    pass
        if sb is None:
            sb = await self._new()
        self._busy.add(sb)
        self._n["acquired"] += 1
        self._spawn(self._fill())  # top the warm set back up in the background
        if fresh and sb.calls > 0:
            await sb._restart()
        return sb

    def _drop(self, sb: Sandbox) -> None:
        """Forget ``sb`` (broken or lost with its host) and close it in the background."""
        self._n["broken"] += 1
        self._all.discard(sb)
        closing = asyncio.ensure_future(sb._close())  # not cancelled by close(), which waits for it instead
        self._closing.add(closing)
        closing.add_done_callback(self._closed_one)
        self._spawn(self._fill())

    def _closed_one(self, closing: asyncio.Future) -> None:
        """A dropped sandbox finished closing: forget it (its failure is logged, never raised)."""
        self._closing.discard(closing)
        if not closing.cancelled() and closing.exception() is not None:
            log.warning("closing a dropped sandbox failed: %s", closing.exception())

    async def _release(self, sb: Sandbox) -> None:
        if sb not in self._busy:
            raise SandboxError(f"{sb!r} was not acquired from this pool")
        self._busy.discard(sb)
        if self.closed:
            await sb._close()
            return
        self._spawn(self._recycle(sb))

    async def _recycle(self, sb: Sandbox) -> None:
        try:
            if sb.closed:
                raise SandboxError("closed by its user")
            if self.recycle == "restart" or sb._proc is None:
                if sb.calls > 0 or sb._proc is None:
                    await sb._restart()
            else:
                await sb._reset()
                if sb._proc is None:
                    await sb._restart()
            self._n["recycled"] += 1
            await self._put_idle(sb)
        except Exception:
            self._n["broken"] += 1
            self._all.discard(sb)
            await sb._close()
            cond, _ = self._sync()
            async with cond:
                cond.notify()  # room for a new one
            self._spawn(self._fill())

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:  # bounded: a task stuck past its cancellation must not hang close()
            await asyncio.wait(list(self._tasks), timeout=_CLOSE_TASK_WAIT)
        everything = list(self._all) + list(self._booting) + self._idle_unstarted
        self._idle.clear()
        self._busy.clear()
        self._all.clear()
        await asyncio.gather(*(sb._close() for sb in everything), return_exceptions=True)
        if self._closing:  # sandboxes dropped as broken or lost, still closing
            _, pending = await asyncio.wait(list(self._closing), timeout=_CLOSE_REMOVAL_WAIT)
            if pending:
                log.warning("pool close: %d dropped sandbox(es) still closing after %g s", len(pending),
                            _CLOSE_REMOVAL_WAIT)
        if self.hosts is not None:  # the label sweep on every host that answers, and the wait for its removals
            await asyncio.to_thread(self.hosts.close, _CLOSE_REMOVAL_WAIT)
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()
