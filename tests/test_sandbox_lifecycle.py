"""Nothing a sandbox started outlives ``close()``: not when it races a pool recycle, a timeout or a crash.

Orphans are counted from the host: docker containers carrying this process's owner label (via
the docker SDK), and this process's bwrap cgroups and the processes in them, that belong to no
sandbox still open.
"""

from __future__ import annotations

import asyncio
import os
import re
import time

import gymnasium as gym
import pytest
from _sandbox_helpers import BACKENDS, GVISOR, backend_kwargs, require

import forage  # noqa: F401
from forage.sandboxes.code import SandboxConfig, live_sandboxes, make_sandbox


def orphans(backend: str) -> list[str]:
    """What this process started for ``backend`` and no open sandbox owns (containers, cgroups, processes)."""
    live = [sb for sb in live_sandboxes() if not sb.closed]
    if backend == GVISOR:  # also runsc's host processes (sentry, gofer) of containers that are gone
        from forage.sandboxes.code.docker import docker_client

        ids = {c["Id"] for c in docker_client().api.containers(all=True)}
        stray = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("runsc-"):
                gone = set(re.findall(r"\b[0-9a-f]{64}\b", cmdline)) - ids
                stray += [f"{cmdline.split(chr(0))[0]} {pid} of {c[:12]}" for c in gone]
        return orphans("docker") + stray
    if backend == "docker":
        from forage.sandboxes.code.docker import docker_client, labelled_containers, owner_label

        ids = {sb.id for sb in live}
        return [f"container {c['Id'][:12]} of {c['Labels'].get('forage.sandbox.id')}"
                for c in labelled_containers(docker_client(), [f"forage.owner={owner_label()}"])
                if c["Labels"].get("forage.sandbox.id") not in ids]
    from forage.sandboxes.code.cgroups import _parents, list_cgroups

    kept = {sb._cg.name for sb in live if getattr(sb, "_cg", None) is not None}
    left = [g for g in list_cgroups() if g.startswith(f"{os.getpid()}-") and g not in kept]
    procs = []
    for parent in _parents():
        for g in left:
            try:
                procs += (parent / g / "cgroup.procs").read_text().split()
            except OSError:
                pass
    return [f"cgroup {g}" for g in left] + [f"process {p}" for p in procs]


def wait_no_orphans(backend: str, seconds: float = 20.0) -> list[str]:
    """Orphans still there after ``seconds`` (a closed sandbox may take a moment to be gone)."""
    deadline = time.monotonic() + seconds
    while True:
        left = orphans(backend)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.mark.parametrize("backend", [*BACKENDS, GVISOR])
def test_closing_envs_in_the_middle_of_recycles_leaves_nothing(backend):
    require(backend)
    assert orphans(backend) == []
    real, extra = backend_kwargs(backend)
    for _ in range(4):
        env = gym.make("forage/HumanEval-v0", sandbox=real, sandbox_config={"timeout": 10, **extra})
        base = env.unwrapped
        env.reset(seed=0, options={"task_id": "HumanEval/2"})
        obs, *_ = env.step(base.format_call("python", code="x = 6 * 7\nprint(x)"))
        assert "42" in obs
        env.reset(options={"task_id": "HumanEval/3"})  # the used sandbox goes back and is being recycled...
        env.close()  # ...when the env closes
        assert wait_no_orphans(backend) == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_close_racing_a_timeout_or_a_crash_leaves_nothing(backend):
    require(backend)
    config = SandboxConfig(timeout=1.0)
    for code, delay in (("while True:\n    pass", 0.5), ("import os, time\ntime.sleep(0.3)\nos._exit(3)", 0.3),
                        ("import subprocess\nsubprocess.Popen(['sleep', '300'])\nwhile True:\n    pass", 0.8)):
        sb = make_sandbox(backend, config)
        await sb.start()
        call = asyncio.ensure_future(sb.run(code))
        await asyncio.sleep(delay)
        await sb.close()
        res = await call
        assert res.status in ("timeout", "crashed", "ok", "error"), res
        assert sb.closed
        with pytest.raises(Exception):
            await sb.run("print(1)")  # a closed sandbox stays closed: nothing restarts behind close()
    assert wait_no_orphans(backend) == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_close_while_starting_leaves_nothing(backend):
    require(backend)
    for wait in (0.0, 0.05, 0.2):
        sb = make_sandbox(backend)
        start = asyncio.ensure_future(sb.start())
        await asyncio.sleep(wait)
        start.cancel()
        await sb.close()
        try:
            await start
        except BaseException:
            pass
    assert wait_no_orphans(backend) == []
