"""ToolEnv contract: reset/step, info, reward components, budgets, concurrency, async, vector envs."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import forage  # noqa: F401
from forage.envs import Task, ToolEnv, UnicodeText, answer_tool, register_env
from forage.tools import tool

TASKS = [Task(id=f"t{i}", prompt=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(10)]


@tool
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


def score(ep) -> dict[str, float]:
    return {"correct": float(ep.answer == ep.task.answer)}


def make_env(**kw) -> ToolEnv:
    return ToolEnv(TASKS, [add, answer_tool()], score_fn=score, **kw)


def test_reset_info_and_seeding():
    env = make_env()
    obs, info = env.reset(seed=5)
    assert obs.startswith("What is")
    assert info["role"] == "user" and info["task_id"] in {t.id for t in TASKS}
    assert {t["function"]["name"] for t in info["tools"]} == {"add", "answer"}
    again, info2 = env.reset(seed=5)
    assert again == obs and info2["task_id"] == info["task_id"]
    obs3, info3 = env.reset(options={"task_id": "t7"})
    assert info3["task_id"] == "t7" and obs3 == "What is 7 + 7?"
    with pytest.raises(KeyError):
        env.reset(options={"task_id": "nope"})


def test_full_episode_rewards_are_weighted_sums():
    env = make_env(reward_weights={"correct": 2.0})
    env.reset(options={"task_id": "t3"})
    obs, r, term, trunc, info = env.step(env.format_call("add", a=3, b=3))
    assert "<tool_response>\n6\n</tool_response>" == obs
    assert (r, term, trunc) == (0.0, False, False)
    assert info["role"] == "tool" and info["turn"] == 1 and info["num_tool_calls"] == 1
    assert info["tool_calls"] == [{"id": "call_0", "name": "add", "arguments": {"a": 3, "b": 3}}]
    obs, r, term, trunc, info = env.step(env.format_call("answer", answer="6"))
    assert term and not trunc and info["stop_reason"] == "answer" and info["answer"] == "6"
    assert info["rewards"] == {"format": 0.0, "correct": 1.0}
    assert r == pytest.approx(2.0)
    # stepping a finished episode keeps the contract instead of raising
    obs, r, term, trunc, info = env.step("more")
    assert "episode is over" in obs and r == 0.0


@pytest.mark.parametrize("action,needle", [
    ("no call at all", "no tool call found"),
    ("<tool_call>{broken", "never closed"),
    ('<tool_call>{"name": "mul", "arguments": {}}</tool_call>', "unknown tool 'mul'"),
    ('<tool_call>{"name": "add", "arguments": {"a": "x"}}</tool_call>', "invalid arguments"),
    ("x" * ((1 << 20) + 1), "limit is 1048576"),   # the default max_action_chars, a user limit
])
def test_bad_actions_give_error_observations(action, needle):
    env = make_env()
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(action)
    assert needle in obs
    assert info["rewards"]["format"] == -1.0 and r == pytest.approx(-0.1)
    assert not term and not trunc
    # the episode goes on
    obs, *_ = env.step(env.format_call("add", a=1, b=1))
    assert "2" in obs


def test_no_call_as_answer_option():
    env = make_env(on_no_tool_call="answer")
    env.reset(options={"task_id": "t2"})
    _, r, term, _, info = env.step("4")
    assert term and info["answer"] == "4" and info["rewards"]["correct"] == 1.0


def test_budgets_truncate():
    env = make_env(max_turns=2)
    env.reset(seed=1)
    assert not env.step(env.format_call("add", a=1, b=1))[3]
    _, _, term, trunc, info = env.step(env.format_call("add", a=1, b=1))
    assert trunc and not term and info["stop_reason"] == "max_turns" and info["rewards"]["correct"] == 0.0

    env = make_env(max_tool_calls=3)
    env.reset(seed=1)
    calls = "".join(env.format_call("add", a=i, b=i) for i in range(5))
    obs, _, term, trunc, info = env.step(calls)
    assert trunc and info["stop_reason"] == "tool_budget"
    assert obs.count("tool-call budget") == 2 and info["num_tool_calls"] == 3

    env = make_env(max_tokens=30)
    env.reset(seed=1)
    _, _, _, trunc, info = env.step(env.format_call("add", a=1, b=2) + " padding" * 20)
    assert trunc and info["stop_reason"] == "token_budget"

    env = make_env(max_calls_per_turn=2)
    env.reset(seed=1)
    obs, *_ , info = env.step(calls)
    assert "only the first 2 were run" in obs and info["num_tool_calls"] == 2


def test_tool_calls_in_one_turn_run_concurrently():
    gate = {"n": 0}
    both_in = asyncio.Event()

    @tool(timeout=5)
    async def meet(name: str) -> str:
        """Waits until two calls are inside at the same time."""
        gate["n"] += 1
        if gate["n"] == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 2)
        return f"met {name}"

    env = ToolEnv(TASKS, [meet, answer_tool()])
    env.reset(seed=0)
    obs, *_ , info = env.step(env.format_call("meet", name="a") + env.format_call("meet", name="b"))
    assert "met a" in obs and "met b" in obs, obs  # sequential calls would have timed out


def test_result_size_cap():
    @tool
    def flood() -> str:
        """Returns a lot."""
        return "y" * 100_000

    env = ToolEnv(TASKS, [flood, answer_tool()], max_result_chars=2000)
    env.reset(seed=0)
    obs, *_, info = env.step(env.format_call("flood"))
    assert len(obs) < 2100 and "truncated" in obs and info["tool_results"][0]["truncated"]


def test_async_api_drives_many_episodes():
    async def run_all(n: int) -> list[float]:
        envs = [gym.make("forage/LookupQA-v0").unwrapped for _ in range(n)]

        async def one(i: int, env) -> float:
            await env.areset(seed=i)
            total = 0.0
            for action in env.oracle_actions(env.episode.task):
                _, r, term, trunc, _ = await env.astep(action)
                total += r
            return total

        return await asyncio.gather(*(one(i, e) for i, e in enumerate(envs)))

    returns = asyncio.run(run_all(200))
    assert len(returns) == 200 and all(r == pytest.approx(1.0) for r in returns)


def test_sync_step_inside_running_loop():
    async def inner():
        env = gym.make("forage/LookupQA-v0")
        env.reset(seed=3)
        actions = env.unwrapped.oracle_actions(env.unwrapped.episode.task)
        out = [env.step(a) for a in actions]
        env.close()
        return out[-1]

    _, r, term, _, _ = asyncio.run(inner())
    assert term and r == pytest.approx(1.0)


def test_unicode_text_space():
    space = UnicodeText(max_length=100, seed=0)
    samples = [space.sample() for _ in range(50)]
    assert all(space.contains(s) for s in samples)
    assert any(ord(c) > 127 for s in samples for c in s)
    assert not space.contains(b"bytes") and not space.contains("x" * 101)
    assert space.sample(mask=7).__len__() == 7


def test_check_env_passes_for_toolenv():
    check_env(make_env())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs(mode):
    fns = [lambda: gym.make("forage/LookupQA-v0") for _ in range(3)]
    venv = gym.vector.SyncVectorEnv(fns) if mode == "sync" else gym.vector.AsyncVectorEnv(fns)
    try:
        obs, info = venv.reset(seed=[0, 1, 2])
        assert isinstance(obs, tuple) and len(obs) == 3 and all(isinstance(o, str) and "?" in o for o in obs)
        actions = ('<tool_call>{"name": "search", "arguments": {"query": "city"}}</tool_call>', "bad", "🙂" * 10)
        obs, rew, term, trunc, info = venv.step(actions)
        assert isinstance(rew, np.ndarray) and rew.shape == (3,)
        assert "1." in obs[0] and "no tool call" in obs[1] and "no tool call" in obs[2]
        assert rew[1] == pytest.approx(-0.1)
    finally:
        venv.close()


def test_standard_wrappers():
    env = gym.wrappers.RecordEpisodeStatistics(gym.make("forage/LookupQA-v0", max_episode_steps=3))
    env.reset(seed=0)
    for _ in range(3):
        _, _, term, trunc, info = env.step("nothing")
        if term or trunc:
            break
    assert trunc and "episode" in info and info["episode"]["l"] == 3


def test_register_custom_env():
    register_env("test/Adder-v0", tasks=TASKS, tools=[add, answer_tool()], score_fn=score,
                 description="adds numbers", max_turns=3)
    env = gym.make("test/Adder-v0")
    obs, info = env.reset(options={"task_id": "t4"})
    _, r, term, _, _ = env.step(env.unwrapped.format_call("answer", answer="8"))
    assert term and r == pytest.approx(1.0)
    assert env.unwrapped.max_turns == 3


def test_reweight_and_chat_messages_wrappers():
    from forage.envs import ChatMessages, ReweightRewards

    env = ChatMessages(ReweightRewards(gym.make("forage/LookupQA-v0"), {"correct": 5.0, "format": 0.0}))
    obs, info = env.reset(seed=2)
    assert info["messages"][0]["role"] == "system" and "<tools>" in info["messages"][0]["content"]
    assert info["messages"][1] == {"role": "user", "content": obs}
    _, r, *_ = env.step("no call")
    assert r == 0.0  # format switched off
    for action in env.unwrapped.oracle_actions(env.unwrapped.episode.task):
        _, r, term, _, info = env.step(action)
    assert term and r == pytest.approx(5.0)
    roles = [m["role"] for m in info["messages"]]
    assert roles[:4] == ["system", "user", "assistant", "user"] and roles[-1] == "user"


def test_env_tool_timeout_ends_a_slow_call_and_the_env_stays_usable():
    """``tool_timeout`` bounds every call, whatever the tool's own timeout: a call that would take 30 s comes back
    as a "timeout" error observation after 0.2 s, and the next call on the same episode works."""

    @tool
    async def slow(seconds: float) -> str:
        """Sleep, then say so."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    slow.timeout = None
    env = ToolEnv([Task("t", "go", "x")], [slow, answer_tool()], tool_timeout=0.2)
    env.reset(seed=0)
    obs, _, terminated, truncated, info = env.step(env.format_call("slow", seconds=30))
    assert "Error: slow timed out after 0.2 s" in obs and info["tool_results"][0]["error"] == "timeout"
    assert not terminated and not truncated
    obs, *_ = env.step(env.format_call("slow", seconds=0.01))
    assert "slept 0.01" in obs
    env.close()
