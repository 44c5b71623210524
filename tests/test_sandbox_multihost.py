"""One pool over two docker daemons: placement, the same limits on both, a daemon killed mid-episode, reaping per host.

The second daemon is a real ``dockerd`` this module starts on its own socket, data root and exec root
(no bridge, no iptables), kills with SIGKILL to play a dead host, restarts, and takes down at the
end: no daemon, shim, container or mount of it is left (checked in /proc).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import gymnasium as gym
import pytest
from _sandbox_helpers import require

import forage  # noqa: F401
from forage.sandboxes.code import SandboxConfig, SandboxError, SandboxPool, SandboxUnavailable
from forage.sandboxes.code.daemon import DockerUnavailable, ScratchDockerd
from forage.sandboxes.code.docker import LABEL, docker_client, labelled_containers, reap_containers
from forage.sandboxes.code.hosts import POOL_LABEL, DockerHosts, parse_hosts

pytestmark = pytest.mark.docker


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live (non-zombie) process whose command line contains ``text``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            out.append((int(d), cmd.strip()))
    return out


def _mounts_under(root: str) -> list[str]:
    return [line.split()[4] for line in open("/proc/self/mountinfo") if line.split()[4].startswith(root)]


@pytest.fixture(scope="module")
def dockerd2():
    require("docker")
    d = ScratchDockerd()
    try:
        d.start()
    except DockerUnavailable as e:
        d.cleanup()
        print(f"skipping: {e}")
        pytest.skip(str(e))
    yield d
    forced = d.cleanup()
    assert forced == [], forced  # the daemon's own shutdown (after a restart if it was killed) left nothing
    assert not _processes_mentioning(d.root) and not _mounts_under(d.root) and not os.path.exists(d.root)


def _pool_containers(url: str | None, pool: SandboxPool) -> list[dict]:
    """The pool's containers as that daemon itself lists them (the oracle of placement)."""
    return labelled_containers(docker_client(url), [f"{POOL_LABEL}={pool.hosts.id}"])


def test_hosts_are_parsed_from_urls_maps_and_the_environment(monkeypatch):
    assert parse_hosts(["unix:///a.sock", "tcp://10.0.0.2:2375=8", "ssh://me@box"], slots=4) == [
        ("unix:///a.sock", 4), ("tcp://10.0.0.2:2375", 8), ("ssh://me@box", 4)]
    assert parse_hosts({"tcp://a:2375": 2, "default": None}) == [("tcp://a:2375", 2), (None, None)]
    monkeypatch.setenv("FORAGE_DOCKER_HOSTS", "local=3, tcp://b:2375")
    assert parse_hosts(None) == [(None, 3), ("tcp://b:2375", None)]
    for bad in (["http//x"], ["tcp://a", "tcp://a"], ["tcp://a=0"], []):
        with pytest.raises(ValueError):
            parse_hosts(bad)
    with pytest.raises(ValueError, match="docker"):
        SandboxPool("bwrap", hosts=["tcp://a:2375"])


def test_a_host_that_never_answers_is_a_clear_error():
    with pytest.raises(SandboxUnavailable, match="no docker daemon answers at unix:///nonexistent"):
        DockerHosts(["unix:///nonexistent/docker.sock"]).ready()


# -- close() returns once the daemon lists none of the pool's containers ---------------------------------

def _labelled_container(hosts: DockerHosts, tag: str) -> str:
    """A created (not started) container carrying the pool label of ``hosts`` and ``tag``; its id."""
    c = docker_client(None).containers.create(hosts.image, ["true"], labels={**hosts.labels(), "forage.test": tag})
    return c.id


def _slow_removal_elsewhere(monkeypatch, ids: set[str], after: float | None) -> None:
    """Removals of ``ids`` run in another thread that takes ``after`` s (never, for None); the daemon refuses ours
    meanwhile (as it answers 409 "removal in progress"): ``_remove`` reports failure and leaves them listed."""
    import forage.sandboxes.code.docker as dk

    real, started = dk._remove, set()

    def remove(client, cid: str) -> bool:
        if cid not in ids:
            return real(client, cid)
        if after is not None and cid not in started:
            started.add(cid)
            threading.Timer(after, real, (client, cid)).start()
        return False

    monkeypatch.setattr(dk, "_remove", remove)


def test_hosts_close_waits_for_removals_in_flight_elsewhere(monkeypatch):
    require("docker")
    hosts = DockerHosts([None]).ready()
    client, label = docker_client(None), f"{POOL_LABEL}={hosts.id}"
    try:
        first = _labelled_container(hosts, "no-wait")
        _slow_removal_elsewhere(monkeypatch, {first}, after=1.5)
        assert hosts.close() == 0
        assert [c["Id"] for c in labelled_containers(client, [label])] == [first]  # without a wait: still there
        assert _wait_until(lambda: not labelled_containers(client, [label]), 20)

        second = _labelled_container(hosts, "wait")
        _slow_removal_elsewhere(monkeypatch, {second}, after=1.5)
        t0 = time.monotonic()
        assert hosts.close(wait=30.0) == 0
        assert labelled_containers(client, [label]) == []                            # with it: gone on return
        assert 1.4 < time.monotonic() - t0 < 25
    finally:
        monkeypatch.undo()
        _remove_now(client, [c["Id"] for c in labelled_containers(client, [label])])


def test_hosts_close_gives_up_after_its_wait_and_names_what_is_left(monkeypatch, caplog):
    require("docker")
    hosts = DockerHosts([None]).ready()
    client, label = docker_client(None), f"{POOL_LABEL}={hosts.id}"
    try:
        stuck = _labelled_container(hosts, "stuck")
        _slow_removal_elsewhere(monkeypatch, {stuck}, after=None)
        t0 = time.monotonic()
        with caplog.at_level("WARNING", logger="forage.sandboxes.hosts"):
            hosts.close(wait=1.0)
        assert 0.9 < time.monotonic() - t0 < 10                                      # bounded
        assert stuck[:12] in caplog.text and "still listed" in caplog.text
    finally:
        monkeypatch.undo()
        _remove_now(client, [c["Id"] for c in labelled_containers(client, [label])])


def test_pool_close_returns_with_no_container_left(monkeypatch):
    """Release (a recycle starts: remove, then a new container) and close at once, while the removal of another
    container of the pool runs elsewhere (a cancelled start's): when close() returns, nothing of the pool is left."""
    require("docker")

    async def go() -> None:
        pool = SandboxPool("docker", size=1, max_size=2, config=SandboxConfig(timeout=20))
        try:
            await pool.start()
            sb = await pool.acquire()
            assert (await sb.run("print(1 + 1)")).stdout.strip() == "2"
            extra = _labelled_container(pool.hosts, "late")
            _slow_removal_elsewhere(monkeypatch, {extra}, after=1.5)
            await pool.release(sb)
            await pool.close()
            assert _pool_containers(None, pool) == []
        finally:
            monkeypatch.undo()
            _remove_now(docker_client(None), [c["Id"] for c in _pool_containers(None, pool)])

    asyncio.run(go())


def _remove_now(client, ids: list[str]) -> None:
    """Force-remove ``ids`` (a test's leftovers; one a slow removal took meanwhile is no error)."""
    for cid in ids:
        try:
            client.api.remove_container(cid, force=True)
        except Exception:  # noqa: BLE001
            pass


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_placement_by_free_slots_with_the_same_limits_on_both_daemons(dockerd2):
    client2 = docker_client(dockerd2.url)
    assert client2.images.list() == []  # a new daemon: the pool must put the image there
    config = SandboxConfig(timeout=10, memory_mb=256, pids=48, cpus=0.5)

    async def go() -> None:
        pool = SandboxPool("docker", size=0, max_size=8, config=config, hosts=[None, dockerd2.url], slots=2)
        try:
            assert pool.hosts.image in {t for i in client2.images.list() for t in i.tags}  # put there by the pool
            sbs = [await pool.acquire() for _ in range(3)]  # least loaded first: 1, 2, 1
            assert [len(_pool_containers(None, pool)), len(_pool_containers(dockerd2.url, pool))] == [2, 1]
            sbs.append(await pool.acquire())
            assert [len(_pool_containers(None, pool)), len(_pool_containers(dockerd2.url, pool))] == [2, 2]
            waiting = asyncio.ensure_future(pool.acquire())  # 2 + 2 slots are taken: it waits for a release
            await asyncio.sleep(1.5)
            assert not waiting.done()
            on2 = next(sb for sb in sbs if sb.host.url == dockerd2.url)
            await pool.release(on2)
            got = await asyncio.wait_for(waiting, 60)
            assert got.host.url == dockerd2.url
            sbs.remove(on2)
            sbs.append(got)

            # The same container settings on both daemons, read back from each daemon.
            def settings(url, sb):
                c = labelled_containers(docker_client(url), [f"forage.sandbox.id={sb.id}"])[0]
                hc = docker_client(url).api.inspect_container(c["Id"])["HostConfig"]
                keys = ("Memory", "MemorySwap", "PidsLimit", "NanoCpus", "ReadonlyRootfs", "NetworkMode", "CapDrop",
                        "IpcMode", "ShmSize", "Ulimits", "Tmpfs")
                return {k: hc[k] for k in keys}, sorted(hc["SecurityOpt"]), c["Labels"]

            on1 = next(sb for sb in sbs if sb.host.url is None)
            on2 = next(sb for sb in sbs if sb.host.url == dockerd2.url)
            (s1, sec1, lab1), (s2, sec2, lab2) = settings(None, on1), settings(dockerd2.url, on2)
            assert s1 == s2 and sec1 == sec2
            assert s2["Memory"] == 256 << 20 and s2["PidsLimit"] == 48 and s2["NanoCpus"] == 5 * 10 ** 8
            assert s2["ReadonlyRootfs"] and s2["NetworkMode"] == "none" and s2["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in sec2 and any(o.startswith("seccomp=") and "defaultAction" in o for o in sec2)
            for lab in (lab1, lab2):
                assert lab[LABEL] == "1" and lab[POOL_LABEL] == pool.hosts.id and lab["forage.owner.machine"]
            # ... and as the kernel in the second daemon's container sees them.
            r = await on2.run("import os\nst = dict(l.split(':\\t') for l in open('/proc/self/status').read()"
                              ".splitlines() if ':\\t' in l)\n"
                              "print(os.getuid(), st['Seccomp'], st['NoNewPrivs'], int(st['CapEff'], 16),"
                              " sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))")
            assert r.stdout.strip() == "1000 2 1 0 ['lo']", r
            for sb in sbs:
                await pool.release(sb)
        finally:
            await pool.close()
        assert _pool_containers(None, pool) == [] and _pool_containers(dockerd2.url, pool) == []

    asyncio.run(go())


def test_a_missing_custom_image_on_the_second_host_is_a_clear_error(dockerd2):
    with pytest.raises(SandboxUnavailable, match=f"forage-no-such-image:1.*missing on {dockerd2.url}.*docker save"):
        SandboxPool("docker", size=0, hosts=[dockerd2.url], config=SandboxConfig(image="forage-no-such-image:1"))


def _call(base, code: str) -> str:
    return base.format_call("python", code=code)


@pytest.mark.slow
def test_a_host_killed_mid_episode_is_an_error_observation_and_the_episode_goes_on_elsewhere(dockerd2):
    pool = SandboxPool("docker", size=0, max_size=4, config=SandboxConfig(timeout=20), hosts=[dockerd2.url, None],
                       slots=2)
    env = gym.make("forage/HumanEval-v0", sandbox=pool)
    base = env.unwrapped
    try:
        env.reset(seed=0, options={"task_id": "HumanEval/2"})
        sb = base.episode.state["sandbox"]
        assert sb.host.url == dockerd2.url  # both empty: the first listed
        obs, *_ = env.step(_call(base, "x = 41\nprint('set')"))
        assert "set" in obs

        out: dict = {}
        t = threading.Thread(target=lambda: out.update(step=env.step(_call(base, "import time\ntime.sleep(8)\nx"))))
        t.start()
        time.sleep(2.0)  # the call is running in the second daemon's container...
        dockerd2.kill()  # ...when its daemon dies
        t.join(60)
        obs, reward, term, trunc, info = out["step"]
        assert not term and "stopped answering" in obs and dockerd2.url in obs, obs
        assert pool.hosts.hosts[0].down and not pool.hosts.hosts[1].down

        obs, *_ = env.step(_call(base, "print(6 * 7)"))  # retried on the daemon that answers
        assert "\n42\n" in obs, obs
        assert sb.host.url is None and len(_pool_containers(None, pool)) == 1
        full = base.episode.task.prompt + base.episode.task.answer
        _, r, term, _, info = env.step(base.format_call("submit", code=full))  # grading: a fresh session
        assert term and r == 1.0, info

        env.reset(options={"task_id": "HumanEval/2"})  # the next episode
        obs, *_ = env.step(_call(base, "print('next', 1 + 1)"))
        assert "next 2" in obs and base.episode.state["sandbox"].host.url is None
    finally:
        env.close()
        asyncio.run(pool.close())
    assert _pool_containers(None, pool) == []  # close() waited for the daemon's removals
    # The dead daemon's container outlived it (its shim runs on); a restart stops it and the sweep removes it.
    dockerd2.start()
    left = labelled_containers(docker_client(dockerd2.url), [f"{POOL_LABEL}={pool.hosts.id}"])
    assert len(left) == 1 and left[0]["State"] != "running", left
    assert pool.hosts.close() == 1
    assert labelled_containers(docker_client(dockerd2.url), [f"{POOL_LABEL}={pool.hosts.id}"]) == []


CRASHER = textwrap.dedent("""
    import asyncio, sys
    from forage.sandboxes.code import SandboxPool
    async def main():
        pool = SandboxPool("docker", size=2, max_size=2, hosts=[sys.argv[1]])
        await pool.start()
        print("READY", flush=True)
        await asyncio.sleep(300)
    asyncio.run(main())
""")

STARTER = textwrap.dedent("""
    import sys
    from forage.sandboxes.code import SandboxPool
    SandboxPool("docker", size=0, hosts=[None, sys.argv[1]])  # connecting sweeps each host once
""")


def test_a_killed_owners_containers_are_swept_on_every_host_at_the_next_start(dockerd2):
    if not dockerd2.running:
        dockerd2.start()
    client2 = docker_client(dockerd2.url)
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, dockerd2.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        owner = proc.pid
        os.kill(owner, signal.SIGKILL)  # no atexit, no close
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def mine():
        return [c for c in labelled_containers(client2, [LABEL])
                if c["Labels"].get("forage.owner", "").startswith(f"{owner}:")]

    assert len(mine()) == 2
    # A container of a live owner on another machine sharing this daemon: not ours to judge.
    other = client2.containers.create(next(t for i in client2.images.list() for t in i.tags if "forage-sandbox" in t),
                                      ["true"], labels={LABEL: "1", "forage.owner": "1:1",
                                                        "forage.owner.machine": "another-machine"})
    try:
        subprocess.run([sys.executable, "-c", STARTER, dockerd2.url], check=True, timeout=120)
        assert mine() == []
        assert other.id in [c["Id"] for c in labelled_containers(client2, [LABEL])]
        assert reap_containers(only_dead_owners=False, client=client2) >= 1  # `forage sandbox reap --all`
        assert labelled_containers(client2, [LABEL]) == []
    finally:
        try:
            other.remove(force=True)
        except Exception:  # noqa: BLE001
            pass


def test_a_sandbox_outside_a_pool_takes_a_host_url(dockerd2):
    if not dockerd2.running:
        dockerd2.start()
    from forage.sandboxes.code import make_sandbox

    async def go():
        async with make_sandbox("docker", host=dockerd2.url, timeout=10) as sb:
            assert (await sb.run("print(2 ** 10)")).stdout == "1024\n"
            assert len(labelled_containers(docker_client(dockerd2.url), [f"forage.sandbox.id={sb.id}"])) == 1
        assert labelled_containers(docker_client(dockerd2.url), [f"forage.sandbox.id={sb.id}"]) == []
        with pytest.raises(SandboxError):
            await sb.run("1")

    asyncio.run(go())


def test_an_ssh_host_through_the_docker_sdks_ssh_transport(dockerd2, tmp_path, monkeypatch):
    """``ssh://`` goes through the SDK's ssh client transport (``ssh HOST docker system dial-stdio``); with no
    sshd here, ``ssh`` is a stand-in that runs that same remote command locally against the second daemon."""
    try:
        import paramiko  # noqa: F401  (the docker SDK's ssh module imports it even when shelling out to ssh)
    except ImportError:
        print("skipping: paramiko is not installed (pip install forage-gym[ssh])")
        pytest.skip("paramiko is not installed (the ssh extra)")
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    if not dockerd2.running:
        dockerd2.start()
    shim = tmp_path / "ssh"
    shim.write_text("#!/bin/sh\n# stand-in for ssh: run the remote command (docker system dial-stdio) here\n"
                    'exec docker -H "$FORAGE_TEST_SSH_TARGET" system dial-stdio\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("FORAGE_TEST_SSH_TARGET", dockerd2.url)
    url = "ssh://forage@forage-test.invalid"

    async def go():
        pool = SandboxPool("docker", size=0, max_size=2, hosts=[url], config=SandboxConfig(timeout=10))
        try:
            async with pool.session() as sb:
                assert sb.host.url == url
                assert (await sb.run("x = 6")).ok
                r = await sb.run("import time\ntime.sleep(1.5)\nprint(x * 7, 'y' * 200000 == 'y' * 200000)")
                assert r.stdout == "42 True\n", r
                big = await sb.run("print('z' * 100000)")  # many frames through the bridge
                assert big.stdout.startswith("z" * 1000) and big.truncated
                # the daemon behind the ssh transport, asked over its own socket, has the container
                assert len(_pool_containers(dockerd2.url, pool)) == 1
        finally:
            await pool.close()
        assert _pool_containers(dockerd2.url, pool) == []

    asyncio.run(go())


def test_an_env_built_by_name_takes_its_hosts_from_the_environment(dockerd2, monkeypatch):
    if not dockerd2.running:
        dockerd2.start()
    monkeypatch.setenv("FORAGE_DOCKER_HOSTS", f"{dockerd2.url}=1")
    env = gym.make("forage/HumanEval-v0", sandbox="docker", sandbox_config={"timeout": 10})
    base = env.unwrapped
    try:
        env.reset(seed=0, options={"task_id": "HumanEval/2"})
        obs, *_ = env.step(_call(base, "print(3 * 3)"))
        assert "9" in obs and base.episode.state["sandbox"].host.url == dockerd2.url
        assert base.pool.hosts.hosts[0].slots == 1
    finally:
        env.close()
    assert labelled_containers(docker_client(dockerd2.url), [f"{POOL_LABEL}={base.pool.hosts.id}"]) == []


@pytest.mark.slow
def test_a_pool_whose_only_host_died_fails_clearly_and_takes_it_back_when_it_answers(dockerd2, monkeypatch):
    import forage.sandboxes.code.hosts as hosts_mod

    if not dockerd2.running:
        dockerd2.start()

    async def go():
        pool = SandboxPool("docker", size=0, max_size=2, hosts=[dockerd2.url], config=SandboxConfig(timeout=10))
        try:
            sb = await pool.acquire()
            assert (await sb.run("x = 1")).ok
            old = labelled_containers(docker_client(dockerd2.url), [f"{POOL_LABEL}={pool.hosts.id}"])
            dockerd2.kill()
            r = await sb.run("print(x)")
            assert r.status == "crashed" and "stopped answering" in r.stderr, r
            await pool.release(sb)
            with pytest.raises(SandboxUnavailable, match="no docker host"):
                await pool.acquire()
            dockerd2.start()  # the host comes back (its old container stopped by the restart)
            monkeypatch.setattr(hosts_mod, "RETRY_DOWN_AFTER", 0.0)
            async with pool.session() as sb2:
                assert (await sb2.run("print(2 + 2)")).stdout == "4\n"
                now = labelled_containers(docker_client(dockerd2.url), [f"{POOL_LABEL}={pool.hosts.id}"])
                assert [c["Id"] for c in now] != [c["Id"] for c in old] and len(now) == 1  # the stale one swept
        finally:
            await pool.close()
        assert labelled_containers(docker_client(dockerd2.url), [f"{POOL_LABEL}={pool.hosts.id}"]) == []

    asyncio.run(go())
