"""Rollout engine with the scripted policy and SmolLM2's real tokenizer: tokens, masks, limits, failures."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import pytest

import forage  # noqa: F401
from forage.agents import (ChatTokenizer, Generation, PolicyError, RolloutConfig, RolloutEngine, SamplingParams,
                           ScriptedPolicy, Trajectory, load_jsonl, save_jsonl)
from _agents_helpers import tokenizer

ENV = "forage/LookupQA-v0"


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def oracle(tok):
    return ScriptedPolicy.from_oracle(gym.make(ENV).unwrapped, tok)


def _check_exact(traj: Trajectory, chat: ChatTokenizer) -> None:
    """Generated spans decode to the env's actions; the whole sequence equals the template's rendering."""
    traj.check()
    assistant = [m["content"] for m in traj.messages if m["role"] == "assistant"]
    assert len(assistant) == len(traj.turn_spans) == traj.num_turns
    for (s, e), text in zip(traj.turn_spans, assistant):
        assert chat.assistant_text(traj.token_ids[s:e]) == text
        assert all(traj.loss_mask[i] == 1 for i in range(s, e))
    inside = {i for s, e in traj.turn_spans for i in range(s, e)}
    assert all(traj.loss_mask[i] == 0 and traj.logprobs[i] == 0.0 for i in range(len(traj.token_ids)) if i not in inside)


def test_oracle_episodes_are_exact_and_succeed(tok, oracle):
    chat = ChatTokenizer(tok)
    engine = RolloutEngine(oracle, chat, RolloutConfig(concurrency=8))
    trajs = engine.run_sync(ENV, [0, 1, 2, 3], group_size=2)
    assert len(trajs) == 8
    assert [t.group for t in trajs] == ["0", "0", "1", "1", "2", "2", "3", "3"]
    for t in trajs:
        _check_exact(t, chat)
        assert t.error is None and t.terminated and not t.truncated and t.stop_reason == "answer"
        assert t.reward_components["correct"] == 1.0 and t.reward == pytest.approx(1.0)
        assert t.num_tool_calls == t.num_turns and len(t.step_rewards) == t.num_turns
        assert t.timings["total_s"] >= t.timings["env_s"] >= 0
        # No drift: rendering the whole conversation at once gives the same tokens
        # (SmolLM2's template, tool results as user turns, the model's end-of-turn kept).
        msgs = [{"role": m["role"] if m["role"] != "tool" else chat.tool_role, "content": m["content"]}
                for m in t.messages]
        full = tok.apply_chat_template(msgs, tokenize=False)
        assert chat.encode(full)[: len(t.token_ids)] == t.token_ids


def test_task_ids_and_sessions_in_any_order(tok, oracle):
    env = gym.make(ENV).unwrapped
    ids = [env.tasks[i].id for i in (5, 17, 42)]
    trajs = RolloutEngine(oracle, tok, RolloutConfig(concurrency=2)).run_sync(ENV, ids, group_size=1)
    assert [t.task_id for t in trajs] == ids
    assert all(t.reward_components["correct"] == 1.0 for t in trajs)


def test_env_factory_and_stop_string_turns(tok):
    """A policy stopping on '</tool_call>' (no end-of-turn token) gets the template's closing appended."""
    env = gym.make(ENV).unwrapped
    inner = ScriptedPolicy.from_oracle(env, tok)
    inner.end_turn = False
    chat = ChatTokenizer(tok)
    trajs = RolloutEngine(inner, chat).run_sync(lambda: gym.make(ENV).unwrapped, [7], group_size=1)
    t = trajs[0]
    _check_exact(t, chat)
    assert t.reward_components["correct"] == 1.0
    s, e = t.turn_spans[0]
    assert chat.decode(t.token_ids[e:e + 3]).startswith("<|im_end|>")


def test_turn_and_context_limits_truncate(tok, oracle):
    trajs = RolloutEngine(oracle, tok, RolloutConfig(max_turns=1)).run_sync(ENV, [1], group_size=1)
    multi = [t for t in trajs if t.num_turns == 1]
    assert multi and multi[0].truncated and multi[0].stop_reason == "max_turns" and not multi[0].terminated
    t = RolloutEngine(oracle, tok, RolloutConfig(max_context=560)).run_sync(ENV, [0], group_size=1)[0]
    assert t.truncated and t.stop_reason == "context_length" and len(t.token_ids) <= 560
    t.check()


class _Flaky:
    """Fails (or returns garbage) for some prompts, works for others."""

    def __init__(self, inner, mode: str):
        self.inner, self.mode, self.calls = inner, mode, 0

    async def generate(self, prompts, params: SamplingParams):
        self.calls += 1
        if self.calls % 3 == 0:
            if self.mode == "raise":
                raise PolicyError("vLLM server unreachable (simulated crash of one request)")
            if self.mode == "empty":
                return [Generation([], [], "stop")]
            await asyncio.sleep(10)
        return await self.inner.generate(prompts, params)


@pytest.mark.parametrize("mode", ["raise", "empty", "hang"])
def test_failures_end_only_that_episode(tok, oracle, mode):
    cfg = RolloutConfig(concurrency=1, generate_timeout=0.5 if mode == "hang" else None)
    trajs = RolloutEngine(_Flaky(oracle, mode), tok, cfg).run_sync(ENV, list(range(6)), group_size=1)
    failed = [t for t in trajs if t.error]
    ok = [t for t in trajs if not t.error]
    assert failed and ok, [t.error for t in trajs]
    for t in failed:
        assert t.stop_reason == "error" and not t.terminated
        t.check()  # still a consistent (partial) trajectory
    assert all(t.reward_components["correct"] == 1.0 for t in ok)


def test_jsonl_roundtrip(tok, oracle, tmp_path):
    trajs = RolloutEngine(oracle, tok).run_sync(ENV, [3], group_size=2)
    path = save_jsonl(trajs, tmp_path / "t.jsonl")
    back = list(load_jsonl(path))
    assert [b.to_dict() for b in back] == [t.to_dict() for t in trajs]


async def test_run_is_async_and_reports_progress(tok, oracle):
    seen = []
    trajs = await RolloutEngine(oracle, tok, RolloutConfig(concurrency=4)).run(ENV, 4, on_done=seen.append)
    assert len(trajs) == len(seen) == 4 and {t.seed for t in trajs} == {0, 1, 2, 3}


_TOOL_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '\\n\\n# Tools\\n<tools>' }}"
    "{% for t in tools %}{{ '\\n' + (t | tojson) }}{% endfor %}{{ '\\n</tools><|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages[1:] %}{% if m['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_template_with_tool_support_gets_tools_and_tool_role(oracle):
    """A Qwen-style template that takes ``tools=``: schemas go through the template, results as 'tool'."""
    import copy

    tok = copy.deepcopy(tokenizer())
    tok.chat_template = _TOOL_TEMPLATE
    chat = ChatTokenizer(tok)
    assert chat.supports_tools and chat.tool_role == "tool"
    env = gym.make(ENV).unwrapped
    policy = ScriptedPolicy.from_oracle(env, chat)
    t = RolloutEngine(policy, chat).run_sync(ENV, [2])[0]
    _check_exact(t, chat)
    assert t.reward_components["correct"] == 1.0
    text = chat.decode(t.token_ids)
    assert "# Tools" in text and '"name": "lookup"' in text and "<|im_start|>user\n<tool_response>" in text
    assert "You can call the functions below" not in t.messages[0]["content"]  # no duplicate instructions
    msgs = [{"role": m["role"], "content": m["content"]} for m in t.messages]
    full = tok.apply_chat_template(msgs, tools=env.tool_schemas(), tokenize=False)
    assert chat.encode(full)[: len(t.token_ids)] == t.token_ids


def test_reset_options_reach_every_reset(tok, oracle):
    """RolloutConfig.reset_options (the trainer's step for ZeroSearch's curriculum) arrive in each reset."""
    seen = []

    def make():
        env = gym.make(ENV).unwrapped
        inner = env.areset

        async def areset(*, seed=None, options=None):
            seen.append(dict(options or {}))
            return await inner(seed=seed, options=options)

        env.areset = areset
        return env

    ids = [gym.make(ENV).unwrapped.tasks[i].id for i in (3, 4)]
    cfg = RolloutConfig(concurrency=2, reset_options={"train_step": 7})
    trajs = RolloutEngine(oracle, tok, cfg).run_sync(make, ids, group_size=1)
    assert [t.task_id for t in trajs] == ids and all(t.error is None for t in trajs)
    assert sorted(seen, key=lambda o: o["task_id"]) == sorted(
        [{"train_step": 7, "task_id": i} for i in ids], key=lambda o: o["task_id"])
