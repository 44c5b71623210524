"""A Forage env through SkyRL-gym's own registry and contract (`skyrl_gym.make`, `init`, `step` output types)."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

skyrl_gym = pytest.importorskip("skyrl_gym", reason="skyrl-gym is not installed (pip install 'forage-gym[skyrl]')")
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput  # noqa: E402

import forage  # noqa: E402,F401
from forage.integrations.skyrl import register_skyrl_envs, skyrl_env  # noqa: E402

ENV = "forage/LookupQA-1hop-v0"


def _call(tool: str, **args) -> str:
    return "<tool_call>\n" + json.dumps({"name": tool, "arguments": args}) + "\n</tool_call>"


def _task(index: int):
    env = gym.make(ENV).unwrapped
    try:
        return env.tasks[index]
    finally:
        env.close()


def test_registered_env_follows_the_skyrl_contract():
    assert ENV in register_skyrl_envs()
    task = _task(4)
    actions = [_call("lookup", name=task.metadata["path"][0]), "no call at all", _call("answer", answer=task.answer)]
    native = gym.make(ENV)                       # oracle: the same text actions on the plain gym env
    native.reset(options={"task_id": task.id})
    want = [native.step(a) for a in actions]
    native.close()

    env = skyrl_gym.make(ENV, env_config={"env_kwargs": {}}, extras={"task_id": task.id, "reward_spec": {}})
    assert isinstance(env, BaseTextEnv)
    try:
        conversation, meta = env.init([{"role": "user", "content": "whatever the dataset had"}])
        assert [m["role"] for m in conversation] == ["system", "user"] and conversation[1]["content"] == task.prompt
        assert "<tools>" in conversation[0]["content"] and meta["task_id"] == task.id
        chat = list(conversation)
        for action, (obs, reward, terminated, truncated, info) in zip(actions, want):
            out = env.step(action)
            assert set(out) == set(BaseTextEnvStepOutput.__annotations__)
            assert out["reward"] == pytest.approx(reward) and out["done"] == (terminated or truncated)
            if out["done"]:
                assert out["observations"] == [] and out["metadata"]["final_observation"] == obs
            else:
                assert out["observations"] == [{"role": "user", "content": obs}]
            assert out["metadata"]["rewards"] == info["rewards"]
            chat += [{"role": "assistant", "content": action}, *out["observations"]]   # SkyRL's generator loop
        assert "no tool call found" in chat[5]["content"]                 # the env's own error, as the model sees it
        assert env.get_metrics() == {"reward/format": -1.0, "reward/correct": 1.0, "num_tool_calls": 2, "turns": 3}
        metrics = BaseTextEnv.aggregate_metrics([env.get_metrics(), {"reward/format": 0.0, "reward/correct": 0.0,
                                                                      "num_tool_calls": 0, "turns": 1}])
        assert metrics["reward/correct"] == pytest.approx(0.5)
    finally:
        env.close()


def test_bad_use_gets_clear_errors():
    with pytest.raises(ValueError, match="env id"):
        skyrl_env("", env_config={})
    env = skyrl_env(ENV, extras={"seed": 3})
    try:
        with pytest.raises(RuntimeError, match="init"):
            env.step("anything")
        conversation, meta = env.init()
        again = skyrl_env(ENV, extras={"seed": 3})
        assert again.init()[1]["task_id"] == meta["task_id"]          # the seed picks the task
        again.close()
    finally:
        env.close()
    with pytest.raises(KeyError, match="unknown task_id"):
        skyrl_env(ENV, extras={"task_id": "no-such-task"}).init()


def test_close_mid_episode_releases_the_episode(monkeypatch):
    env = skyrl_env(ENV, extras={"seed": 0})
    torn: list[str] = []
    original = env.env.teardown_episode

    async def spy(ep):
        torn.append(ep.task.id)
        await original(ep)

    env.env.teardown_episode = spy
    env.init()
    env.step(_call("search", query="city"))
    env.close()
    assert len(torn) == 1
