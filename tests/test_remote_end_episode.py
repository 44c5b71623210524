"""RemoteEnv's end_episode op over both transports against real servers on 127.0.0.1.

The oracle is the in-process env: ending a remote episode gives the reward and info that
``ToolEnv.aend_episode`` gives for the same task and actions, and the server's env is scored and
torn down then (not at the next reset), also when the rollout engine ends the episode.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import httpx
import pytest

import forage  # noqa: F401
from forage.agents import ChatTokenizer, RolloutConfig, RolloutEngine, ScriptedPolicy
from forage.asgi_thread import ThreadedASGIServer
from forage.envs import RemoteEnv
from forage.envs.remote import SessionExpired
from forage.envs.server import EnvServerConfig, create_app

from _agents_helpers import tokenizer
from _recording_env import RecordingEnv
from _remote_helpers import remote_fixtures
from test_remote_env import RawWS, health

ENV_ID = "forage/LookupQA-v0"
TRANSPORTS = ["ws", "http"]


def as_json(x: Any) -> Any:
    return json.loads(json.dumps(x))


server, local = remote_fixtures(ENV_ID)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_end_episode_matches_in_process(server, local, transport, mode):
    env = RemoteEnv(server.url, ENV_ID, transport=transport)

    async def end(reason: str) -> tuple[float, dict[str, Any]]:
        return env.end_episode(reason) if mode == "sync" else await env.aend_episode(reason)

    try:
        assert await end("max_turns") == (0.0, {"rewards": {}, "stop_reason": None, "answer": None})  # never reset
        for seed, n_steps in ((0, 1), (5, 2)):
            obs, info = env.reset(seed=seed) if mode == "sync" else await env.areset(seed=seed)
            lobs, linfo = local.reset(seed=seed)
            assert obs == lobs
            lookups = local.oracle_actions(local.episode.task)[:-1]   # all but the answer
            n_steps = min(n_steps, len(lookups))
            assert n_steps >= 1
            for action in lookups[:n_steps]:
                got = env.step(action) if mode == "sync" else await env.astep(action)
                assert got[1:4] == local.step(action)[1:4]
            want = local.end_episode("context_length")
            got = await end("context_length")
            assert got == (want[0], as_json(want[1]))
            assert got[1]["stop_reason"] == "context_length" and got[1]["num_tool_calls"] == n_steps
            assert got[1]["rewards"] == {"correct": 0.0} and got[1]["task_id"] == linfo["task_id"]
            # the server's episode is over now: a second end and a step both see that, as in-process
            again = local.end_episode("max_turns")
            assert await end("max_turns") == (again[0], as_json(again[1])) and again[1]["rewards"] == {}
            step = env.step("hi") if mode == "sync" else await env.astep("hi")
            lstep = local.step("hi")
            assert step[1:4] == lstep[1:4] and step[4]["tool_errors"] == ["episode is over"]
        # the session stays open for the next episode, and closes as usual
        sid = env.session_id
        env.reset(seed=1)
        assert env.session_id == sid
    finally:
        env.close() if mode == "sync" else await env.aclose()
    assert health(server.url)["sessions"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_end_episode_on_an_unknown_session_is_a_clear_error(server, transport):
    env = RemoteEnv(server.url, ENV_ID, transport=transport)
    try:
        env.reset(seed=0)
        sid = env.session_id
        assert httpx.delete(f"{server.url}/sessions/{sid}").status_code == 200   # closed behind its back
        with pytest.raises(SessionExpired, match="no session"):
            env.end_episode()
        assert env.session_id is None
        assert env.end_episode() == (0.0, {"rewards": {}, "stop_reason": None, "answer": None})
    finally:
        env.close()
    r = httpx.post(server.url + "/sessions/nope/end_episode", json={"reason": "max_turns"})
    assert r.status_code == 404 and r.json()["type"] == "no_session"
    env = RemoteEnv(server.url, ENV_ID, transport=transport)
    try:
        env.reset(seed=0)
        r = httpx.post(f"{server.url}/sessions/{env.session_id}/end_episode", json={"reason": 7})
        assert r.status_code == 400 and r.json()["type"] == "bad_reason"
        assert env.end_episode("max_turns")[1]["stop_reason"] == "max_turns"   # still serving
    finally:
        env.close()


def test_ws_end_episode_message(server):
    raw = RawWS(server.url, binary=True)
    try:
        raw.send([{"id": 1, "op": "end_episode", "session_id": "gone"}, {"id": 2, "op": "end_episode"},
                  {"id": 3, "op": "create"}])
        by_id = {r["id"]: r for r in raw.recv(3)}
        assert by_id[1]["type"] == "no_session" and by_id[1]["status"] == 404
        assert by_id[2]["type"] == "no_session_id"
        sid = by_id[3]["result"]["session_id"]
        # reset, end (default reason) and a bad reason in one frame: answered in order
        raw.send([{"id": 4, "op": "reset", "session_id": sid, "seed": 0},
                  {"id": 5, "op": "end_episode", "session_id": sid},
                  {"id": 6, "op": "end_episode", "session_id": sid, "reason": ["x"]}])
        by_id = {r["id"]: r for r in raw.recv(3)}
        assert by_id[5]["result"]["reward"] == 0.0 and by_id[5]["result"]["info"]["stop_reason"] == "truncated"
        assert by_id[6]["type"] == "bad_reason" and by_id[6]["status"] == 400
    finally:
        raw.close()


# -- the rollout engine ends a remote episode: the server's env is scored and torn down at once -----

RECORDING_ID = "ForageTest/RemoteRecording-v0"


class RemoteRecordingEnv(RecordingEnv):
    """The recording env with a reward of 0.25 a tool call, so the remote and in-process rewards can differ."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(effort_per_call=0.25, **kwargs)


@pytest.fixture(scope="module")
def recording_server():
    if RECORDING_ID not in gym.registry:
        gym.register(RECORDING_ID, entry_point=RemoteRecordingEnv)
    app = create_app(EnvServerConfig(RECORDING_ID, kwargs={"max_turns": 8}))
    with ThreadedASGIServer(app, lifespan="on", thread_name="test-remote-end") as srv:
        yield srv, app.state.manager


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_engine_turn_limit_ends_the_remote_episode_at_once(recording_server, transport):
    srv, manager = recording_server
    chat = ChatTokenizer(tokenizer())
    policy = ScriptedPolicy(chat, lambda prompt, turn: '<tool_call>{"name": "think", "arguments": {"note": "hm"}}</tool_call>')
    engine = RolloutEngine(policy, chat, RolloutConfig(max_turns=2))
    remotes: list[RemoteEnv] = []
    seen: list[list[str]] = []

    def make() -> RemoteEnv:
        remotes.append(RemoteEnv(srv.url, RECORDING_ID, transport=transport))
        return remotes[-1]

    def at_done(_t: Any) -> None:   # the server env's log when the engine reports the episode done
        (session,) = [manager.sessions[r.session_id] for r in remotes]
        seen.append(list(session.env.log))

    (t,) = engine.run_sync(make, [0], on_done=at_done)
    (want,) = engine.run_sync(lambda: RemoteRecordingEnv(max_turns=8), [0])
    assert t.error is None, t.error
    assert seen == [["score:max_turns", "teardown"]]
    assert t.stop_reason == want.stop_reason == "max_turns" and t.truncated
    assert t.reward_components == want.reward_components == {"format": 0.0, "correct": 0.0, "effort": 0.5}
    assert t.step_rewards == want.step_rewards and t.reward == want.reward == 0.5
    assert not manager.sessions   # the engine's pool closed the session
