"""Isolation against hostile code, probed from inside a sandbox and checked from the host, on bwrap and docker.

Each test runs attacker code in a sandbox (through the Sandbox API, or gym's HumanEval ``python``
tool), then looks from the host: the uid the code really has, the host's sysctls, keyring and
vsock port, the syscalls the kernel refused and with which errno (the numbers come from the
kernel headers, not from the filter under test).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import socket
from pathlib import Path

import gymnasium as gym
import pytest
from _sandbox_helpers import BACKENDS, GVISOR, backend_kwargs, kernel_syscall_numbers, make_pool, native_arch, require

import forage  # noqa: F401
from forage.sandboxes.code import SandboxConfig

CONFIG = SandboxConfig(timeout=20.0, memory_mb=512, pids=64, output_limit=1 << 16, workdir_mb=16)
NR = kernel_syscall_numbers(native_arch())


ISOLATED = [*BACKENDS, GVISOR]  # gVisor (docker on runsc) is skipped with a reason where it is not installed


@pytest.fixture(scope="module", params=ISOLATED)
def pool(request):
    p = make_pool(request.param, size=1, max_size=2, config=CONFIG)
    p.backend_name = request.param
    yield p
    p.close_sync()


async def probe(pool, code: str) -> str:
    async with pool.session(fresh=True) as sb:
        r = await sb.run(code)
    assert r.ok, r
    return r.stdout


def host_uids_of(sb) -> list[int]:
    """Real, effective, saved and fs uids on the host of every process of the sandbox ``sb``."""
    if sb.backend == "bwrap":
        assert sb._cg is not None, "bwrap runs without a cgroup here"
        pids = {p for f in sb._cg.procs_files() for p in Path(f).read_text().split()}
    else:
        sb._proc.container.reload()
        pids = {str(sb._proc.container.attrs["State"]["Pid"])}
    uids = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                uids += [int(u) for u in line.split()[1:]]
    assert uids, pids
    return uids


async def test_code_never_runs_as_host_root(pool):
    async with pool.session(fresh=True) as sb:
        r = await sb.run("import os, time\nprint(os.getuid(), os.geteuid())")
        assert r.stdout == "1000 1000\n", r
        uids = host_uids_of(sb)
    assert 0 not in uids, uids
    if pool.backend_name == "bwrap" and os.geteuid() == 0:
        from forage.sandboxes.code.bwrap import HOST_UID

        assert set(uids) == {HOST_UID}, uids


SYSCTL = "/proc/sys/fs/lease-break-time"  # global (not per namespace) and harmless


async def test_proc_sys_is_read_only_and_the_host_sysctl_stays(pool):
    before = Path(SYSCTL).read_text()
    code = f"""
import os
writable = []
for d, _, files in os.walk('/proc/sys'):
    for f in files:
        p = os.path.join(d, f)
        try:
            os.close(os.open(p, os.O_WRONLY))
            writable.append(p)
        except OSError:
            pass
try:
    with open({SYSCTL!r}, 'w') as f:
        f.write(str(int({before.strip()!r}) + 7))
    print('WROTE')
except OSError as e:
    print('refused', e.errno)
print(len(writable), writable[:5])
"""
    try:
        out = await probe(pool, code)
        after = Path(SYSCTL).read_text()
    finally:
        if Path(SYSCTL).read_text() != before:  # never leave the host changed, even when the test fails
            Path(SYSCTL).write_text(before)
    assert after == before
    assert out.startswith("refused ") and out.splitlines()[1] == "0 []", out


async def test_own_hostname_that_cannot_be_changed(pool):
    host = socket.gethostname()
    out = await probe(pool, "import socket, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                            "print(socket.gethostname(), libc.sethostname(b'pwned', 5), ctypes.get_errno())")
    assert out.split() == ["sandbox", "-1", str(errno.EPERM)], out
    assert socket.gethostname() == host


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


KEY_SPEC_SESSION, KEY_SPEC_USER, KEY_SPEC_USER_SESSION = -3, -4, -5
KEYCTL_GET_KEYRING_ID, KEYCTL_SEARCH, KEYCTL_UNLINK = 0, 10, 9


async def test_the_host_keyring_is_out_of_reach(pool):
    libc = _libc()
    desc = f"forage-host-{secrets.token_hex(4)}".encode()
    host_key = libc.syscall(NR["add_key"], b"user", desc, b"host-secret", 11, ctypes.c_long(KEY_SPEC_SESSION))
    if host_key < 0:
        print(f"the host cannot use its keyring (errno {ctypes.get_errno()}): only the sandbox side is checked")
    planted = f"forage-sandbox-{secrets.token_hex(4)}".encode()
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
res = []
for ring in ({KEY_SPEC_SESSION}, {KEY_SPEC_USER}, {KEY_SPEC_USER_SESSION}):
    res.append((libc.syscall({NR['keyctl']}, {KEYCTL_SEARCH}, ctypes.c_long(ring), b'user', {desc!r}, 0),
                ctypes.get_errno()))
    res.append((libc.syscall({NR['keyctl']}, {KEYCTL_GET_KEYRING_ID}, ctypes.c_long(ring), 0), ctypes.get_errno()))
    res.append((libc.syscall({NR['add_key']}, b'user', {planted!r}, b'x', 1, ctypes.c_long(ring)), ctypes.get_errno()))
res.append((libc.syscall({NR['request_key']}, b'user', {desc!r}, None, 0), ctypes.get_errno()))
print(res)
"""
    try:
        out = await probe(pool, code)
        found = libc.syscall(NR["keyctl"], KEYCTL_SEARCH, ctypes.c_long(KEY_SPEC_SESSION), b"user", planted, 0)
    finally:
        if host_key >= 0:
            libc.syscall(NR["keyctl"], KEYCTL_UNLINK, ctypes.c_long(host_key), ctypes.c_long(KEY_SPEC_SESSION))
    assert eval(out) == [(-1, errno.EPERM)] * 10, out
    if host_key >= 0:
        assert found < 0  # the key the sandbox tried to plant is not in the host's keyring


async def test_vsock_is_refused_even_for_a_port_the_host_holds(pool):
    host = None
    try:
        host = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        host.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        host.listen(1)
        port = host.getsockname()[1]
    except (OSError, AttributeError) as e:
        print(f"no vsock on this host ({e}): only the refusal inside is checked")
        port = 5000
    code = f"""
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
try:
    s = socket.socket(40, socket.SOCK_STREAM)
    s.bind((0xFFFFFFFF, {port}))
    print('BOUND')
except OSError as e:
    print('socket', e.errno)
# the family with garbage in the high 32 bits: the kernel reads an int, so a filter must mask
print('raw', libc.syscall({NR['socket']}, ctypes.c_long(40 | (1 << 32)), 1, 0), ctypes.get_errno())
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); print('unix ok')
"""
    try:
        out = await probe(pool, code)
    finally:
        if host is not None:
            host.close()
    assert out.split("\n")[:3] == [f"socket {errno.EPERM}", f"raw -1 {errno.EPERM}", "unix ok"], out


# name -> arguments; most are chosen so that the kernel itself, without the filter, would answer
# something other than EPERM (success, EINVAL, EFAULT, ESRCH): an EPERM here comes from the filter.
KERNEL_SURFACE = {
    "io_uring_setup": "0, None", "io_uring_enter": "-1, 0, 0, 0, None, 0", "io_uring_register": "-1, 0, None, 0",
    "userfaultfd": "0", "perf_event_open": "None, 0, -1, -1, 0", "ptrace": "0x7fffffff, os.getpid(), 0, 0",
    "bpf": "-1, None, 0", "unshare": "0", "setns": "-1, 0", "mount": "None, None, None, 0, None",
    "keyctl": f"{KEYCTL_GET_KEYRING_ID}, -3, 0", "add_key": "b'user', b'k', b'v', 1, -3",
    "request_key": "b'user', b'k', None, 0", "process_vm_readv": "os.getpid(), None, 0, None, 0, 0",
    "kcmp": "os.getpid(), os.getpid(), 0, 0, 0", "pidfd_getfd": "-1, 0, 0", "fsopen": "None, 0",
    "open_tree": "-1, None, 0", "pivot_root": "None, None", "kexec_load": "0, 0, None, 0",
    "init_module": "None, 0, None",
    "swapon": "None, 0", "syslog": "3, None, 0", "open_by_handle_at": "-1, None, 0",
}


@pytest.mark.parametrize("backend", ISOLATED)
def test_kernel_attack_surface_is_filtered_through_the_python_tool(backend):
    require(backend)
    if not NR:
        pytest.skip(f"no kernel headers for {native_arch()} (linux-libc-dev): no independent syscall numbers")
    calls = {n: a for n, a in KERNEL_SURFACE.items() if n in NR}
    clone_fs, clone_newuser, clone_newns = 0x200, 0x10000000, 0x20000
    code = f"""
import ctypes, os, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
res = {{}}
for name, nr, args in {[(n, NR[n], a) for n, a in calls.items()]!r}:
    ctypes.set_errno(0)
    argv = [ctypes.c_long(a) if isinstance(a, int) else a for a in eval('(' + args + ',)')]
    res[name] = [libc.syscall(nr, *argv), ctypes.get_errno()]
# clone with namespace flags (+ CLONE_FS, so the kernel alone would say EINVAL without forking)
for name, flags in (('clone NEWUSER', {clone_newuser | clone_fs}), ('clone NEWNS', {clone_newns | clone_fs})):
    res[name] = [libc.syscall({NR['clone']}, ctypes.c_long(flags), None, None, None, None), ctypes.get_errno()]
res['clone3'] = [libc.syscall({NR['clone3']}, None, ctypes.c_long(0)), ctypes.get_errno()]
print(json.dumps(res))
"""
    real, extra = backend_kwargs(backend)
    env = gym.make("forage/HumanEval-v0", sandbox=real, sandbox_config={"timeout": 20, **extra})
    try:
        base = env.unwrapped
        env.reset(seed=0, options={"task_id": "HumanEval/2"})
        obs, *_ = env.step(base.format_call("python", code=code))
        res = json.loads(obs[obs.index("{"):obs.rindex("}") + 1])
        # what a code sandbox does need still works, in the same episode
        obs2, *_ = env.step(base.format_call("python", code=(
            "import multiprocessing as mp, subprocess, numpy as np, sympy, threading\n"
            "with mp.Pool(2) as p:\n    a = p.map(abs, [-3, 4])\n"
            "q = mp.Queue(); w = mp.Process(target=q.put, args=(7,)); w.start(); b = q.get(); w.join()\n"
            "c = subprocess.run(['sh', '-c', 'echo $((6*7))'], capture_output=True, text=True).stdout.strip()\n"
            "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
            "print(a, b, c, int(np.arange(5).sum()), sympy.factor('x**2 - 1'), os.fork is not None)")))
    finally:
        env.close()
    expected = {n: [-1, errno.EPERM] for n in [*calls, "clone NEWUSER", "clone NEWNS"]}
    expected["clone3"] = [-1, errno.ENOSYS]
    if backend == GVISOR:  # gVisor's own kernel lacks some calls altogether: ENOSYS is a refusal too
        res = {n: ([-1, errno.EPERM] if v == [-1, errno.ENOSYS] and n != "clone3" else v) for n, v in res.items()}
    assert res == expected, {n: v for n, v in res.items() if v != expected.get(n)}
    assert "[3, 4] 7 42 10 (x - 1)*(x + 1) True" in obs2, obs2


async def test_same_limits_and_fd_exhaustion_is_an_error_then_the_next_call_works(pool):
    from forage.sandboxes.code.limits import NOFILE

    async with pool.session(fresh=True) as sb:
        r = await sb.run("import resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE))")
        assert r.stdout == f"({NOFILE}, {NOFILE})\n", r
        r = await sb.run("held = []\nwhile True:\n    held.append(open('/dev/null'))")
        assert r.status == "error" and "Too many open files" in r.stderr, r
        r = await sb.run("print(NOFILE - 32 <= len(held) < NOFILE, 6 * 7)".replace("NOFILE", str(NOFILE)))
        assert r.ok and r.stdout == "True 42\n", r  # the interpreter survived with all those files open
        r = await sb.run("import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))")
        assert r.status == "error" and "ValueError" in r.stderr, r  # the hard limit cannot be raised
        r = await sb.run("del held\nimport gc; gc.collect()\nimport json\nprint(json.dumps([1]))")
        assert r.stdout == "[1]\n", r
        r = await sb.run("import os\nprint(len(os.listdir('/dev/shm')) >= 0, os.statvfs('/dev/shm').f_blocks > 0)")
        assert r.stdout == "True True\n", r


FORK_COUNT = """
import os, time
kids = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids += 1
st = [os.statvfs(p) for p in ('/work', '/tmp', '/dev/shm')]
import resource
print(kids, [s.f_blocks * s.f_frsize >> 20 for s in st], resource.getrlimit(resource.RLIMIT_NOFILE))
"""


async def test_both_backends_apply_the_same_limits():
    for b in BACKENDS:
        require(b)
    from forage.sandboxes.code import make_sandbox

    config = SandboxConfig(pids=16, workdir_mb=32, timeout=30)
    seen = {}
    for b in BACKENDS:
        async with make_sandbox(b, config) as sb:
            r = await sb.run(FORK_COUNT)
        assert r.ok, r
        seen[b] = r.stdout
    assert len(set(seen.values())) == 1, seen
    kids, sizes = seen["bwrap"].split(" ", 1)
    # 16 pids: the interpreter and its two output drains take 3, the other 13 are the code's
    assert kids == "13" and sizes.startswith("[32, 8, 8]"), seen
