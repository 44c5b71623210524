"""Several docker daemons behind one pool: per-host slots, least-loaded placement, dead hosts skipped and retried.

A host is a ``DOCKER_HOST``-style URL (``unix:///var/run/docker.sock``, ``tcp://10.0.0.2:2375``,
``ssh://user@box``) or None for the daemon ``DOCKER_HOST`` / the default socket names. The docker
SDK speaks every transport (``ssh://`` through the ``ssh`` client and ``docker system dial-stdio``);
nothing here moves bytes itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .base import SandboxError, SandboxUnavailable

__all__ = ["DockerHost", "DockerHosts", "parse_hosts", "HOSTS_ENV", "POOL_LABEL"]

log = logging.getLogger("forage.sandboxes.hosts")

HOSTS_ENV = "FORAGE_DOCKER_HOSTS"
"""Environment variable naming the docker hosts of a pool that is given none: ``URL[=SLOTS]``, comma-separated."""

POOL_LABEL = "forage.pool"
"""Label of every container started through one :class:`DockerHosts` (its close sweeps it on every host)."""

RETRY_DOWN_AFTER = 30.0
"""Seconds a host that stopped answering is left alone before a placement asks it again."""

PING_TIMEOUT = 3.0
"""Seconds a health check waits for a daemon."""


def parse_hosts(spec: str | Iterable[str | None] | Mapping[str, int | None] | None,
                slots: int | None = None) -> list[tuple[str | None, int | None]]:
    """``[(url, slots), ...]`` from a list of URLs, a ``{url: slots}`` map or ``"url[=n],url[=n]"``.

    None, ``""``, ``"default"`` or ``"local"`` stand for the daemon ``DOCKER_HOST``/the default socket names.
    """
    if spec is None:
        spec = os.environ.get(HOSTS_ENV) or [None]
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.replace("\n", ",").split(",") if s.strip()]
    items: list[tuple[str | None, int | None]] = []
    pairs = spec.items() if isinstance(spec, Mapping) else ((s, None) for s in spec)
    for raw, n in pairs:
        url = raw
        if isinstance(raw, str) and n is None:
            head, sep, tail = raw.rpartition("=")
            if sep and tail.isdigit():
                url, n = head, int(tail)
        if url in ("", "default", "local"):
            url = None
        if url is not None and not (isinstance(url, str) and url.split("://", 1)[0] in ("unix", "tcp", "ssh", "http",
                                                                                      "https", "npipe")):
            raise ValueError(f"docker host {url!r} is not a DOCKER_HOST-style URL (unix://, tcp://, ssh://)")
        n = slots if n is None else n
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"slots of docker host {url!r} must be a positive int, not {n!r}")
        items.append((url, n))
    if not items:
        raise ValueError("no docker host given")
    if len({u for u, _ in items}) != len(items):
        raise ValueError(f"a docker host is listed twice: {[u for u, _ in items]}")
    return items


@dataclass(eq=False)
class DockerHost:
    """One daemon of a :class:`DockerHosts`: where it is, how many sandboxes it may hold, how it is doing."""

    url: str | None
    slots: int | None = None
    """Most sandboxes at once on this host (None: no limit; placement then weighs by the daemon's CPUs)."""
    used: int = 0
    down: str = ""
    """Why the host is out of service ("" while it answers)."""
    down_at: float = 0.0
    epoch: int = 0
    """Bumped each time the host goes down: a sandbox placed in an earlier epoch lost its container."""
    ncpu: int = 1
    ready: bool = False
    last_check: float = field(default=0.0, repr=False)

    @property
    def name(self) -> str:
        """The URL, or ``DOCKER_HOST``'s value / the default socket for None."""
        return self.url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def free(self) -> int | None:
        """Free slots (None: unlimited)."""
        return None if self.slots is None else max(0, self.slots - self.used)

    def load(self) -> float:
        """Used share of the host's capacity (its slots, else its CPUs)."""
        return self.used / (self.slots or max(1, self.ncpu))


class DockerHosts:
    """The docker daemons one pool spreads its sandboxes over.

    Each host is connected once (``ready``): pinged, swept of containers whose owner died, checked for
    the image (imported there from the built root when it is the default image) and for the OCI
    runtime. :meth:`place` gives a sandbox a slot on the least-loaded host that answers and has one
    free; :meth:`check` takes a host out of service when it stops answering, and a later placement
    asks it again after :data:`RETRY_DOWN_AFTER` seconds (its stale containers are swept then).
    """

    _ids = itertools.count()

    def __init__(self, hosts: Any = None, *, slots: int | None = None, image: str | None = None,
                 runtime: str | None = None, provision: bool = True) -> None:
        from .image import docker_image_tag

        self.hosts = [DockerHost(u, n) for u, n in parse_hosts(hosts, slots)]
        self.image = image or docker_image_tag()
        self.runtime = runtime
        self.provision = provision
        self.id = f"{os.getpid()}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()  # bookkeeping only: never held across a network call
        self._connecting = threading.Lock()
        self._freed: asyncio.Condition | None = None
        self.closed = False

    # -- connecting ---------------------------------------------------------------------------------
    def ready(self) -> "DockerHosts":
        """Connect every host not connected yet; SandboxUnavailable (with each host's reason) when none can run."""
        with self._connecting:
            for h in self.hosts:
                if not h.ready and not h.down:
                    self._connect(h)
        with self._lock:
            if not any(h.ready and not h.down for h in self.hosts):
                why = "; ".join(f"{h.name}: {h.down}" for h in self.hosts)
                raise SandboxUnavailable(why if len(self.hosts) == 1 else f"no docker host can run sandboxes ({why})")
        return self

    def _connect(self, h: DockerHost) -> None:
        """Ping, sweep, image and runtime check of one host; on failure the host is marked down with why."""
        from .docker import docker_client, docker_runtimes, sweep_host

        try:
            client = docker_client(h.url)
            info = client.info()
            h.ncpu = int(info.get("NCPU") or 1)
            sweep_host(client, h.url)
            self._ensure_image(h, client)
            if self.runtime is not None and self.runtime not in docker_runtimes(client):
                raise SandboxUnavailable(f"the docker daemon at {h.name} has no runtime {self.runtime!r} (it has "
                                         f"{', '.join(docker_runtimes(client))}); install gVisor for runsc")
        except Exception as e:  # noqa: BLE001 - any failure to reach the daemon takes the host out
            with self._lock:
                self._mark_down(h, str(e) if isinstance(e, SandboxUnavailable) else f"{type(e).__name__}: {e}")
            return
        with self._lock:
            h.ready, h.down, h.last_check = True, "", time.monotonic()

    def _ensure_image(self, h: DockerHost, client) -> None:
        from .image import docker_image_tag, ensure_docker_image, rootfs_path

        try:
            client.images.get(self.image)
            return
        except Exception:  # noqa: BLE001 - NotFound, or the daemon went away (the next call says which)
            pass
        if self.provision and self.image == docker_image_tag() and (rootfs_path() / ".forage-recipe.json").exists():
            ensure_docker_image(client=client, host=h.url, log=lambda *_: None)  # import the built root there
            return
        hint = "run `forage sandbox build`" if h.url is None else (
            f"run `DOCKER_HOST={h.url} forage sandbox build` or `docker save {self.image} | docker -H {h.url} load`")
        raise SandboxUnavailable(f"docker image {self.image!r} is missing on {h.name}: {hint}")

    # -- placement ----------------------------------------------------------------------------------
    def live(self) -> list[DockerHost]:
        """Hosts in service."""
        return [h for h in self.hosts if h.ready and not h.down]

    def free_slots(self) -> int:
        """Free slots on the hosts in service (a large number when one has no limit)."""
        total = 0
        for h in self.live():
            f = h.free()
            if f is None:
                return 1 << 30
            total += f
        return total

    async def place(self, exclude: Iterable[DockerHost] = (), wait: float = 60.0) -> DockerHost:
        """Take a slot on the least-loaded live host not in ``exclude``; wait up to ``wait`` s while all are full."""
        exclude = set(exclude)
        deadline = time.monotonic() + wait
        while True:
            await self.revive_due()
            with self._lock:
                if self.closed:
                    raise SandboxError("the docker hosts of this pool are closed")
                candidates = [h for h in self.live() if h not in exclude]
                open_ = [h for h in candidates if h.free() != 0]
                if open_:
                    best = min(open_, key=lambda h: (h.load(), self.hosts.index(h)))
                    best.used += 1
                    return best
                if not candidates:
                    why = "; ".join(f"{h.name}: {h.down or 'already tried'}" for h in self.hosts)
                    raise SandboxUnavailable(f"no docker host can take a sandbox ({why})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"every docker host is full ({self.describe()})")
            cond = self._cond()
            async with cond:
                try:
                    await asyncio.wait_for(cond.wait(), min(left, 1.0))
                except asyncio.TimeoutError:
                    pass

    def release(self, h: DockerHost) -> None:
        """Give back a slot taken by :meth:`place`."""
        with self._lock:
            h.used = max(0, h.used - 1)
        self._notify()

    def current(self, h: DockerHost | None, epoch: int) -> bool:
        """True while a sandbox placed on ``h`` in ``epoch`` may still have its container there."""
        return h is not None and not h.down and h.epoch == epoch

    def check(self, h: DockerHost, error: BaseException | str | None = None) -> bool:
        """Ping ``h`` (blocking, short timeout); when it does not answer, take it out of service. True = it answers."""
        from .docker import ping_host

        why = ping_host(h.url, PING_TIMEOUT)
        if why is None:
            return True
        detail = f" after {type(error).__name__}: {error}" if isinstance(error, BaseException) else ""
        with self._lock:
            self._mark_down(h, f"it stopped answering ({why}){detail}")
        return False

    def _mark_down(self, h: DockerHost, why: str) -> None:
        if not h.down:
            h.epoch += 1
            h.down_at = time.monotonic()
        h.down, h.ready = why, False

    async def revive_due(self) -> None:
        """Ask the hosts that have been down for :data:`RETRY_DOWN_AFTER` s again; put those that answer back."""
        now = time.monotonic()
        due = [h for h in self.hosts if h.down and now - h.down_at >= RETRY_DOWN_AFTER and now - h.last_check >= 1]
        for h in due:
            h.last_check = now
            await asyncio.to_thread(self._revive, h)

    def _revive(self, h: DockerHost) -> None:
        from .docker import ping_host, remove_labelled, docker_client

        if ping_host(h.url, PING_TIMEOUT) is not None:
            with self._lock:
                h.down_at = time.monotonic()
            return
        try:  # whatever this pool had there lost its interpreter with the daemon
            remove_labelled(docker_client(h.url), [f"{POOL_LABEL}={self.id}"])
        except Exception:  # noqa: BLE001
            pass
        with self._connecting:
            with self._lock:
                h.down = ""
            self._connect(h)
        self._notify()

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _cond(self) -> asyncio.Condition:
        if self._freed is None:
            self._freed = asyncio.Condition()
        return self._freed

    def _notify(self) -> None:
        cond = self._freed
        if cond is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        loop.create_task(wake())

    def describe(self) -> str:
        """One line: each host's use, limit and state."""
        return ", ".join(f"{h.name} {h.used}/{h.slots if h.slots else '-'}"
                         + (f" down ({h.down})" if h.down else "") for h in self.hosts)

    def labels(self) -> dict[str, str]:
        """Labels every container placed through these hosts carries."""
        return {POOL_LABEL: self.id}

    def close(self, wait: float = 0.0) -> int:
        """Remove every container of this pool on every host that answers (blocking); return how many.

        With ``wait`` > 0, then wait up to ``wait`` seconds until those daemons list none of the pool's
        containers (removals another thread started finish too; one still listed is removed again), and log
        a warning naming what is left after that.
        """
        from .docker import docker_client, ping_host, remove_labelled

        self.closed = True
        removed = 0
        answering: list[DockerHost] = []
        for h in self.hosts:
            if h.down and ping_host(h.url, PING_TIMEOUT) is not None:
                continue  # still gone: its next start's sweep (or `forage sandbox reap`) removes them
            try:
                removed += remove_labelled(docker_client(h.url), [f"{POOL_LABEL}={self.id}"])
                answering.append(h)
            except Exception:  # noqa: BLE001
                pass
        if wait > 0 and answering:
            left = self._wait_removed(answering, wait)
            if left:
                log.warning("docker pool %s: %d container(s) still listed %g s after close: %s", self.id,
                            sum(len(v) for v in left.values()), wait,
                            "; ".join(f"{name}: {', '.join(ids)}" for name, ids in left.items()))
        return removed

    def _wait_removed(self, hosts: list[DockerHost], timeout: float) -> dict[str, list[str]]:
        """Poll ``hosts`` until none lists a container of this pool (at most ``timeout`` s); ``{host: [ids]}`` left."""
        from .docker import _remove, docker_client, labelled_containers

        deadline = time.monotonic() + timeout
        delay = 0.05
        left: dict[str, list[str]] = {}
        while True:
            left = {}
            for h in hosts:
                try:
                    client = docker_client(h.url)
                    listed = labelled_containers(client, [f"{POOL_LABEL}={self.id}"])
                except Exception:  # noqa: BLE001 - the daemon went away meanwhile, and its containers with it
                    continue
                if listed:
                    left[h.name] = [c["Id"][:12] for c in listed]
                    for c in listed:   # a removal in flight elsewhere makes this one fail: harmless
                        _remove(client, c["Id"])
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def __repr__(self) -> str:
        return f"<DockerHosts {self.describe()}>"
