"""Fixtures shared by the sandbox and code-env tests: real dockerd, real bubblewrap, the built image."""

from __future__ import annotations

import os

import pytest

from forage.sandboxes.code import SandboxConfig, SandboxPool, SandboxUnavailable

BACKENDS = ["bwrap", "docker"]
_ready: dict[str, str] = {}  # backend -> "" when usable, else why not


GVISOR = "gvisor"
"""Pseudo backend of the tests: docker with ``docker_runtime="runsc"``."""


def backend_reason(backend: str) -> str:
    """"" when ``backend`` can run here (starting dockerd / building the image as the setup does), else why not."""
    if backend in _ready:
        return _ready[backend]
    if backend == GVISOR:
        why = backend_reason("docker")
        if not why:
            from forage.sandboxes.code.docker import docker_runtimes

            runtimes = docker_runtimes()
            if "runsc" not in runtimes:
                why = f"gVisor (runsc) is not a runtime of this docker daemon (it has {', '.join(runtimes)})"
        _ready[backend] = why
        return why
    why = ""
    try:
        if os.geteuid() != 0:
            raise SandboxUnavailable("not root: cannot build the sandbox root or use cgroups/dockerd")
        from forage.sandboxes.code.image import build_rootfs

        build_rootfs()
        if backend == "docker":
            from forage.sandboxes.code.daemon import ensure_dockerd
            from forage.sandboxes.code.image import ensure_docker_image

            ensure_dockerd()
            ensure_docker_image()
        from forage.sandboxes.code import backend_available

        ok, why = backend_available(backend)
    except Exception as e:  # any failure becomes a printed skip reason
        why = f"{type(e).__name__}: {e}"
    _ready[backend] = why
    return why


def require(backend: str) -> None:
    """Skip (with the reason printed) when ``backend`` cannot run here."""
    why = backend_reason(backend)
    if why:
        print(f"skipping {backend}: {why}")
        pytest.skip(f"{backend} sandbox unavailable: {why}")


TEST_CONFIG = SandboxConfig(timeout=3.0)


def make_pool(backend: str, **kwargs) -> SandboxPool:
    """A pool for tests, with short timeouts (``"gvisor"``: docker on runsc)."""
    require(backend)
    kwargs.setdefault("config", TEST_CONFIG)
    if backend == GVISOR:
        import dataclasses

        kwargs["config"] = dataclasses.replace(kwargs["config"], docker_runtime="runsc")
        backend = "docker"
    return SandboxPool(backend, **kwargs)


def backend_kwargs(backend: str) -> tuple[str, dict]:
    """(real backend, extra sandbox config) for ``gym.make(..., sandbox=, sandbox_config=)``."""
    return ("docker", {"docker_runtime": "runsc"}) if backend == GVISOR else (backend, {})


_UNISTD = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "aarch64": "/usr/include/asm-generic/unistd.h"}


def kernel_syscall_numbers(arch: str) -> dict[str, int]:
    """Syscall numbers of ``arch`` read from the kernel's own headers (linux-libc-dev); {} when not installed.

    An oracle independent of libseccomp: ``#define __NR_name N`` (x86_64) or ``#define __NR_name N``
    / ``__NR3264_name`` entries of asm-generic (aarch64).
    """
    import re
    from pathlib import Path

    path = Path(_UNISTD[arch])
    if not path.exists():
        return {}
    text = path.read_text()
    nums: dict[str, int] = {}
    for name, value in re.findall(r"(?m)^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$", text):
        nums.setdefault(name, int(value))
    if arch == "aarch64":  # 64-bit names of the __NR3264_ aliases
        for alias, target in re.findall(r"(?m)^#define __NR_(\w+)\s+__NR3264_(\w+)\s*$", text):
            if target in nums:
                nums.setdefault(alias, nums[target])
    return nums


def native_arch() -> str:
    """This machine's architecture name as the syscall tables use it."""
    import platform

    m = platform.machine()
    return {"arm64": "aarch64"}.get(m, m)
