"""Start ``dockerd`` when it is not running (we may be root on a machine without systemd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from ...assets import cache_dir

__all__ = ["DockerUnavailable", "docker_ping", "ensure_dockerd", "ensure_runsc_runtime", "RUNSC_ARGS"]

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
