"""The warm pool under concurrency, and reaping of everything a crashed owner left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from _sandbox_helpers import make_pool, require

from forage.sandboxes.code import SandboxConfig, SandboxError, SandboxPool


async def episode(pool: SandboxPool, i: int) -> None:
    async with pool.session() as sb:
        r = await sb.run(f"x = {i}\nprint(x * 2)")
        assert r.stdout == f"{2 * i}\n" and r.status == "ok", r
        await asyncio.sleep(0.01 * (i % 5))  # the agent "thinks"
        r = await sb.run("import os\nprint(x + 1, os.listdir('.'))")
        assert r.stdout == f"{i + 1} []\n", r  # its own state, nobody else's


@pytest.mark.slow
async def test_64_concurrent_episodes_bwrap():
    pool = make_pool("bwrap", size=4, max_size=64, config=SandboxConfig(timeout=30))
    try:
        await pool.start()
        await asyncio.gather(*(episode(pool, i) for i in range(64)))
        await asyncio.gather(*(episode(pool, i) for i in range(64, 128)))  # a second wave reuses them
        s = pool.stats()
        assert s.acquired == 128 and s.busy == 0 and s.started <= 64, s
    finally:
        await pool.close()


@pytest.mark.slow
async def test_64_concurrent_episodes_docker_with_a_smaller_pool():
    pool = make_pool("docker", size=2, max_size=16, config=SandboxConfig(timeout=30))
    try:
        await asyncio.gather(*(episode(pool, i) for i in range(64)))  # 64 episodes take turns on 16 containers
        s = pool.stats()
        assert s.acquired == 64 and s.started <= 16 and s.busy == 0, s
    finally:
        await pool.close()


async def test_release_recycles_and_fresh_is_untouched():
    pool = make_pool("bwrap", size=1, max_size=2, recycle="reset")
    try:
        async with pool.session() as sb:
            await sb.run("import json\njson.loads = None\nsecret = 1")
        async with pool.session() as sb:  # soft reset: variables gone (module state may remain)
            assert (await sb.run("print('secret' in globals())")).stdout == "False\n"
        async with pool.session(fresh=True) as sb:
            assert sb.calls == 0
            assert (await sb.run("import json\nprint(json.loads('[1]'))")).stdout == "[1]\n"
        with pytest.raises(SandboxError):
            await pool.release(sb)  # not acquired any more
    finally:
        await pool.close()
    with pytest.raises(SandboxError, match="closed"):
        await pool.acquire()


def test_bad_pool_arguments():
    with pytest.raises(ValueError):
        SandboxPool("local", size=3, max_size=2, unsafe=True)
    with pytest.raises(ValueError):
        SandboxPool("local", recycle="never", unsafe=True)


CRASHER = textwrap.dedent("""
    import asyncio, os, sys
    from forage.sandboxes.code import make_sandbox
    async def main():
        sbs = [make_sandbox(sys.argv[1]) for _ in range(2)]
        for sb in sbs:
            await sb.start()
            await sb.run("import subprocess; subprocess.Popen(['sleep', '300'])")
        print("READY", flush=True)
        await asyncio.sleep(300)
    asyncio.run(main())
""")


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_sandboxes_of_a_killed_owner_are_reaped(backend):
    require(backend)
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, backend], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        owner = proc.pid
        if backend == "bwrap":
            assert len(_sandbox_processes(owner)) >= 6  # 2 x (bwrap, its init, python, sleep)
        os.kill(owner, signal.SIGKILL)  # a crash: no atexit, no close
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if backend == "docker":
        from forage.sandboxes.code.docker import LABEL, docker_client, labelled_containers, reap_containers

        left = [c for c in labelled_containers(docker_client(), [LABEL])
                if c["Labels"].get("forage.owner", "").startswith(f"{owner}:")]
        assert len(left) == 2  # still there after the crash...
        reap_containers()  # ...until the next start (or `forage sandbox reap`)
        left = [c for c in labelled_containers(docker_client(), [LABEL])
                if c["Labels"].get("forage.owner", "").startswith(f"{owner}:")]
        assert left == []
    else:
        from forage.sandboxes.code.cgroups import list_cgroups, reap_stale_cgroups

        deadline = time.monotonic() + 10  # --die-with-parent: bubblewrap and everything under it die at once
        while time.monotonic() < deadline and _sandbox_processes(owner):
            time.sleep(0.1)
        assert _sandbox_processes(owner) == []
        reap_stale_cgroups()
        assert not [g for g in list_cgroups() if g.startswith(f"{owner}-")]


def _sandbox_processes(owner: int) -> list[int]:
    """Host pids of bwrap processes whose parent was ``owner``, and of sleeps in its cgroups."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            cg = open(f"/proc/{d}/cgroup").read()
        except OSError:
            continue
        if f"/forage/{owner}-" in cg and stat[0] != "Z":
            out.append(int(d))
    return out
