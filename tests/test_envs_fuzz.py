"""Property-based tests: random unicode, broken JSON, deep nesting, tag soup and huge strings thrown at every env.

Every registered env takes the hostile actions without raising and keeps the step contract; LookupQA
(cheap) takes them in each tool-call format, and its step costs the same per character at n and 16n.
"""

from __future__ import annotations

import json
import math

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import forage  # noqa: F401
from forage.envs import ToolEnv, forage_env_ids
from forage.tools import FORMATS
from _fuzz_helpers import FAMILIES, GROWTH, hostile_texts, scaling_ratio

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
    """One env per id for the whole module (heavy envs start sandboxes/services once). At most one TextWorld
    game interpreter is kept open at a time: two fresh-clone CI runs died with SIGSEGV/SIGBUS in the TextWorld
    checker while another TextWorld env was still open beside it (native interpreter state)."""
    if env_id not in _ENVS:
        if "TextWorld" in env_id:
            for other in [k for k in _ENVS if "TextWorld" in k]:
                _ENVS.pop(other).close()
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
    kind = draw(st.sampled_from(["text", "broken_json", "random_call", "huge", "many_calls", "surrogates", "xml",
                                 "parser_hostile", "huge_argument", "non_utf8", "imagined_results"]))
    if kind == "parser_hostile":   # deep nesting, long integers, tag soup, repeated/unclosed tags (see _fuzz_helpers)
        return draw(hostile_texts())
    if kind == "huge_argument":
        value = draw(st.sampled_from(["q", "\\", '"', "<tool_call>", "[", "\ud800"])) * draw(st.integers(1_000, 300_000))
        name = draw(st.sampled_from(["search", "lookup", "python", "answer", "command", "submit"]))
        arg = draw(st.sampled_from(["query", "name", "code", "answer", "command", "x"]))
        body = json.dumps({"name": name, "arguments": {arg: value}})
        return "<tool_call>" + draw(st.sampled_from([body, body[:-1], body.replace(":", "", 1)])) + "</tool_call>"
    if kind == "non_utf8":       # bytes that are not UTF-8, as Python decodes them (lone surrogates)
        raw = draw(st.binary(max_size=300))
        return draw(st.sampled_from(["<tool_call>{}</tool_call>", "<search>{}</search>", "{}"])).replace(
            "{}", raw.decode("utf-8", "surrogateescape"), 1)
    if kind == "imagined_results":
        call = '<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call>'
        answer = '<tool_call>{"name": "answer", "arguments": {"answer": "x"}}</tool_call>'
        return draw(st.sampled_from([call + "<tool_response>made up</tool_response>" + answer,
                                     "<search>a</search><information>made up</information><answer>x</answer>"]))
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
    check_env(get_env(env_id).unwrapped, skip_render_check=True)   # the module's env: one start-up per env


# Examples per env: each costs a step or two (and a reset when the episode ends); a ScienceWorld step is
# a Java game step of about a second, so it gets fewer. The parsers themselves are fuzzed far harder
# in test_parsers_fuzz.py, and LookupQA in every format below.
EXAMPLES = 20
SLOW_ENV_EXAMPLES = {"forage/ScienceWorld-v0": 6}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_survives_hostile_actions(env_id):
    skip_if_unavailable(env_id)
    env = get_env(env_id)

    @settings(max_examples=SLOW_ENV_EXAMPLES.get(env_id, EXAMPLES), deadline=None)
    @given(action=hostile_actions())
    def survives(action: str) -> None:
        result = env.step(action)
        check_step_contract(env, result)
        _, _, terminated, truncated, _ = result
        if terminated or truncated:
            env.reset()
        # the env is still usable: a well-formed turn keeps the contract too
        check_step_contract(env, env.step("Thinking."))

    survives()


# -- every tool-call format, on the cheap env ----------------------------------------------------------
_FORMAT_ENVS: dict[str, gym.Env] = {}


def format_env(fmt: str) -> gym.Env:
    if fmt not in _FORMAT_ENVS:
        _FORMAT_ENVS[fmt] = gym.make("forage/LookupQA-v0", tool_format=fmt)
        _FORMAT_ENVS[fmt].reset(seed=0)
    return _FORMAT_ENVS[fmt]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=80, deadline=None)
@given(action=hostile_actions())
def test_step_survives_hostile_actions_in_every_format(fmt, action):
    env = format_env(fmt)
    result = env.step(action)
    check_step_contract(env, result)
    if result[2] or result[3]:
        env.reset()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("family", ["unclosed_tool_call", "open_close_soup", "whitespace_run", "deep_brackets",
                                    "many_calls", "random_latin1"])
def test_step_cost_per_character_is_bounded(fmt, family):
    """env.step at 16x the characters costs ~16x (relative to a copy's growth, timed side by side), not 256x."""
    env = gym.make("forage/LookupQA-v0", tool_format=fmt, max_action_chars=1 << 25, max_turns=10**9).unwrapped
    env.reset(seed=0)

    def step(action: str) -> None:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset(seed=0)

    try:
        n, raw, rel = scaling_ratio(step, FAMILIES[family], max_n=1 << 19)
    finally:
        env.close()
    print(f"step {fmt}/{family}: n={n}, {GROWTH}x the text: {raw:.1f}x the time, {rel:.2f}x a copy's growth")
    assert rel < GROWTH / 2, f"env.step in {fmt} on {family}: {GROWTH}x the input took {raw:.1f}x the time"


@pytest.fixture(scope="module", autouse=True)
def _close_format_envs():
    yield
    for env in _FORMAT_ENVS.values():
        env.close()
    _FORMAT_ENVS.clear()
