"""The syscall filter of both sandbox backends, from one deny list: a BPF program for bwrap, a JSON profile for docker.

Everything not listed is allowed (like flatpak's bwrap filter); what is listed fails with ``EPERM``
(``clone3`` with ``ENOSYS``, so the C library falls back to ``clone``, whose flags we can see). The
BPF program is compiled by the host's libseccomp (through ``ctypes``: no Python binding needed),
which resolves the names to the numbers of the machine's own architecture (x86_64, aarch64, ...)
and kills a process that enters the kernel through another ABI (i386 ``int 0x80``, x32), where the
numbers differ. The docker profile lists the same rules by name and only the native architecture.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import json
import os
import platform
from dataclasses import dataclass

__all__ = ["DENIED", "ARG_RULES", "ENOSYS_SYSCALLS", "ArgRule", "bwrap_filter", "docker_profile", "SeccompUnavailable",
           "resolve"]

DENIED: dict[str, tuple[str, ...]] = {
    "keyrings (the kernel keyring is shared with the host)": ("keyctl", "add_key", "request_key"),
    "io_uring (a large, often exploited kernel surface)": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "kernel attack surface": ("userfaultfd", "perf_event_open", "bpf", "lookup_dcookie", "uselib", "vm86", "vm86old",
                              "modify_ldt", "ustat", "sysfs", "_sysctl", "nfsservctl", "vhangup", "quotactl",
                              "quotactl_fd", "fanotify_init", "open_by_handle_at", "name_to_handle_at"),
    "other processes' memory": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
                                "process_madvise"),
    "namespaces and mounts": ("unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "open_tree",
                              "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
    "the host's clock, kernel and devices": ("reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module",
                                             "delete_module", "create_module", "query_module", "get_kernel_syms",
                                             "swapon", "swapoff", "acct", "syslog", "settimeofday", "stime",
                                             "clock_settime", "clock_adjtime", "iopl", "ioperm", "sethostname",
                                             "setdomainname"),
    "NUMA policy (other tenants' memory placement)": ("mbind", "set_mempolicy", "migrate_pages", "move_pages",
                                                      "set_mempolicy_home_node"),
}
"""Syscalls refused with EPERM, grouped by why a code sandbox has no use for them."""

ENOSYS_SYSCALLS = ("clone3",)
"""Refused with ENOSYS: its flags live in memory a filter cannot read, and libc then falls back to ``clone``."""

_VSOCK = 40  # AF_VSOCK
_CLONE_NS_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
                   "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                   "CLONE_NEWNET": 0x40000000}


@dataclass(frozen=True)
class ArgRule:
    """Refuse ``syscall`` (EPERM) when ``(args[index] & mask) == value``."""

    syscall: str
    index: int
    mask: int
    value: int
    why: str


ARG_RULES: tuple[ArgRule, ...] = (
    # Masked to 32 bits: the kernel reads the family as an int, so high garbage bits must not slip past.
    ArgRule("socket", 0, 0xFFFFFFFF, _VSOCK, "AF_VSOCK reaches the hypervisor and host, past the network namespace"),
    *(ArgRule("clone", 0, flag, flag, f"clone({name}): no new namespaces") for name, flag in _CLONE_NS_FLAGS.items()),
)
"""Syscalls refused only for some arguments."""

# libseccomp's ABI (seccomp.h); stable since 2.x.
_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7
_ARCH_TOKENS = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "arm64": "SCMP_ARCH_AARCH64",
                "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64"}


class SeccompUnavailable(RuntimeError):
    """libseccomp is not installed, so no BPF filter can be compiled here."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise SeccompUnavailable("libseccomp is not installed (apt-get install libseccomp2)") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def all_names() -> list[str]:
    """Every syscall name the filter refuses (unconditionally or for some arguments)."""
    names = [n for group in DENIED.values() for n in group] + list(ENOSYS_SYSCALLS)
    return names + sorted({r.syscall for r in ARG_RULES})


def resolve(name: str, arch: str | None = None) -> int:
    """The syscall number of ``name`` on ``arch`` (``"x86_64"``, ``"aarch64"``; None = this machine), < 0 if none."""
    lib = _lib()
    if arch is None:
        return lib.seccomp_syscall_resolve_name(name.encode())
    token = lib.seccomp_arch_resolve_name(arch.encode())
    if token == 0:
        raise ValueError(f"libseccomp does not know the architecture {arch!r}")
    return lib.seccomp_syscall_resolve_name_arch(token, name.encode())


@functools.lru_cache(maxsize=1)
def bwrap_filter() -> bytes:
    """The compiled BPF program (``struct sock_filter[]``) for ``bwrap --seccomp FD``, for this machine's arch."""
    lib = _lib()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def add(action: int, name: str, cmps: list[_ArgCmp]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a syscall of this architecture (e.g. vm86 on aarch64): nothing to refuse
                return
            arr = (_ArgCmp * max(1, len(cmps)))(*cmps)
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")

        for group in DENIED.values():
            for name in group:
                add(_act_errno(errno.EPERM), name, [])
        for name in ENOSYS_SYSCALLS:
            add(_act_errno(errno.ENOSYS), name, [])
        for r in ARG_RULES:
            add(_act_errno(errno.EPERM), r.syscall, [_ArgCmp(r.index, _CMP_MASKED_EQ, r.mask, r.value)])
        fd = os.memfd_create("forage-seccomp")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def bwrap_filter_fd() -> int:
    """A fresh readable fd (at offset 0) holding :func:`bwrap_filter`; the caller passes it to bwrap and closes it."""
    fd = os.memfd_create("forage-seccomp", 0)  # not CLOEXEC: it is handed to the child
    try:
        os.write(fd, bwrap_filter())
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@functools.lru_cache(maxsize=8)
def docker_profile(machine: str | None = None, runtime: str | None = None) -> str:
    """The docker seccomp profile (JSON text for ``security_opt=["seccomp=..."]``) with the same rules.

    Only the native architecture is listed, so a 32-bit or x32 syscall (other numbers) is refused.
    For ``runtime="runsc"`` the ENOSYS rules are left out: gVisor (as packaged in Debian bookworm)
    ignores ``errnoRet`` and would answer ``clone3`` with EPERM, which stops libc from falling back
    to ``clone`` (no thread could start); gVisor answers ``clone3`` with ENOSYS itself.
    """
    machine = machine or platform.machine()
    arch = _ARCH_TOKENS.get(machine)
    eperm = [n for group in DENIED.values() for n in group]
    rules: list[dict] = [{"names": eperm, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}]
    if runtime != "runsc":
        rules.append({"names": list(ENOSYS_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
    for r in ARG_RULES:
        rules.append({"names": [r.syscall], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                      "args": [{"index": r.index, "value": r.mask, "valueTwo": r.value, "op": "SCMP_CMP_MASKED_EQ"}]})
    profile: dict = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    if arch:
        profile["architectures"] = [arch]
    return json.dumps(profile, separators=(",", ":"))
