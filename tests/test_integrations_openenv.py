"""OpenEnv both ways, with the real `openenv-core`: its EnvClient against our server, our Gym env over its servers."""

from __future__ import annotations

import json
import time

import gymnasium as gym
import pytest

pytest.importorskip("openenv", reason="openenv-core is not installed (pip install 'forage-gym[openenv]')")
from openenv.core.generic_client import GenericEnvClient  # noqa: E402

import forage  # noqa: E402,F401
from forage.asgi_thread import ThreadedASGIServer, free_port  # noqa: E402
from forage.integrations import session as session_module  # noqa: E402
from forage.integrations.openenv import OpenEnvGymEnv, create_openenv_app  # noqa: E402

ENV = "forage/LookupQA-1hop-v0"


@pytest.fixture(scope="module")
def server():
    srv = ThreadedASGIServer(create_openenv_app(ENV, max_concurrent_envs=8), port=0, lifespan="on",
                             thread_name="test-openenv").start()
    yield srv
    srv.stop()


def _task(index: int):
    env = gym.make(ENV).unwrapped
    try:
        return env.tasks[index]
    finally:
        env.close()


def _native(task_id: str, calls: list[tuple[str, dict]]) -> list[tuple[str, float, bool]]:
    """Oracle: the calls written by hand in Hermes format, stepped on a plain gym env."""
    env = gym.make(ENV)
    out = []
    try:
        env.reset(options={"task_id": task_id})
        for name, args in calls:
            obs, reward, terminated, truncated, _ = env.step(
                "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>")
            out.append((obs, reward, terminated or truncated))
    finally:
        env.close()
    return out


def _bare(native_obs: str) -> str:
    return native_obs.replace("<tool_response>\n", "").replace("\n</tool_response>", "")


def test_openenv_client_plays_an_episode(server):
    task = _task(5)
    calls = [("lookup", {"name": task.metadata["path"][0]}), ("lookup", {"nam": "x"}), ("answer", {"answer": task.answer})]
    want = _native(task.id, calls)
    with GenericEnvClient(base_url=server.url) as client:
        first = client.reset(task_id=task.id)
        assert first.observation["text"] == task.prompt and not first.done
        assert {t["function"]["name"] for t in first.observation["tools"]} == {"lookup", "search", "answer"}
        for (name, args), (obs, reward, done) in zip(calls, want):
            r = client.step({"tool": name, "arguments": args})
            assert r.observation["text"] == _bare(obs) and r.reward == pytest.approx(reward) and r.done == done
        assert r.observation["rewards"] == {"format": 0.0, "correct": 1.0}
        state = client.state()
        assert state["task_id"] == task.id and state["step_count"] == 3
        assert state["reward_total"] == pytest.approx(sum(x[1] for x in want))
        over = client.step({"tool": "lookup", "arguments": {"name": "x"}})
        assert over.observation["text"].startswith("Error: the episode is over")


def test_raw_messages_and_bad_actions(server):
    task = _task(6)
    with GenericEnvClient(base_url=server.url) as client:
        client.reset(task_id=task.id)
        text = "I will look it up. <tool_call>\n" + json.dumps({"name": "lookup", "arguments": {"name": "x"}})
        r = client.step({"message": text})                            # unclosed block: the env's own words
        assert "never closed" in r.observation["text"] and r.observation["tool_errors"]
        r = client.step({"tool": "lookup", "message": "both"})
        assert "either 'tool'" in r.observation["text"]
        with pytest.raises(RuntimeError, match="VALIDATION_ERROR|Invalid"):
            client.step({"tol": "lookup"})                             # OpenEnv's own action validation
        r = client.step({"tool": "answer", "arguments": {"answer": task.answer}})   # the session survived
        assert r.done and r.reward == pytest.approx(1.0)
        # the unclosed block cost the format penalty (-1 x 0.1); the refused actions never reached the env
        assert client.state()["reward_total"] == pytest.approx(1.0 - 0.1)
        with pytest.raises(RuntimeError, match="unknown reset arguments"):
            client.reset(colour="blue")


def test_sessions_are_isolated_and_a_vanished_client_frees_its_env(server, monkeypatch):
    closed: list[int] = []
    original = session_module.EnvSession.close

    def spy(self):
        closed.append(id(self))
        original(self)

    monkeypatch.setattr(session_module.EnvSession, "close", spy)
    a_task, b_task = _task(0), _task(1)
    a, b = GenericEnvClient(base_url=server.url).connect(), GenericEnvClient(base_url=server.url).connect()
    try:
        a.reset(task_id=a_task.id)
        b.reset(task_id=b_task.id)
        ra = a.step({"tool": "answer", "arguments": {"answer": a_task.answer}})
        assert b.state()["task_id"] == b_task.id and b.state()["step_count"] == 0
        assert ra.reward == pytest.approx(1.0)
        b._ws.close()                      # gone mid-episode, without OpenEnv's close message
        deadline = time.monotonic() + 10
        while not closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(closed) == 1            # b's env was closed by the server; a's is still open
        assert a.state()["task_id"] == a_task.id
    finally:
        a.close()


def test_gym_env_over_our_openenv_server(server):
    task = _task(2)
    env = OpenEnvGymEnv(server.url)
    try:
        obs, info = env.reset(options={"task_id": task.id})
        assert obs == task.prompt and info["observation"]["task_id"] == task.id
        action = "<tool_call>\n" + json.dumps({"name": "answer", "arguments": {"answer": task.answer}}) + "\n</tool_call>"
        obs, reward, terminated, truncated, _ = env.step(action)
        assert (obs, reward, terminated, truncated) == ("Answer recorded.", pytest.approx(1.0), True, False)
        with pytest.raises(gym.error.ResetNeeded):
            env.step(action)
    finally:
        env.close()


def test_gym_env_over_a_plain_openenv_env():
    """An environment written against OpenEnv's own interfaces only, served by OpenEnv, played through Gymnasium."""
    from openenv.core.env_server.http_server import create_fastapi_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State

    class Say(Action):
        word: str

    class Heard(Observation):
        echo: str = ""
        count: int = 0

    class Parrot(Environment):
        """Repeats the word; done after 3 words; reward = the word's length."""

        def __init__(self):
            super().__init__()
            self.n = 0

        def reset(self, seed=None, episode_id=None, **kw):
            self.n = 0
            return Heard(echo="ready", done=False, reward=0.0)

        def step(self, action, timeout_s=None, **kw):
            self.n += 1
            return Heard(echo=action.word.upper(), count=self.n, done=self.n >= 3, reward=float(len(action.word)))

        @property
        def state(self):
            return State(step_count=self.n)

    with ThreadedASGIServer(create_fastapi_app(Parrot, Say, Heard), port=0, lifespan="on") as srv:
        env = OpenEnvGymEnv(srv.url, action_key="word", observation_key="echo")
        try:
            assert env.reset()[0] == "ready"
            steps = [env.step(w) for w in ("hi", "there", "you")]
            assert [s[0] for s in steps] == ["HI", "THERE", "YOU"] and [s[1] for s in steps] == [2.0, 5.0, 3.0]
            assert [s[2] for s in steps] == [False, False, True]
            obs, *_ = env.reset()
            assert env.step('{"word": "json"}')[0] == "JSON"            # a JSON object goes as is
        finally:
            env.close()


def test_stateless_http_endpoints_answer_clearly(server):
    import httpx

    r = httpx.post(server.url + "/reset", json={"seed": 0}, timeout=30)
    assert r.status_code == 200 and r.json()["observation"]["text"]
    r = httpx.post(server.url + "/step", json={"action": {"tool": "answer", "arguments": {"answer": "x"}}}, timeout=30)
    assert r.status_code == 200 and "no episode is running" in r.json()["observation"]["text"] and r.json()["done"]
    r = httpx.post(server.url + "/step", json={"action": {"tool": 3}}, timeout=30)
    assert r.status_code == 422


def test_cli_openenv_protocol_bad_env_is_a_clear_error():
    from typer.testing import CliRunner

    from forage.cli import app

    r = CliRunner().invoke(app, ["serve", "env", "forage/NoSuchEnv-v0", "--protocol", "openenv", "--port", str(free_port())])
    assert r.exit_code == 2 and "error" in r.output.lower()
    r = CliRunner().invoke(app, ["serve", "env", ENV, "--protocol", "carrier-pigeon"])
    assert r.exit_code == 2 and "--protocol" in r.output
