"""RemoteEnv against a real `forage serve env` subprocess on 127.0.0.1, over both transports (WebSocket, HTTP)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import gymnasium as gym
import httpx
import msgpack
import pytest
from websockets.sync.client import connect as ws_connect

import forage  # noqa: F401
from forage.envs import RemoteEnv, RemoteEnvError, UnicodeText
from forage.envs.remote import SessionExpired
from forage.envs.server import MAX_BATCH

from _remote_helpers import EnvServerProcess, env_server, remote_fixtures

ENV_ID = "forage/LookupQA-v0"
TRANSPORTS = ["ws", "http"]


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class RawWS:
    """The wire protocol by hand: frames of requests out, frames of replies back."""

    def __init__(self, url: str, binary: bool = False) -> None:
        self.ws = ws_connect(url.replace("http://", "ws://") + "/ws", compression=None, proxy=None)
        self.binary = binary

    def send(self, payload) -> None:
        self.ws.send(msgpack.packb(payload) if self.binary else json.dumps(payload))

    def send_raw(self, frame) -> None:
        self.ws.send(frame)

    def recv(self, n: int = 1) -> list[dict]:
        replies: list[dict] = []
        while len(replies) < n:
            frame = self.ws.recv(timeout=30)
            assert isinstance(frame, bytes) == self.binary      # replies come in the client's kind of frame
            replies += msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
        return replies

    def close(self) -> None:
        self.ws.close()


server, local = remote_fixtures(ENV_ID, "--max-sessions", "200")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_remote_matches_in_process(server, local, transport):
    env = RemoteEnv(server.url, ENV_ID, transport=transport)
    try:
        assert isinstance(env.observation_space, UnicodeText) and isinstance(env.action_space, UnicodeText)
        for seed in (0, 7):
            obs, info = env.reset(seed=seed)
            lobs, linfo = local.reset(seed=seed)
            assert obs == lobs and info["task_id"] == linfo["task_id"]
            assert info["tools"] == linfo["tools"]            # info passes through as JSON
            for action in local.oracle_actions(local.episode.task):
                got, want = env.step(action), local.step(action)
                assert got[0] == want[0] and got[1:4] == want[1:4]
                assert got[4]["rewards"] == want[4]["rewards"]
            assert got[2] and got[1] > 0
        # a malformed action is an observation, not an error
        env.reset(seed=1)
        obs, reward, terminated, truncated, info = env.step("<tool_call>{not json</tool_call>")
        assert info["tool_errors"] and info["rewards"]["format"] == -1.0 and not terminated
        # options travel too
        obs, info = env.reset(options={"task_id": local.tasks[3].id})
        assert info["task_id"] == local.tasks[3].id
    finally:
        env.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_errors_are_clear(server, transport):
    env = RemoteEnv(server.url, transport=transport)
    with pytest.raises(RemoteEnvError, match="reset"):
        env.step("hi")
    with pytest.raises(RemoteEnvError, match="serves"):
        RemoteEnv(server.url, "forage/HumanEval-v0", transport=transport).reset()
    with pytest.raises(RemoteEnvError, match="kwargs"):
        RemoteEnv(server.url, ENV_ID, transport=transport, hops=1).reset()
    r = httpx.post(server.url + "/sessions/nope/step", json={"action": "x"})
    assert r.status_code == 404 and r.json()["type"] == "no_session"
    r = httpx.post(server.url + "/sessions", content=b"{bad json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    env.reset(seed=0)
    sid = env.session_id
    r = httpx.post(f"{server.url}/sessions/{sid}/reset", json={"seed": "zero"})
    assert r.status_code == 400
    env.close()
    assert httpx.delete(f"{server.url}/sessions/{sid}").status_code == 404
    assert httpx.get(server.url + "/health").json()["sessions"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_100_concurrent_sessions(server, local, transport):
    n = 100
    before = health(server.url)
    envs = [RemoteEnv(server.url, ENV_ID, transport=transport) for _ in range(n)]
    expected = {}
    for seed in range(n):
        local.reset(seed=seed)
        expected[seed] = (local.episode.task.id, local.oracle_actions(local.episode.task))

    async def episode(seed: int) -> tuple[str, float]:
        env = envs[seed]
        obs, info = await env.areset(seed=seed)
        total = 0.0
        for action in expected[seed][1]:
            obs, reward, terminated, truncated, info = await env.astep(action)
            total += reward
        assert terminated
        return info["task_id"], total

    try:
        results = await asyncio.gather(*(episode(s) for s in range(n)))
        assert [r[0] for r in results] == [expected[s][0] for s in range(n)]
        assert all(r[1] > 0 for r in results)
        during = health(server.url)
        assert during["sessions"] == before["sessions"] + n
        assert len({e.session_id for e in envs}) == n
        if transport == "ws":
            # one connection carried all 100 sessions, and requests shared frames (pipelining)
            assert during["ws_links"] == before["ws_links"] + 1
            requests = during["ws_requests"] - before["ws_requests"]
            frames = during["ws_frames"] - before["ws_frames"]
            assert requests >= n * 3 and requests / frames > 4, (requests, frames)
    finally:
        await asyncio.gather(*(e.aclose() for e in envs))
    after = health(server.url)
    assert after["sessions"] == before["sessions"]
    assert wait_for(lambda: health(server.url)["ws_links"] == before["ws_links"])  # the last aclose closed it


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_killed_server_gives_clear_error(transport):
    server = EnvServerProcess(ENV_ID)
    try:
        server.wait_ready()
        env = RemoteEnv(server.url, timeout=10.0, connect_timeout=2.0, transport=transport)
        env.reset(seed=0)
        server.kill()
        with pytest.raises(RemoteEnvError, match="unreachable"):
            env.step('<tool_call>{"name": "answer", "arguments": {"answer": "x"}}</tool_call>')
        with pytest.raises(RemoteEnvError, match="unreachable"):
            env.reset(seed=1)

        async def astep():
            return await env.astep("hello")
        with pytest.raises(RemoteEnvError, match="unreachable"):
            asyncio.run(astep())
        env.close()  # closing against a dead server is not an error
    finally:
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_idle_sessions_are_reaped(transport):
    with env_server(ENV_ID, "--session-timeout", "0.5") as s:
        envs = [RemoteEnv(s.url, transport=transport) for _ in range(3)]
        for i, e in enumerate(envs):
            e.reset(seed=i)                     # opens a session each, then never closes it
        assert all(e.session_id for e in envs)
        assert httpx.get(s.url + "/health").json()["sessions_created"] == 3
        deadline = time.monotonic() + 20
        while httpx.get(s.url + "/health").json()["sessions"] > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        health = httpx.get(s.url + "/health").json()
        assert health["sessions"] == 0 and health["sessions_reaped"] == 3
        with pytest.raises(SessionExpired):
            envs[0].step("hi")
        obs, info = envs[0].reset(seed=0)        # a new session after the old one was reaped
        assert info["task_id"] and envs[0].session_id
        for e in envs:
            e.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_max_sessions_refuses_with_message(transport):
    with env_server(ENV_ID, "--max-sessions", "1") as s:
        a, b = RemoteEnv(s.url, transport=transport), RemoteEnv(s.url, transport=transport)
        a.reset(seed=0)
        with pytest.raises(RemoteEnvError, match="maximum of 1 sessions"):
            b.reset(seed=0)
        a.close()
        b.reset(seed=0)
        b.close()


def test_cli_rejects_unknown_env_and_bad_kwarg():
    base = [sys.executable, "-c", "import sys; from forage.cli import main; sys.argv[0] = 'forage'; main()", "serve", "env"]
    r = subprocess.run(base + ["nope/Nothing-v0", "--port", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown env id" in r.stderr
    r = subprocess.run(base + [ENV_ID, "--kwarg", "novalue"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "K=V" in r.stderr


def test_server_kwargs_reach_the_env():
    with env_server(ENV_ID, "--kwarg", "hops=1") as s:
        env = RemoteEnv(s.url)
        try:
            obs, info = env.reset(seed=0)
            local = gym.make(ENV_ID, hops=1).unwrapped
            assert local.reset(seed=0)[1]["task_id"] == info["task_id"]
            local.close()
        finally:
            env.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_plain_gymnasium_env_runs_in_threads(transport):
    """A non-Forage env (CartPole: sync API, array observations) is served through worker threads."""
    with env_server("CartPole-v1") as s:
        env = RemoteEnv(s.url, "CartPole-v1", transport=transport)
        local = gym.make("CartPole-v1").unwrapped
        try:
            obs, _ = env.reset(seed=3)
            lobs, _ = local.reset(seed=3)
            assert obs == pytest.approx(lobs.tolist())
            for action in (0, 1, 1, 0):
                got, want = env.step(action), local.step(action)
                assert got[0] == pytest.approx(want[0].tolist()) and got[1] == want[1] and got[2] == want[2]
            with pytest.raises(RemoteEnvError, match="HTTP 500"):
                env.step(7)                      # CartPole rejects it; the session survives
            assert env.step(0)[0]
        finally:
            env.close()
            local.close()


# -- the WebSocket protocol itself ---------------------------------------------------------------

@pytest.mark.parametrize("binary", [False, True])
def test_ws_bad_input_gets_clear_errors_and_the_link_survives(server, binary):
    before = health(server.url)
    raw = RawWS(server.url, binary)
    try:
        raw.send_raw(b"\xc1\xff garbage" if binary else "{not json")
        (r,) = raw.recv()
        assert r["id"] is None and r["type"] == "bad_json" and r["status"] == 400
        raw.send([{"id": 1, "op": "fly"}, {"id": 2, "op": "step", "action": "x"}, "nope",
                  {"id": 3, "op": "step", "session_id": "gone", "action": "x"},
                  {"id": 4, "op": "reset", "session_id": "gone", "seed": "zero"}])
        by_id = {r["id"]: r for r in raw.recv(5)}
        assert by_id[1]["type"] == "bad_op" and by_id[2]["type"] == "no_session_id"
        assert by_id[None]["type"] == "bad_request"
        assert by_id[3]["type"] == "no_session" and by_id[3]["status"] == 404
        assert by_id[4]["type"] == "bad_seed" and by_id[4]["status"] == 400
        raw.send([{"id": i, "op": "close", "session_id": "x"} for i in range(MAX_BATCH + 1)])
        (r,) = raw.recv()
        assert r["type"] == "too_large" and r["status"] == 413
        raw.send({"id": "c", "op": "create"})          # still serving: a single request, not a list
        (r,) = raw.recv()
        assert r["id"] == "c" and r["result"]["session_id"]
        sid = r["result"]["session_id"]
        raw.send({"id": "s", "op": "step", "session_id": sid, "action": "x"})
        (r,) = raw.recv()
        assert r["status"] == 409 and r["type"] == "reset_needed"
    finally:
        raw.close()
    # the session it opened closed with it
    assert wait_for(lambda: (health(server.url)["sessions"], health(server.url)["ws_links"])
                    == (before["sessions"], before["ws_links"]))


def test_ws_repeated_reset_info_is_sent_once(server, local):
    raw = RawWS(server.url, binary=True)
    try:
        raw.send({"id": 0, "op": "create"})
        sid = raw.recv()[0]["result"]["session_id"]
        raw.send({"id": 1, "op": "reset", "session_id": sid, "seed": 0})
        first = raw.recv()[0]["result"]
        raw.send({"id": 2, "op": "reset", "session_id": sid, "seed": 1})
        second = raw.recv()[0]["result"]
        want = local.reset(seed=1)[1]
        assert "same" not in first and first["info"]["tools"] == want["tools"]
        assert {"tools", "system_prompt"} <= set(second["same"])
        assert "tools" not in second["info"] and second["info"]["task_id"] == want["task_id"]
    finally:
        raw.close()
    # RemoteEnv puts them back
    env = RemoteEnv(server.url, ENV_ID)
    try:
        for seed in (0, 1, 2):
            info = env.reset(seed=seed)[1]
            want = local.reset(seed=seed)[1]
            assert info == json.loads(json.dumps(want))
    finally:
        env.close()


def test_ws_a_big_frame_is_answered_in_two_halves(server, local):
    """A frame of 64 inline steps: the first half's answers go out in a frame of their own before the rest are
    done (the client steps those sessions on meanwhile); every request answered once, each as in-process."""
    raw = RawWS(server.url, binary=True)
    sids = []
    try:
        raw.send([{"id": i, "op": "create"} for i in range(64)])
        sids = [r["result"]["session_id"] for r in sorted(raw.recv(64), key=lambda r: r["id"])]
        raw.send([{"id": i, "op": "reset", "session_id": sid, "seed": i} for i, sid in enumerate(sids)])
        raw.recv(64)
        actions = {}
        for i in range(64):
            obs, _ = local.reset(seed=i)
            actions[i] = local.oracle_actions(local.episode.task)[0]
        raw.send([{"id": i, "op": "step", "session_id": sid, "action": actions[i]} for i, sid in enumerate(sids)])
        frames = []
        while sum(len(f) for f in frames) < 64:
            frames.append(msgpack.unpackb(raw.ws.recv(timeout=30)))
        assert [len(f) for f in frames] == [32, 32]
        got = {r["id"]: r["result"] for f in frames for r in f}
        assert sorted(got) == list(range(64))
        for i in range(64):
            local.reset(seed=i)
            want = local.step(actions[i])
            assert got[i]["observation"] == want[0] and got[i]["reward"] == want[1], i
        raw.send([{"id": 100 + i, "op": "close", "session_id": sid} for i, sid in enumerate(sids)])
        raw.recv(64)
    finally:
        raw.close()


def test_ws_pipelined_ops_on_one_session_keep_their_order():
    """reset, step, step in one frame on a thread-run env: answered in order, like the same calls in-process."""
    with env_server("CartPole-v1") as s:
        raw = RawWS(s.url)
        local = gym.make("CartPole-v1").unwrapped
        try:
            raw.send({"id": 0, "op": "create"})
            sid = raw.recv()[0]["result"]["session_id"]
            raw.send([{"id": 1, "op": "reset", "session_id": sid, "seed": 5}] +
                     [{"id": 2 + i, "op": "step", "session_id": sid, "action": a} for i, a in enumerate((1, 0, 1))])
            by_id = {r["id"]: r["result"] for r in raw.recv(4)}
            assert by_id[1]["observation"] == pytest.approx(local.reset(seed=5)[0].tolist())
            for i, a in enumerate((1, 0, 1)):
                assert by_id[2 + i]["observation"] == pytest.approx(local.step(a)[0].tolist())
        finally:
            raw.close()
            local.close()


@pytest.mark.timeout(60)
def test_ws_sessions_of_a_vanished_client_are_closed():
    with env_server(ENV_ID) as s:
        async def open_and_vanish():
            envs = [RemoteEnv(s.url) for _ in range(3)]
            for i, e in enumerate(envs):
                await e.areset(seed=i)
            assert health(s.url)["sessions"] == 3
            # no aclose: the loop ends, the connection drops

        asyncio.run(open_and_vanish())
        assert wait_for(lambda: health(s.url)["sessions"] == 0 and health(s.url)["ws_links"] == 0)
        assert health(s.url)["sessions_reaped"] == 0          # closed with the link, not by the idle reaper


@pytest.mark.timeout(90)
def test_ws_sessions_of_a_killed_client_process_are_closed():
    with env_server(ENV_ID) as s:
        code = ("import asyncio, sys, time\n"
                "from forage.envs import RemoteEnv\n"
                "async def main():\n"
                f"    envs = [RemoteEnv({s.url!r}) for _ in range(4)]\n"
                "    for i, e in enumerate(envs):\n"
                "        await e.areset(seed=i)\n"
                "    print('ready', flush=True)\n"
                "    await asyncio.sleep(600)\n"
                "asyncio.run(main())\n")
        client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert client.stdout.readline().strip() == "ready"
            assert health(s.url)["sessions"] == 4 and health(s.url)["ws_links"] == 1
        finally:
            client.kill()
            client.wait(timeout=10)
            client.stdout.close()
        assert wait_for(lambda: health(s.url)["sessions"] == 0 and health(s.url)["ws_links"] == 0)


@pytest.mark.timeout(60)
def test_ws_server_that_never_answers_times_out_clearly():
    """A WebSocket peer that accepts and reads but never replies: both clients give up after ``timeout``."""
    import threading

    from websockets.sync.server import serve

    def handler(conn):
        for _ in conn:          # read and drop everything
            pass

    with serve(handler, "127.0.0.1", 0, compression=None) as srv:
        port = srv.socket.getsockname()[1]
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        env = RemoteEnv(url, timeout=0.5, connect_timeout=2.0)
        with pytest.raises(RemoteEnvError, match="did not answer create in time"):
            env.reset(seed=0)
        env.close()

        async def areset():
            e = RemoteEnv(url, timeout=0.5, connect_timeout=2.0)
            try:
                await e.areset(seed=0)
            finally:
                await e.aclose()
        with pytest.raises(RemoteEnvError, match="did not answer create in time"):
            asyncio.run(areset())           # (a hang instead would trip the test's timeout)
        srv.shutdown()
        thread.join(timeout=10)
