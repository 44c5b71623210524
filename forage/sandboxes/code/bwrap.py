"""The ``bwrap`` backend: bubblewrap namespaces over the read-only debootstrap root, limits via cgroups."""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import shlex
import shutil
import weakref
from pathlib import Path
from typing import Any

from .base import Sandbox, SandboxConfig, SandboxUnavailable, _Process, server_source
from .cgroups import CgroupLimits, cgroups_available, reap_stale_cgroups
from .image import SANDBOX_UID, rootfs_path
from .limits import NOFILE, shm_mb, tmp_mb
from .seccomp import SeccompUnavailable, bwrap_filter, bwrap_filter_fd
from .subproc import PipeProcess, spawn_pipe_process

__all__ = ["BwrapSandbox", "bwrap_available", "HOST_UID"]

HOST_UID = 65534
"""The unprivileged host uid/gid (``nobody``) bwrap runs as when Forage runs as root: the sandbox's uid
maps to it, never to host root."""
_MOUNTPOINTS = ("/mnt", "/media", "/srv", "/opt")
"""Candidates for where the launcher binds the sandbox root in its private mount namespace, so
``nobody`` can reach it (the cache is often under ``/root``, which only root may enter). Not ``/tmp``:
bubblewrap stages its new root there."""


_BWRAP_OWN_PROCS = 2
"""bubblewrap's own processes in the sandbox's cgroup (the launcher exec'd into bwrap, and its pid 1):
added to the pids cap, so agent code may start as many as in docker, where the interpreter is pid 1."""


def _root_mountpoint() -> str | None:
    return next((d for d in _MOUNTPOINTS if os.path.isdir(d) and not os.path.islink(d)), None)

_reaped = False
_names = itertools.count()
_cgroups: "weakref.WeakSet[CgroupLimits]" = weakref.WeakSet()


@atexit.register
def _remove_own_cgroups() -> None:
    """At interpreter exit: kill what is left in our cgroups and delete them (processes die with us anyway)."""
    for cg in list(_cgroups):
        if cg.owner_pid != os.getpid():
            continue  # a forked child leaves its parent's sandboxes alone
        try:
            cg.remove()
        except OSError:
            pass


def bwrap_available() -> tuple[bool, str]:
    """(True, "") when bubblewrap can run here, else (False, why)."""
    if shutil.which("bwrap") is None:
        return False, "bubblewrap is not installed (apt-get install bubblewrap)"
    if not Path("/proc/self/ns/user").exists():
        return False, "the kernel has no user namespaces"
    for knob, off in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces", "0")):
        try:
            if Path(knob).read_text().strip() == off:
                return False, (f"{knob} is {off}: bubblewrap cannot make a user namespace as an unprivileged user "
                               "(and running it as root would make the sandbox host root)")
        except OSError:
            pass
    if os.geteuid() == 0:
        missing = [t for t in ("unshare", "mount", "setpriv") if shutil.which(t) is None]
        if missing:
            return False, f"{', '.join(missing)} (util-linux) missing: needed to drop root before bubblewrap"
        if _root_mountpoint() is None:
            return False, f"none of {', '.join(_MOUNTPOINTS)} exists to bind the sandbox root on"
    try:
        bwrap_filter()
    except SeccompUnavailable as e:
        return False, str(e)
    return True, ""


class BwrapSandbox(Sandbox):
    """Code runs under bubblewrap: every namespace unshared (no network, own hostname), the sandbox
    root bound read-only as ``/``, ``/proc/sys`` read-only, size-limited tmpfs ``/work``, ``/tmp``
    and ``/dev/shm``, uid 1000 in a user namespace, no capabilities, a new session, the seccomp
    filter of :mod:`.seccomp`, at most 1024 open files, and it dies with its parent.

    Started as root, the launcher drops to the host uid :data:`HOST_UID` before bubblewrap runs, so
    the sandbox's uid maps to ``nobody`` on the host, never to root. bubblewrap has no resource
    limits of its own: memory, pids and CPU are capped by a cgroup per sandbox when we may create
    one (root); otherwise memory falls back to ``RLIMIT_AS`` and there is no pids cap.
    ``config.image`` may name another root directory.
    """

    backend = "bwrap"

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        ok, why = bwrap_available()
        if not ok:
            raise SandboxUnavailable(why)
        root = Path(self.config.image) if self.config.image else rootfs_path()
        if not (root / "usr/bin/python3").exists():
            raise SandboxUnavailable(f"no sandbox root at {root}: run `forage sandbox build` (or scripts/setup.sh)")
        self.root = root
        self._cg: CgroupLimits | None = None
        global _reaped
        if not _reaped and cgroups_available():
            _reaped = True
            reap_stale_cgroups()

    def _argv(self, seccomp_fd: int, root: str) -> list[str]:
        """The bubblewrap command line (the root directory as bwrap will see it)."""
        c = self.config
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **c.env}
        argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                "--ro-bind", root, "/", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
                "--dev", "/dev", "--size", str(shm_mb(c) << 20), "--perms", "1777", "--tmpfs", "/dev/shm",
                "--remount-ro", "/dev",
                "--size", str(tmp_mb(c) << 20), "--perms", "1777", "--tmpfs", "/tmp",
                "--size", str(c.workdir_mb << 20), "--perms", "0755", "--tmpfs", "/work", "--chdir", "/work",
                "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
                "--cap-drop", "ALL", "--seccomp", str(seccomp_fd), "--clearenv"]
        for k, v in env.items():
            argv += ["--setenv", k, v]
        return argv + ["--", "python3", "-I", "-u", "-c", server_source(), "--kill-strays"]

    def _launcher(self, seccomp_fd: int) -> list[str]:
        """The host-side command: join the cgroup, set rlimits, drop root, then exec bubblewrap."""
        steps = []
        if self._cg is not None:
            steps += [f"echo $$ > {shlex.quote(f)}" for f in self._cg.procs_files()]
        else:
            steps.append(f"ulimit -v {self.config.memory_mb << 10}")  # no cgroup: cap the address space instead
        steps.append(f"ulimit -n {NOFILE}")
        if os.geteuid() != 0:
            script = " && ".join(steps) + ' && exec "$@"'
            return ["/bin/sh", "-c", script, "sh", *self._argv(seccomp_fd, str(self.root))]
        # As root: a private mount namespace (gone with the sandbox) where the root is reachable for nobody.
        mountpoint = _root_mountpoint() or _MOUNTPOINTS[0]
        steps.insert(len(steps) - 1, f'mount --bind "$0" {mountpoint}')
        drop = f"exec setpriv --reuid={HOST_UID} --regid={HOST_UID} --clear-groups --inh-caps=-all --"
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                " && ".join(steps) + f' && {drop} "$@"', str(self.root), *self._argv(seccomp_fd, mountpoint)]

    async def _spawn(self) -> _Process:
        host_env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}  # bwrap's own pid 1 sees only this
        if cgroups_available() and self._cg is None:
            # Synchronous on purpose (a few mkdir/write calls): a cancelled thread could orphan the cgroup.
            self._cg = CgroupLimits(f"bwrap-{next(_names)}", self.config.memory_mb,
                                   self.config.pids + _BWRAP_OWN_PROCS, self.config.cpus)
            _cgroups.add(self._cg)
        seccomp_fd = bwrap_filter_fd()
        try:
            proc = await spawn_pipe_process(self._launcher(seccomp_fd), env=host_env, pass_fds=(seccomp_fd,))
        finally:
            os.close(seccomp_fd)
        cg = self._cg
        oom_before = cg.oom_kills() if cg is not None else 0

        async def why() -> str:
            if cg is not None and cg.oom_kills() > oom_before:
                return f"out of memory: the limit is {self.config.memory_mb} MiB"
            return ""

        async def on_kill() -> None:
            if cg is not None:
                await asyncio.to_thread(cg.kill_all)

        return PipeProcess(proc, on_kill=on_kill, death_reason=why)

    async def _cleanup(self) -> None:
        if self._cg is not None:
            await asyncio.to_thread(self._cg.remove)
            self._cg = None
