"""The ``docker`` backend: one locked-down container per sandbox whose main process is the interpreter."""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import struct
import threading
from typing import Any

from .base import Sandbox, SandboxConfig, SandboxError, SandboxUnavailable, _Process, server_source
from .image import SANDBOX_UID, docker_image_tag
from .limits import NOFILE, shm_mb, tmp_mb
from .seccomp import docker_profile

__all__ = ["DockerSandbox", "docker_client", "reap_containers", "docker_runtimes", "labelled_containers", "LABEL"]

LABEL = "forage.sandbox"
"""Every container we start carries this label (plus ``forage.owner`` = the owner's pid and start time)."""

_client = None
_client_pid = 0
_client_lock = threading.Lock()
_reaped = False


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


def docker_client():
    """A shared docker SDK client (SandboxUnavailable when no daemon answers)."""
    global _client, _client_pid
    with _client_lock:
        if _client is None or _client_pid != os.getpid():  # a forked child must not share the connection pool
            try:
                import docker

                client = docker.from_env(timeout=60)
                client.ping()
            except Exception as e:
                raise SandboxUnavailable(f"no docker daemon answers ({type(e).__name__}: {e}); "
                                         "run scripts/setup.sh or `forage sandbox build` to start one") from None
            _client, _client_pid = client, os.getpid()
        return _client


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


def _remove_labelled(client, labels: list[str]) -> int:
    """Force-remove every container carrying all ``labels``; return how many."""
    return sum(_remove(client, c["Id"]) for c in labelled_containers(client, labels))


def reap_containers(only_dead_owners: bool = True, client=None) -> int:
    """Remove Forage sandbox containers: those whose owner process is gone (or all of them); return how many."""
    client = client or docker_client()
    removed = 0
    for c in labelled_containers(client, [LABEL]):
        owner = (c.get("Labels") or {}).get("forage.owner", "")
        pid = owner.split(":", 1)[0]
        if only_dead_owners and pid.isdigit() and _owner_id(int(pid)) == owner and owner != "":
            continue
        removed += _remove(client, c["Id"])
    return removed


def _remove_own_containers() -> None:
    if _client is None or _client_pid != os.getpid():
        return  # a forked child leaves its parent's containers alone
    try:
        _remove_labelled(_client, [f"forage.owner={owner_label()}"])
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

    def __init__(self, sandbox: "DockerSandbox", container, sock: socket.socket,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sandbox, self.container, self.sock = sandbox, container, sock
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
        await asyncio.to_thread(self._remove)

    def _remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:
            pass

    async def death_reason(self) -> str:
        def state() -> dict:
            try:
                self.container.reload()
                return self.container.attrs.get("State", {})
            except Exception:
                return {}

        for _ in range(20):
            st = await asyncio.to_thread(state)
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

    Every container carries the owner's labels; ``close()`` removes all containers labelled with
    this sandbox's id, also one a cancelled start created after its caller stopped waiting.
    """

    backend = "docker"

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.client = docker_client()
        self.image = self.config.image or docker_image_tag()
        try:
            self.client.images.get(self.image)
        except Exception:
            raise SandboxUnavailable(f"docker image {self.image!r} is missing: run `forage sandbox build`") from None
        runtime = self.config.docker_runtime
        if runtime is not None and runtime not in docker_runtimes(self.client):
            raise SandboxUnavailable(f"the docker daemon has no runtime {runtime!r} "
                                     f"(it has {', '.join(docker_runtimes(self.client))}); install gVisor for runsc")
        self._starts: set[asyncio.Future] = set()
        global _reaped
        if not _reaped:
            _reaped = True
            reap_containers(client=self.client)

    def _labels(self) -> list[str]:
        return [f"forage.owner={owner_label()}", f"forage.sandbox.id={self.id}"]

    def _create(self):
        c = self.config
        env = {"HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **c.env}
        return self.client.containers.create(
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
            stdin_open=True, labels={LABEL: "1", "forage.owner": owner_label(), "forage.sandbox.id": self.id},
            log_config={"type": "none"},
        )

    def _create_and_attach(self):
        container = self._create()
        try:
            resp = self.client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
            sock = getattr(resp, "_sock", resp)
            container.start()
        except BaseException:
            container.remove(force=True)
            raise
        return container, sock

    async def _spawn(self) -> _Process:
        # The thread runs on when the caller is cancelled (a pool closing mid-recycle): shield it, and
        # remove what it made if nobody is left to use it.
        fut = asyncio.ensure_future(asyncio.to_thread(self._create_and_attach))
        self._starts.add(fut)
        fut.add_done_callback(self._starts.discard)
        try:
            container, sock = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(self._discard_start)
            raise
        if self.closed:
            await asyncio.to_thread(self._discard, container, sock)
            raise SandboxError(f"{self.id} was closed while starting")
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return _AttachedProcess(self, container, sock, reader, writer)

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
        if self._starts:  # let starts in flight finish, so the label sweep below sees their containers
            await asyncio.wait(list(self._starts), timeout=30)
        try:
            await asyncio.to_thread(_remove_labelled, self.client, self._labels())
        except Exception:  # the daemon went away: its containers went with it, or `forage sandbox reap` will
            pass
