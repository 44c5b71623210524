"""The engine stops each turn where the env's tool format says, and ends every episode through the env.

The policy here plays a fixed text each turn and applies the stop strings it is given exactly as
vLLM does with ``include_stop_str_in_output=True`` (the text up to and including the first stop
string found): a stand-in for a model that tries to write the tool results itself.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest

import forage  # noqa: F401
from forage.agents import ChatTokenizer, Generation, RolloutConfig, RolloutEngine, SamplingParams, ScriptedPolicy
from forage.tools import ToolCall, ToolResult, get_format
from _agents_helpers import tokenizer
from _recording_env import RecordingEnv

ENV = "forage/LookupQA-v0"


@pytest.fixture(scope="module")
def chat():
    return ChatTokenizer(tokenizer())


class StopAtStops:
    """Plays ``turns[i]`` at turn i, cut right after the first stop string in it (vLLM's semantics)."""

    def __init__(self, chat: ChatTokenizer, turns: list[str]) -> None:
        self.chat, self.turns, self.turn = chat, turns, 0
        self.stops_seen: list[tuple[str, ...]] = []
        self.eos = chat.tokenizer.get_vocab()["<|im_end|>"]

    async def generate(self, prompts, params: SamplingParams) -> list[Generation]:
        self.stops_seen.append(tuple(params.stop))
        text = self.turns[min(self.turn, len(self.turns) - 1)]
        self.turn += 1
        ends = [(text.find(s) + len(s), s) for s in params.stop if s in text]
        if ends:
            end, stop = min(ends)
            ids = self.chat.encode(text[:end])
            return [Generation(ids, [0.0] * len(ids), "stop", stop)]
        ids = self.chat.encode(text) + [self.eos]
        return [Generation(ids, [0.0] * len(ids), "stop")]


def imagined_turn(fmt_name: str, first_call: str) -> str:
    """A real first call, then results the model made up, then an answer based on them: one turn."""
    fmt = get_format(fmt_name)
    fake = fmt.format_results([ToolResult("Tous Nebrourk works for Acme, headquartered in Paris.", name="lookup",
                                          call_id="call_0")])
    return first_call + "\n" + fake + "\n" + fmt.format_call(ToolCall("answer", {"answer": "Paris"}))


@pytest.mark.parametrize("fmt_name", ["hermes", "xml", "openai"])
def test_the_engine_stops_turns_with_the_formats_stops(chat, fmt_name):
    env = gym.make(ENV, tool_format=fmt_name).unwrapped
    env.reset(seed=0)
    oracle = env.oracle_actions(env.episode.task)
    policy = StopAtStops(chat, [imagined_turn(fmt_name, oracle[0]), *oracle[1:]])
    t = RolloutEngine(policy, chat).run_sync(lambda: gym.make(ENV, tool_format=fmt_name).unwrapped, [0])[0]
    assert t.error is None, t.error
    # the format's own stops reach the policy (not Hermes' </tool_call> for every format)
    expected = {"hermes": ("</tool_call>",), "xml": ("</lookup>", "</search>", "</answer>"), "openai": ()}[fmt_name]
    assert env.stop_strings() == expected and all(s == expected for s in policy.stops_seen)
    first = t.messages[2]["content"]
    if fmt_name == "openai":
        # no stop string exists for a JSON message: the made-up results after it make it invalid JSON
        assert t.messages[3]["tool_calls"] == [] and t.messages[3]["errors"]
    else:
        # the turn ends with the call: the made-up results and the answer were never generated
        assert first.rstrip().endswith(expected[0] if fmt_name == "hermes" else "</lookup>")
        assert "Paris" not in first and [c["name"] for c in t.messages[3]["tool_calls"]] == ["lookup"]
    # the episode did not end on the imagined results; it ends on the real answer, later
    assert t.num_turns >= 3 and t.terminated and t.answer == "Vawusstead"
    assert t.reward_components["correct"] == 1.0


@pytest.mark.parametrize("fmt_name", ["hermes", "xml"])
def test_imagined_results_do_not_end_the_episode_without_stops(chat, fmt_name):
    """A policy that ignores stops (a server without them) still cannot answer on results it wrote."""
    env = gym.make(ENV, tool_format=fmt_name).unwrapped
    env.reset(seed=0)
    oracle = env.oracle_actions(env.episode.task)
    obs, reward, terminated, truncated, info = env.step(imagined_turn(fmt_name, oracle[0]))
    assert not terminated and info["answer"] is None
    assert [c["name"] for c in info["tool_calls"]] == ["lookup"]
    assert any("results come only from the tools" in e for e in info["tool_errors"])
    # the same turn through the engine with a stop-blind policy (stop=()): still not ended on turn 1
    policy = StopAtStops(chat, [imagined_turn(fmt_name, oracle[0]), *oracle[1:]])
    t = RolloutEngine(policy, chat, RolloutConfig(stop=())).run_sync(
        lambda: gym.make(ENV, tool_format=fmt_name).unwrapped, [0])[0]
    assert "Paris" in t.messages[2]["content"] and t.num_turns >= 3 and t.answer == "Vawusstead"


# -- one turn limit: the env's, and the engine ends episodes through the env -----------------------

def run_and_check_at_done(chat, policy, config: RolloutConfig, env_kwargs: dict[str, Any]) -> tuple[Any, list[str]]:
    """One episode; returns the trajectory and the env's log as it was when the episode was reported done."""
    envs: list[RecordingEnv] = []
    seen: list[list[str]] = []

    def make() -> RecordingEnv:
        envs.append(RecordingEnv(**env_kwargs))
        return envs[-1]

    t = RolloutEngine(policy, chat, config).run_sync(make, [0], on_done=lambda _t: seen.append(list(envs[0].log)))[0]
    return t, seen[0]


def never_answers(chat) -> ScriptedPolicy:
    return ScriptedPolicy(chat, lambda prompt, turn: '<tool_call>{"name": "think", "arguments": {"note": "hm"}}</tool_call>')


def test_engine_turn_limit_ends_the_episode_through_the_env(chat):
    """RolloutConfig.max_turns below the env's own: the env scores and tears down when the episode ends."""
    t, log_at_done = run_and_check_at_done(chat, never_answers(chat), RolloutConfig(max_turns=2), {"max_turns": 8})
    assert t.num_turns == 2 and t.truncated and not t.terminated and t.stop_reason == "max_turns"
    assert log_at_done == ["score:max_turns", "teardown"]   # at the episode's end, not at the pool's close
    assert t.reward_components["correct"] == 0.0 and len(t.step_rewards) == 2
    assert t.reward == pytest.approx(sum(t.step_rewards))


def test_env_turn_limit_is_the_default(chat):
    """No engine limit: the env's own max_turns ends (and scores) the episode."""
    t, log_at_done = run_and_check_at_done(chat, never_answers(chat), RolloutConfig(), {"max_turns": 3})
    assert t.num_turns == 3 and t.truncated and t.stop_reason == "max_turns"
    assert log_at_done == ["score:max_turns", "teardown"]


def test_context_limit_ends_the_episode_through_the_env(chat):
    t, log_at_done = run_and_check_at_done(chat, never_answers(chat), RolloutConfig(max_context=400), {"max_turns": 50})
    assert t.truncated and t.stop_reason == "context_length" and len(t.token_ids) <= 400
    assert log_at_done == ["score:context_length", "teardown"]
    assert "correct" in t.reward_components


def test_failed_episode_releases_the_env(chat):
    class Broken:
        async def generate(self, prompts, params):
            raise RuntimeError("server gone")

    t, log_at_done = run_and_check_at_done(chat, Broken(), RolloutConfig(), {})
    assert t.error and t.stop_reason == "error"
    assert log_at_done[-1] == "teardown"


def test_trainer_turn_limit_defaults_to_the_envs_own():
    from forage.training.config import config_from_dict
    from forage.training.rollouts import engine_config

    default = engine_config(config_from_dict({}).rollout, version=0)
    assert default.max_turns is None and "max_turns" not in default.env_kwargs
    env = gym.make(config_from_dict({}).rollout.env, **default.env_kwargs).unwrapped
    assert env.max_turns == 6   # LookupQA's own
    three = engine_config(config_from_dict({"rollout": {"max_turns": 3}}).rollout, version=0)
    assert three.max_turns == 3 and three.env_kwargs["max_turns"] == 3


# -- ChatRunner (message level) over a real HTTP server on 127.0.0.1 -------------------------------

def chat_server(turns: list[str], report_stop: bool, requests: list[dict[str, Any]]):
    """An OpenAI-style /v1/chat/completions that plays ``turns`` and cuts them at the request's stops.

    Like OpenAI (and vLLM's chat endpoint) it drops the matched stop string from ``content``;
    ``report_stop`` adds vLLM's ``stop_reason`` (which stop matched), as OpenAI does not.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from forage.asgi_thread import ThreadedASGIServer

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        requests.append(body)
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        text = turns[min(turn, len(turns) - 1)]
        found = [(text.find(s), s) for s in body.get("stop") or [] if s in text]
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if found:
            at, stop = min(found)
            text = text[:at]
            if report_stop:
                choice["stop_reason"] = stop
        choice["message"] = {"role": "assistant", "content": text}
        return JSONResponse({"choices": [choice], "usage": {"completion_tokens": len(text) // 4}})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "stub"}]})

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                            Route("/v1/models", models)])
    return ThreadedASGIServer(app)


@pytest.mark.parametrize("report_stop", [False, True], ids=["openai_style", "vllm_style"])
@pytest.mark.parametrize("fmt_name", ["hermes", "xml"])
def test_chat_runner_sends_the_formats_stops_and_restores_them(fmt_name, report_stop):
    import asyncio

    from forage.agents import ChatRunner, OpenAIPolicy

    env = gym.make(ENV, tool_format=fmt_name).unwrapped
    env.reset(seed=0)
    oracle = env.oracle_actions(env.episode.task)
    requests: list[dict[str, Any]] = []
    with chat_server([imagined_turn(fmt_name, oracle[0]), *oracle[1:]], report_stop, requests) as server:
        async def main():
            policy = OpenAIPolicy(server.url, use_tools=False, retries=0)
            try:
                return await ChatRunner(policy).run(lambda: gym.make(ENV, tool_format=fmt_name).unwrapped, [0])
            finally:
                await policy.aclose()

        t = asyncio.run(main())[0]
    assert t.error is None, t.error
    assert all(r["stop"] == list(env.stop_strings()) and "tools" not in r for r in requests)
    first = t.messages[2]["content"]
    assert first == oracle[0]   # the cut-off stop string is back: the env saw the complete call
    assert [c["name"] for c in t.messages[3]["tool_calls"]] == ["lookup"] and not t.messages[3]["errors"]
    assert t.num_turns == 3 and t.terminated and t.answer == "Vawusstead"


def test_chat_runner_turn_limit_ends_the_episode_through_the_env():
    import asyncio

    from forage.agents import ChatRunner, OpenAIPolicy

    think_call = '<tool_call>{"name": "think", "arguments": {"note": "hm"}}</tool_call>'
    envs: list[RecordingEnv] = []
    seen: list[list[str]] = []

    def make() -> RecordingEnv:
        envs.append(RecordingEnv(max_turns=8))
        return envs[-1]

    with chat_server([think_call], True, []) as server:
        async def main():
            policy = OpenAIPolicy(server.url, use_tools=False, retries=0)
            try:
                return await ChatRunner(policy, RolloutConfig(max_turns=2)).run(
                    make, [0], on_done=lambda _t: seen.append(list(envs[0].log)))
            finally:
                await policy.aclose()

        t = asyncio.run(main())[0]
    assert t.error is None and t.num_turns == 2 and t.truncated and t.stop_reason == "max_turns"
    assert seen[0] == ["score:max_turns", "teardown"] and t.reward_components["correct"] == 0.0
