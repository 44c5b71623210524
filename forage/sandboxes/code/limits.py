"""Limits both backends apply the same way (the rest come from :class:`~.base.SandboxConfig`)."""

from __future__ import annotations

from .base import SandboxConfig

__all__ = ["NOFILE", "shm_mb", "tmp_mb"]

NOFILE = 1024
"""Open files per process (soft and hard ``RLIMIT_NOFILE``), in docker and in bwrap."""


def tmp_mb(config: SandboxConfig) -> int:
    """Size of the ``/tmp`` tmpfs: a quarter of the work dir."""
    return max(1, config.workdir_mb // 4)


def shm_mb(config: SandboxConfig) -> int:
    """Size of ``/dev/shm`` (POSIX semaphores and shared memory of ``multiprocessing``): like ``/tmp``."""
    return tmp_mb(config)
