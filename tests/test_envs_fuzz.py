"""Property-based tests: random unicode, broken JSON and huge strings thrown at every registered env."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import pytest
from hypothesis import given
from hypothesis import strategies as st

import forage  # noqa: F401
from forage.envs import ToolEnv, forage_env_ids

ENV_IDS = forage_env_ids()
_ENVS: dict[str, gym.Env] = {}


def skip_if_unavailable(env_id: str) -> None:
    """Skip (with the reason printed) an env whose class says it cannot run here, e.g. MiniWoB without chromium."""
    entry = gym.spec(env_id).entry_point
    if isinstance(entry, str):
        import importlib

        mod, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(mod), attr)
    reason = entry.unavailable() if callable(getattr(entry, "unavailable", None)) else None
    if reason:
        print(f"skipping {env_id}: {reason}")
        pytest.skip(f"{env_id} cannot run here: {reason}")


def get_env(env_id: str) -> gym.Env:
    """One env per id for the whole module (heavy envs start sandboxes/services once)."""
    if env_id not in _ENVS:
        _ENVS[env_id] = gym.make(env_id)
        _ENVS[env_id].reset(seed=0)
    return _ENVS[env_id]


@pytest.fixture(scope="module", autouse=True)
def _close_envs():
    yield
    for env in _ENVS.values():
        env.close()
    _ENVS.clear()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
lone_surrogates = st.sampled_from(["\ud800", "abc\udfff", "\udbff\udc00x"])


@st.composite
def hostile_actions(draw) -> str:
    kind = draw(st.sampled_from(["text", "broken_json", "random_call", "huge", "many_calls", "surrogates", "xml"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "broken_json":
        body = draw(st.text(max_size=100))
        return f"<tool_call>{{{body}" + draw(st.sampled_from(["", "</tool_call>", "}</tool_call>"]))
    if kind == "random_call":
        name = draw(st.sampled_from(["search", "lookup", "answer", "python", "submit", "open", "click", "nope", ""]))
        args = draw(st.one_of(st.dictionaries(st.text(max_size=12), json_values, max_size=4), json_values))
        return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"
    if kind == "huge":
        return draw(st.sampled_from(["x", "é", "🙂", "<tool_call>"])) * draw(st.integers(10_000, 200_000))
    if kind == "many_calls":
        call = '<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call>'
        return call * draw(st.integers(2, 60))
    if kind == "surrogates":
        return draw(lone_surrogates) + draw(st.text(max_size=20))
    tag = draw(st.sampled_from(["search", "answer", "python", "information"]))
    return f"<{tag}>" + draw(st.text(max_size=50)) + draw(st.sampled_from(["", f"</{tag}>"]))


def check_step_contract(env: gym.Env, result: tuple) -> None:
    assert len(result) == 5
    obs, reward, terminated, truncated, info = result
    assert env.observation_space.contains(obs), type(obs)
    assert isinstance(reward, float) and math.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(info, dict) and isinstance(info.get("rewards"), dict)
    base = env.unwrapped
    if isinstance(base, ToolEnv) and info["rewards"]:
        expected = sum(base.reward_weights.get(k, 1.0) * v for k, v in info["rewards"].items())
        assert reward == pytest.approx(expected)


def test_every_env_is_listed():
    assert "forage/LookupQA-v0" in ENV_IDS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_checker(env_id):
    from gymnasium.utils.env_checker import check_env

    skip_if_unavailable(env_id)
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@given(action=hostile_actions())
def test_step_survives_hostile_actions(env_id, action):
    skip_if_unavailable(env_id)
    env = get_env(env_id)
    result = env.step(action)
    check_step_contract(env, result)
    _, _, terminated, truncated, _ = result
    if terminated or truncated:
        env.reset()
    # the env is still usable: a well-formed turn keeps the contract too
    check_step_contract(env, env.step("Thinking."))
