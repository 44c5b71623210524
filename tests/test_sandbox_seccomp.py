"""The one deny list behind both syscall filters: its numbers per architecture, the compiled BPF, the docker profile."""

from __future__ import annotations

import errno
import json
import struct

import pytest
from _sandbox_helpers import kernel_syscall_numbers, native_arch, require

from forage.sandboxes.code import SandboxConfig, SandboxUnavailable, make_sandbox
from forage.sandboxes.code import seccomp

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # linux/audit.h: EM_X86_64 / EM_AARCH64 | 64-bit | LE


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_names_resolve_to_the_kernel_headers_numbers_on_both_architectures(arch):
    headers = kernel_syscall_numbers(arch)
    if not headers:
        print(f"skipping: no kernel headers for {arch} (linux-libc-dev)")
        pytest.skip(f"no kernel headers for {arch}")
    checked = 0
    for name in seccomp.all_names():
        nr = seccomp.resolve(name, arch)
        if name in headers:
            assert nr == headers[name], (arch, name, nr, headers[name])
            checked += 1
        else:  # e.g. vm86 or umount: not a syscall of this architecture, so nothing to refuse
            assert nr < 0, (arch, name, nr)
    assert checked >= 50


def _program(bpf: bytes) -> list[tuple[int, int, int, int]]:
    """Decode ``struct sock_filter[]`` (u16 code, u8 jt, u8 jf, u32 k)."""
    assert len(bpf) % 8 == 0 and bpf
    return [struct.unpack("=HBBI", bpf[i:i + 8]) for i in range(0, len(bpf), 8)]


def test_the_bpf_program_checks_the_arch_and_names_every_denied_number():
    arch = native_arch()
    headers = kernel_syscall_numbers(arch)
    if not headers or arch not in AUDIT_ARCH:
        print(f"skipping: no kernel headers or audit arch for {arch}")
        pytest.skip(f"nothing to check against on {arch}")
    prog = _program(seccomp.bwrap_filter())
    jeq_k = {k for code, _, _, k in prog if code & 0x07 == 0x05 and code & 0xF0 in (0x10, 0x40)}  # BPF_JMP|BPF_JEQ/JSET
    ret_k = {k for code, _, _, k in prog if code & 0x07 == 0x06}  # BPF_RET
    assert AUDIT_ARCH[arch] in jeq_k  # the architecture is checked before any number is trusted
    wanted = [n for n in seccomp.all_names() if n in headers]
    missing = [n for n in wanted if headers[n] not in jeq_k]
    assert missing == [], missing
    assert {0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS} <= ret_k
    assert 40 in jeq_k  # AF_VSOCK
    if arch == "x86_64":  # x32 numbers (bit 30 set) are refused as a foreign ABI, not looked up
        assert any(code == 0x35 and k == 0x40000000 for code, _, _, k in prog)  # BPF_JMP|BPF_JGE|BPF_K


def test_the_docker_profile_carries_the_same_rules():
    prof = json.loads(seccomp.docker_profile("x86_64"))
    assert prof["defaultAction"] == "SCMP_ACT_ALLOW" and prof["architectures"] == ["SCMP_ARCH_X86_64"]
    assert json.loads(seccomp.docker_profile("aarch64"))["architectures"] == ["SCMP_ARCH_AARCH64"]
    refused = {}
    for rule in prof["syscalls"]:
        for name in rule["names"]:
            if not rule.get("args"):
                refused[name] = rule["errnoRet"]
    for group in seccomp.DENIED.values():
        for name in group:
            assert refused.get(name) == errno.EPERM, name
    assert refused["clone3"] == errno.ENOSYS
    runsc = json.loads(seccomp.docker_profile("x86_64", runtime="runsc"))  # it ignores errnoRet: no ENOSYS rule
    assert [r for r in runsc["syscalls"] if "clone3" in r["names"]] == []
    assert len(runsc["syscalls"]) == len(prof["syscalls"]) - 1
    vsock = [r for r in prof["syscalls"] if r["names"] == ["socket"]]
    assert vsock and vsock[0]["args"] == [{"index": 0, "value": 0xFFFFFFFF, "valueTwo": 40, "op": "SCMP_CMP_MASKED_EQ"}]


def test_the_cli_shows_the_filter_it_applies(tmp_path):
    from typer.testing import CliRunner

    from forage.cli.sandbox import app

    runner = CliRunner()
    out = runner.invoke(app, ["seccomp", "--docker"])
    assert out.exit_code == 0 and json.loads(out.stdout) == json.loads(seccomp.docker_profile())
    out = runner.invoke(app, ["seccomp", "--bpf", str(tmp_path / "f.bpf")])
    assert out.exit_code == 0 and (tmp_path / "f.bpf").read_bytes() == seccomp.bwrap_filter()
    out = runner.invoke(app, ["seccomp"])
    assert out.exit_code == 0 and "keyctl" in out.stdout and "AF_VSOCK" in out.stdout


def test_config_is_validated_on_load():
    for bad in ({"timeout": 0}, {"memory_mb": -1}, {"pids": 0}, {"docker_runtime": ""}, {"output_limit": 1.5}):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)
    assert SandboxConfig().docker_runtime is None


def test_an_unknown_docker_runtime_is_a_clear_error():
    require("docker")
    with pytest.raises(SandboxUnavailable, match="no runtime 'no-such-runtime'"):
        make_sandbox("docker", SandboxConfig(docker_runtime="no-such-runtime"))


async def test_gvisor_runtime_when_installed():
    require("docker")
    from forage.sandboxes.code.docker import docker_runtimes

    runtimes = docker_runtimes()
    if "runsc" not in runtimes:
        print(f"skipping: gVisor (runsc) is not a runtime of this docker daemon (it has {runtimes})")
        pytest.skip("runsc (gVisor) is not installed")
    async with make_sandbox("docker", SandboxConfig(docker_runtime="runsc", timeout=30)) as sb:
        r = await sb.run("import os, numpy\nprint(open('/proc/version').read())\n"
                         "print(os.getuid(), numpy.ones(2).sum())")
    assert r.ok and ("gVisor" in r.stdout or "4.4.0" in r.stdout), r  # gVisor's user-space kernel reports itself
    assert "1000 2.0" in r.stdout, r
