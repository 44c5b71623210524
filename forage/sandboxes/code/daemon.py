"""Start ``dockerd`` when it is not running (we may be root on a machine without systemd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from ...assets import cache_dir

__all__ = ["DockerUnavailable", "docker_ping", "ensure_dockerd", "ensure_runsc_runtime", "RUNSC_ARGS", "ScratchDockerd"]

RUNSC_ARGS = ["--network=none", "--oci-seccomp"]
"""How gVisor is registered: no network stack at all (every sandbox runs with ``--network none``,
which runsc refuses otherwise), and the container's seccomp profile applied inside gVisor too."""


class DockerUnavailable(RuntimeError):
    """No docker daemon answers and none could be started (the message says why)."""


def docker_ping(timeout: float = 3.0) -> bool:
    """True when a docker daemon answers on the default socket."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def ensure_dockerd(wait: float = 60.0) -> None:
    """Return when ``docker info`` works, starting ``dockerd`` in the background (log under the cache) if needed."""
    if docker_ping():
        return
    if shutil.which("dockerd") is None:
        raise DockerUnavailable("dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise DockerUnavailable("no docker daemon is running and starting one needs root")
    log_path = cache_dir("sandbox") / "dockerd.log"
    pid_file = Path("/var/run/docker.pid")
    if pid_file.exists():  # a stale pid file from a killed daemon blocks a new one
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
        except (ValueError, ProcessLookupError, PermissionError):
            pid_file.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if docker_ping(timeout=2.0):
            return
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace").splitlines()[-20:]
    raise DockerUnavailable(f"dockerd did not answer within {wait:.0f} s; log {log_path}:\n" + "\n".join(tail))


def ensure_runsc_runtime(wait: float = 20.0) -> str:
    """Register gVisor's ``runsc`` with the running dockerd when it is installed; return what was done.

    Merges ``{"runtimes": {"runsc": ...}}`` into ``/etc/docker/daemon.json`` and sends dockerd
    SIGHUP (it reloads its runtimes live; running containers are not touched).
    """
    import json
    import signal

    runsc = shutil.which("runsc")
    if runsc is None:
        return "runsc (gVisor) is not installed: apt-get install runsc"
    import docker

    client = docker.from_env(timeout=10)
    try:
        if "runsc" in (client.info().get("Runtimes") or {}):
            return "runsc is already a docker runtime"
        if os.geteuid() != 0:
            return "registering runsc with dockerd needs root"
        conf = Path("/etc/docker/daemon.json")
        data = json.loads(conf.read_text()) if conf.exists() and conf.read_text().strip() else {}
        data.setdefault("runtimes", {})["runsc"] = {"path": runsc, "runtimeArgs": RUNSC_ARGS}
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(json.dumps(data, indent=2) + "\n")
        try:
            pid = int(Path("/var/run/docker.pid").read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as e:
            return f"wrote {conf}, but could not signal dockerd ({e}): restart it to get runsc"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if "runsc" in (client.info().get("Runtimes") or {}):
                return f"registered runsc ({runsc}) with dockerd"
            time.sleep(0.5)
        return f"wrote {conf}, but dockerd does not list runsc yet"
    finally:
        client.close()


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``text``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
            state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            out.append(int(d))
    return out


class ScratchDockerd:
    """A ``dockerd`` of our own on its own socket, data root and exec root (no bridge, no iptables): a
    second docker host on this machine for tests and benchmarks. Needs root.

    ``start()`` (again after ``kill()``: a restart stops the containers the dead daemon left running),
    ``kill()`` (SIGKILL: a host that dies), ``stop()`` (SIGTERM) and ``cleanup()`` (everything down,
    the directory removed).
    """

    def __init__(self, parent: str = "/tmp", nice: int = 19) -> None:
        import tempfile

        self.root = tempfile.mkdtemp(prefix="fdk-", dir=parent)  # short: a unix socket path has 108 bytes
        self.url = f"unix://{self.root}/docker.sock"
        self.nice = nice
        Path(self.root, "daemon.json").write_text("{}")  # not /etc/docker/daemon.json: nothing shared
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        """True while the daemon process lives."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: float = 60.0, tries: int = 3) -> "ScratchDockerd":
        """Start the daemon and wait until it answers (a restart right after a SIGKILL may need a second try)."""
        if shutil.which("dockerd") is None:
            raise DockerUnavailable("dockerd is not installed (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise DockerUnavailable("starting a dockerd needs root")
        for attempt in range(tries):
            try:
                self._start(wait)
                return self
            except DockerUnavailable:
                if attempt == tries - 1:
                    raise
                time.sleep(2.0)
        return self

    def _clear_stale_pidfiles(self) -> None:
        """Remove pid files of processes gone (or left as zombies: a killed dockerd's containerd is reparented to
        a pid 1 that may never reap it, and a new dockerd would take the zombie for a running containerd)."""
        for pid_file in (Path(self.root, "docker.pid"), Path(self.root, "exec/containerd/containerd.pid")):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid not in _processes_mentioning(self.root):
                pid_file.unlink(missing_ok=True)

    def _start(self, wait: float) -> None:
        from .docker import ping_host

        self._clear_stale_pidfiles()
        r = self.root
        cmd = ["nice", "-n", str(self.nice), "dockerd", "--host", self.url, "--data-root", f"{r}/data",
               "--exec-root", f"{r}/exec", "--pidfile", f"{r}/docker.pid", "--config-file", f"{r}/daemon.json",
               "--bridge", "none", "--iptables=false", "--ip-masq=false"]
        with open(f"{r}/dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + wait
        while ping_host(self.url, 2.0) is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DockerUnavailable(f"the dockerd at {self.url} did not start; its log:\n{self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the daemon's log."""
        return "\n".join(Path(self.root, "dockerd.log").read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the daemon (its containerd goes with it; container shims run on, as after a host crash)."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()  # nice execs dockerd: the same pid
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM the daemon and wait for it."""
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cleanup(self) -> list[str]:
        """Take everything of this daemon down and remove its directory; return what had to be forced."""
        from .docker import docker_client, reap_containers

        forced = []
        if self.proc is not None and not self.running:  # killed: a restart stops the containers it left
            try:
                self.start()
            except DockerUnavailable as e:
                forced.append(str(e))
        if self.running:
            try:
                reap_containers(only_dead_owners=False, client=docker_client(self.url))
            except Exception as e:  # noqa: BLE001
                forced.append(f"reap failed: {e}")
        self.stop()
        deadline = time.monotonic() + 30
        while _processes_mentioning(self.root) and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in _processes_mentioning(self.root):
            forced.append(f"killed process {pid}")
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        mounts = [line.split()[4] for line in open("/proc/self/mountinfo") if line.split()[4].startswith(self.root)]
        for m in sorted(mounts, key=len, reverse=True):
            if m != f"{self.root}/data":  # dockerd leaves its own bind of the data root; nothing else may stay
                forced.append(f"unmounted {m}")
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        return forced
