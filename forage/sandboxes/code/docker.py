"""The ``docker`` backend: one locked-down container per sandbox whose main process is the interpreter."""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

from .base import Sandbox, SandboxConfig, SandboxError, SandboxUnavailable, _Process, server_source
from .bridge import plain_socket
from .image import SANDBOX_UID, docker_image_tag
from .limits import NOFILE, shm_mb, tmp_mb
from .seccomp import docker_profile

if TYPE_CHECKING:
    from .hosts import DockerHost, DockerHosts

__all__ = ["DockerSandbox", "docker_client", "reap_containers", "docker_runtimes", "labelled_containers", "LABEL",
           "ping_host", "sweep_host", "remove_labelled"]

LABEL = "forage.sandbox"
"""Every container we start carries this label, plus ``forage.owner`` = the owner's pid and start time and
``forage.owner.machine`` / ``forage.owner.boot`` = where and in which boot that pid lives (a daemon may
serve several machines: only the owner's machine can tell whether the owner is alive)."""

_clients: dict[str | None, Any] = {}
_client_pid = 0
_client_lock = threading.Lock()
_swept: set[str | None] = set()
_used: set[str | None] = set()  # hosts this process started containers on (the exit sweep visits only those)


def _owner_id(pid: int) -> str | None:
    """``pid:starttime`` of a live process (start time tells a recycled pid apart), or None."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


_owners: dict[int, str] = {}


def owner_label() -> str:
    """This process's ``forage.owner`` label (computed per pid, so forked workers get their own)."""
    pid = os.getpid()
    if pid not in _owners:
        _owners[pid] = _owner_id(pid) or str(pid)
    return _owners[pid]


def _read(path: str) -> str:
    try:
        return open(path).read().strip()
    except OSError:
        return ""


MACHINE = _read("/etc/machine-id") or socket.gethostname()
BOOT = _read("/proc/sys/kernel/random/boot_id")


def _client_for(host: str | None, timeout: float):
    import docker

    if host is None:  # DOCKER_HOST (ssh:// through the ssh client too, as for explicit URLs) or the default socket
        return docker.from_env(timeout=timeout, use_ssh_client=os.environ.get("DOCKER_HOST", "").startswith("ssh://"))
    kwargs = docker.utils.kwargs_from_env()  # TLS settings of DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, if any
    if not host.startswith("tcp://"):
        kwargs.pop("tls", None)
    kwargs.update(base_url=host, timeout=timeout, use_ssh_client=host.startswith("ssh://"))
    return docker.DockerClient(**kwargs)


def docker_client(host: str | None = None):
    """A shared docker SDK client of ``host`` (a ``DOCKER_HOST``-style URL; None = ``DOCKER_HOST`` or the
    default socket); SandboxUnavailable when no daemon answers there."""
    global _client_pid
    with _client_lock:
        if _client_pid != os.getpid():  # a forked child must not share the connection pools
            _clients.clear()
            _swept.clear()
            _used.clear()
            _client_pid = os.getpid()
        if host not in _clients:
            try:
                client = _client_for(host, 60)
                client.ping()
            except Exception as e:
                where = "" if host is None else f" at {host}"
                hint = "run scripts/setup.sh or `forage sandbox build` to start one" if host is None else \
                    "start dockerd there or check the URL"
                raise SandboxUnavailable(f"no docker daemon answers{where} ({type(e).__name__}: {e}); {hint}") from None
            _clients[host] = client
        return _clients[host]


def ping_host(host: str | None, timeout: float = 3.0) -> str | None:
    """None when the daemon at ``host`` answers within ``timeout`` s, else why not (a fresh connection each time).

    Bounded even where the transport has no timeout of its own (an ``ssh`` that hangs): the ping runs
    in a daemon thread that is given up on.
    """
    result: list[str | None] = []

    def ping() -> None:
        try:
            client = _client_for(host, timeout)
            try:
                client.ping()
            finally:
                client.close()
            result.append(None)
        except Exception as e:  # noqa: BLE001
            result.append(f"{type(e).__name__}: {e}"[:300])

    t = threading.Thread(target=ping, daemon=True, name="forage-docker-ping")
    t.start()
    t.join(timeout + 1.0)
    return result[0] if result else f"no answer within {timeout:.0f} s"


def docker_runtimes(client=None) -> list[str]:
    """The OCI runtimes the docker daemon offers (``runc``, and ``runsc`` when gVisor is installed)."""
    client = client or docker_client()
    return sorted((client.info().get("Runtimes") or {}).keys())


def labelled_containers(client, labels: list[str]) -> list[dict]:
    """``{"Id", "Labels", "State", ...}`` of every container carrying all ``labels`` (``key=value``).

    One list call, no per-container inspect: a container removed meanwhile cannot make it fail.
    """
    return client.api.containers(all=True, filters={"label": labels})


def _remove(client, container_id: str) -> bool:
    try:
        client.api.remove_container(container_id, force=True)
        return True
    except Exception:  # already gone, or being removed by another thread
        return False


def remove_labelled(client, labels: list[str]) -> int:
    """Force-remove every container carrying all ``labels``; return how many."""
    return sum(_remove(client, c["Id"]) for c in labelled_containers(client, labels))



def _owner_dead(labels: dict) -> bool:
    """True when the container's owner process is known to be gone (False when it lives on another machine)."""
    owner = labels.get("forage.owner", "")
    machine, boot = labels.get("forage.owner.machine"), labels.get("forage.owner.boot")
    if machine is not None and machine != MACHINE:
        return False  # another machine's: only that machine (or `forage sandbox reap --all`) may judge it
    if boot is not None and BOOT and boot != BOOT:
        return True  # this machine rebooted since
    pid = owner.split(":", 1)[0]
    return not (owner and pid.isdigit() and _owner_id(int(pid)) == owner)


def reap_containers(only_dead_owners: bool = True, client=None) -> int:
    """Remove Forage sandbox containers: those whose owner process is gone (or all of them); return how many."""
    client = client or docker_client()
    removed = 0
    for c in labelled_containers(client, [LABEL]):
        if only_dead_owners and not _owner_dead(c.get("Labels") or {}):
            continue
        removed += _remove(client, c["Id"])
    return removed


def sweep_host(client, host: str | None) -> int:
    """Once per process and host: remove the containers of dead owners there; return how many."""
    with _client_lock:
        if host in _swept:
            return 0
        _swept.add(host)
    return reap_containers(client=client)


def _remove_own_containers() -> None:
    if _client_pid != os.getpid():
        return  # a forked child leaves its parent's containers alone
    for host, client in list(_clients.items()):
        if host not in _used:
            continue
        if host is not None and ping_host(host, 2.0) is not None:
            continue  # a dead host must not hold up exit: its next start's sweep reaps them
        try:
            remove_labelled(client, [f"forage.owner={owner_label()}"])
        except Exception:
            pass


atexit.register(_remove_own_containers)


_GVISOR_OWN_PIDS = 256
"""Threads of gVisor's own kernel (a Go program) in the container's cgroup, added to the pids cap
under ``runsc``: at the plain cap its runtime cannot start a thread and the whole sandbox dies."""


def _runtime_own_pids(config: SandboxConfig) -> int:
    return _GVISOR_OWN_PIDS if config.docker_runtime == "runsc" else 0


class _AttachedProcess(_Process):
    """The container's main process, reached through a hijacked attach socket (stdout frames demuxed)."""

    def __init__(self, sandbox: "DockerSandbox", container, host: "DockerHost", sock: socket.socket,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sandbox, self.container, self.host, self.sock = sandbox, container, host, sock
        self.reader, self.writer = reader, writer
        self._buf = bytearray()

    async def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            hdr = await self.reader.readexactly(8)
            stream, size = hdr[0], struct.unpack(">I", hdr[4:])[0]
            data = await self.reader.readexactly(size)
            if stream == 1:
                self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def kill(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass
        if not self.host.down:  # a dead daemon took its containers with it (its next start's sweep says so)
            # Finishes even when the caller is cancelled (a pool closing mid-recycle); close() waits for it.
            fut = asyncio.ensure_future(asyncio.to_thread(self._remove))
            self.sandbox._inflight.add(fut)
            fut.add_done_callback(self.sandbox._inflight.discard)
            await asyncio.shield(fut)

    def _remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception as e:
            if "404" not in str(e) and "No such container" not in str(e):
                self.sandbox.hosts.check(self.host, e)

    async def death_reason(self) -> str:
        def state() -> dict | None:
            try:
                self.container.reload()
                return self.container.attrs.get("State", {})
            except Exception as e:
                if not self.sandbox.hosts.check(self.host, e):
                    return None
                return {}

        for _ in range(20):
            st = await asyncio.to_thread(state)
            if st is None:
                return (f"its docker host {self.host.name} stopped answering; the next call starts a new "
                        "interpreter on a host that answers")
            if not st.get("Running", False):
                break
            await asyncio.sleep(0.05)
        if st.get("OOMKilled"):
            return f"out of memory: the limit is {self.sandbox.config.memory_mb} MiB"
        if "ExitCode" in st:
            return f"it exited with status {st['ExitCode']}"
        return "it stopped answering"


class DockerSandbox(Sandbox):
    """Code runs in a docker container: no network, read-only root, tmpfs ``/work``, ``/tmp`` and
    ``/dev/shm``, uid 1000, no capabilities, no new privileges, our seccomp profile (:mod:`.seccomp`),
    memory/pids/CPU/open-file limits. The interpreter is the container's main process, reached
    through docker's attach stream; a restart is a new container.

    ``config.image`` names another image (it needs ``python3``); default: the built
    ``forage-sandbox:<recipe>`` image (``forage sandbox build``). ``config.docker_runtime``
    picks the OCI runtime, e.g. ``"runsc"`` (gVisor: a user-space kernel between the code and
    the host kernel) when the daemon has it.

    ``host`` is a ``DOCKER_HOST``-style URL (default: ``DOCKER_HOST`` or the local socket);
    ``hosts`` several (URLs, ``{url: slots}``, ``"url=n,url=n"``; default ``$FORAGE_DOCKER_HOSTS``) or
    a :class:`~.hosts.DockerHosts` shared by a pool, which places each interpreter on the
    least-loaded daemon with a free slot (``slots`` = the limit per host). When the daemon of a running
    interpreter stops answering, that call ends as ``crashed`` and the next one starts on another host.

    Every container carries the owner's labels; ``close()`` removes all containers labelled with
    this sandbox's id, also one a cancelled start created after its caller stopped waiting.
    """

    backend = "docker"

    def __init__(self, config: SandboxConfig | None = None, *, host: str | None = None, hosts: Any = None,
                 slots: int | None = None, **overrides: Any) -> None:
        from .hosts import DockerHosts

        super().__init__(config, **overrides)
        self.image = self.config.image or docker_image_tag()
        if not isinstance(hosts, DockerHosts):  # a spec: URLs, {url: slots}, "url=n,url=n"; None: $FORAGE_DOCKER_HOSTS
            if host is not None and hosts is not None:
                raise ValueError("give host= or hosts=, not both")
            hosts = DockerHosts([host] if host is not None else hosts, slots=slots, image=self.image,
                                runtime=self.config.docker_runtime)
        elif hosts.image != self.image or hosts.runtime != self.config.docker_runtime:
            raise ValueError(f"these docker hosts serve image {hosts.image!r} on runtime {hosts.runtime!r}, "
                             f"not {self.image!r} on {self.config.docker_runtime!r}")
        self.hosts = hosts.ready()
        self.host: DockerHost | None = None
        """Where the interpreter runs (it holds one of that host's slots from its first start to close)."""
        self._epoch = 0
        self._inflight: set[asyncio.Future] = set()

    @property
    def client(self):
        """The docker SDK client of this sandbox's host."""
        return docker_client(self.host.url if self.host is not None else self.hosts.live()[0].url)

    @property
    def lost(self) -> bool:
        """True when its host went down since it was placed (its interpreter is gone with the daemon)."""
        return self.host is not None and not self.hosts.current(self.host, self._epoch)

    def _labels(self) -> list[str]:
        return [f"forage.owner={owner_label()}", f"forage.sandbox.id={self.id}"]

    def _create(self, client):
        _used.add(self.host.url if self.host is not None else None)
        c = self.config
        env = {"HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **c.env}
        labels = {LABEL: "1", "forage.owner": owner_label(), "forage.owner.machine": MACHINE,
                  "forage.owner.boot": BOOT, "forage.sandbox.id": self.id, **self.hosts.labels()}
        return client.containers.create(
            self.image, ["python3", "-I", "-u", "-c", server_source(), "--kill-strays"],
            user=f"{SANDBOX_UID}:{SANDBOX_UID}", working_dir="/work", environment=env, hostname="sandbox",
            network_mode="none", read_only=True,
            tmpfs={"/work": f"size={c.workdir_mb}m,mode=0755,uid={SANDBOX_UID},gid={SANDBOX_UID}",
                   "/tmp": f"size={tmp_mb(c)}m,mode=1777"},
            mem_limit=f"{c.memory_mb}m", memswap_limit=f"{c.memory_mb}m", pids_limit=c.pids + _runtime_own_pids(c),
            nano_cpus=int(c.cpus * 1e9), cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={docker_profile(runtime=c.docker_runtime)}"],
            runtime=c.docker_runtime,
            ipc_mode="private", shm_size=f"{shm_mb(c)}m", ulimits=[{"Name": "nofile", "Soft": NOFILE, "Hard": NOFILE}],
            stdin_open=True, labels=labels, log_config={"type": "none"},
        )

    def _create_and_attach(self, client):
        container = self._create(client)
        try:
            resp = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
            sock = plain_socket(getattr(resp, "_sock", resp))
            container.start()
        except BaseException:
            container.remove(force=True)
            raise
        return container, sock

    async def _place(self, exclude: set) -> None:
        """Move to the least-loaded live host outside ``exclude`` (giving back the slot held so far)."""
        old, self.host = self.host, None
        if old is not None:
            self.hosts.release(old)
        self.host = await self.hosts.place(exclude, wait=self.config.start_timeout)
        self._epoch = self.host.epoch

    async def _spawn(self) -> _Process:
        tried: set = set()
        while True:
            if self.host is None or self.lost:
                await self._place(tried)
            host = self.host
            assert host is not None
            try:
                client = docker_client(host.url)
            except SandboxUnavailable as e:
                if await asyncio.to_thread(self.hosts.check, host, e):
                    raise SandboxError(f"docker at {host.name} answers pings but not the client: {e}") from None
                tried.add(host)
                continue
            # The thread runs on when the caller is cancelled (a pool closing mid-recycle): shield it, and
            # remove what it made if nobody is left to use it.
            fut = asyncio.ensure_future(asyncio.to_thread(self._create_and_attach, client))
            self._inflight.add(fut)
            fut.add_done_callback(self._inflight.discard)
            try:
                container, sock = await asyncio.shield(fut)
            except asyncio.CancelledError:
                fut.add_done_callback(self._discard_start)
                raise
            except Exception as e:
                if await asyncio.to_thread(self.hosts.check, host, e):
                    raise SandboxError(f"docker at {host.name} could not start a sandbox: {type(e).__name__}: {e}") \
                        from None
                tried.add(host)  # the daemon is gone: start elsewhere
                continue
            break
        if self.closed:
            await asyncio.to_thread(self._discard, container, sock)
            raise SandboxError(f"{self.id} was closed while starting")
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return _AttachedProcess(self, container, host, sock, reader, writer)

    @staticmethod
    def _discard(container, sock) -> None:
        try:
            sock.close()
        except Exception:
            pass
        try:
            container.remove(force=True)
        except Exception:
            pass

    def _discard_start(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            threading.Thread(target=self._discard, args=fut.result(), daemon=True).start()

    async def _cleanup(self) -> None:
        if self._inflight:  # let starts and removals in flight finish, so the label sweep below sees the end state
            await asyncio.wait(list(self._inflight), timeout=30)
        host, self.host = self.host, None
        if host is None:
            return
        self.hosts.release(host)
        if host.down:
            return  # the daemon went away with its containers, or its next start's sweep removes them
        try:
            await asyncio.to_thread(remove_labelled, docker_client(host.url), self._labels())
        except Exception:  # the daemon went away: its containers went with it, or `forage sandbox reap` will
            pass
