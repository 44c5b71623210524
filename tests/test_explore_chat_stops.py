"""Go-Explore's chat policy stops each turn where the env's tool format says, as the rollout engine does.

Against a real OpenAI-style server on 127.0.0.1 that plays a turn with made-up tool results after the
first call, and cuts it at the request's stop strings (dropping the matched one, as OpenAI does).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest

import forage  # noqa: F401
from forage.agents import OpenAIPolicy
from forage.explore import ChatExplorePolicy

from test_turn_limit_and_stops import chat_server, imagined_turn

ENV = "forage/LookupQA-v0"


@pytest.mark.parametrize("report_stop", [False, True], ids=["openai_style", "vllm_style"])
@pytest.mark.parametrize("fmt_name", ["hermes", "xml"])
def test_text_calls_carry_the_formats_stops_and_the_env_sees_the_whole_call(fmt_name, report_stop):
    env = gym.make(ENV, tool_format=fmt_name).unwrapped
    obs, info = env.reset(seed=0)
    oracle = env.oracle_actions(env.episode.task)
    requests: list[dict[str, Any]] = []
    with chat_server([imagined_turn(fmt_name, oracle[0])], report_stop, requests) as server:
        policy = ChatExplorePolicy(OpenAIPolicy(server.url, "stub", use_tools=False, retries=0))
        try:
            action = policy.act(env, obs, info)
            _, _, terminated, _, step_info = env.step(action)
            action2 = policy.act(env, "next", step_info)
        finally:
            policy.close()
    expected = {"hermes": ["</tool_call>"], "xml": ["</lookup>", "</search>", "</answer>"]}[fmt_name]
    assert list(env.stop_strings()) == expected
    assert [r["stop"] for r in requests] == [expected, expected] and all("tools" not in r for r in requests)
    # the turn ends with the first call, its stop string put back; the made-up results never reach the env
    assert action == action2 == oracle[0]
    assert not terminated and [c["name"] for c in step_info["tool_calls"]] == ["lookup"]
    assert not step_info["tool_errors"]


def test_server_side_tool_calls_send_no_stops():
    """With tools sent to the server (the default), a stop would cut the call before its parser: none is sent."""
    env = gym.make(ENV).unwrapped
    obs, info = env.reset(seed=0)
    requests: list[dict[str, Any]] = []
    with chat_server(["thinking"], False, requests) as server:
        policy = ChatExplorePolicy(OpenAIPolicy(server.url, "stub", retries=0))
        try:
            assert policy.act(env, obs, info) == "thinking"
        finally:
            policy.close()
    assert "stop" not in requests[0] and requests[0]["tools"] == env.tool_schemas()
