"""examples/trl_grpo.py: TRL's GRPOTrainer trains on multi-turn Forage episodes (tiny model, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

trl = pytest.importorskip("trl", reason="TRL is not installed (pip install 'forage-gym[trl]')")
import torch  # noqa: E402

from forage.assets import cache_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = cache_dir("models", "SmolLM2-135M-Instruct")


def _load(name: str):
    spec = importlib.util.spec_from_file_location("forage_example_" + name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["forage_example_" + name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template (no download)."""
    if not (SMOLLM2 / "tokenizer.json").exists():
        pytest.skip(f"no SmolLM2 tokenizer at {SMOLLM2}; run `forage model prepare` (setup step 60-model)")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(SMOLLM2))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg), tok


@pytest.mark.slow
def test_grpo_trains_on_multi_turn_episodes(tiny, tmp_path):
    model, tok = tiny
    ex = _load("trl_grpo")
    seen: list[dict] = []

    def length_bonus(prompts, completions, completion_ids=None, **kw):
        # a second reward with spread, so that the group advantages (and the update) are never all zero
        return [len(c) / 100.0 if isinstance(c, str) else len(str(c)) / 100.0 for c in completions]

    trainer = ex.build_trainer(model, tok, "forage/LookupQA-1hop-v0", steps=2, num_tasks=8, num_generations=2,
                               batch_size=2, learning_rate=1e-2, max_new_tokens=12, max_context=1024,
                               output_dir=str(tmp_path), extra_reward_funcs=[length_bonus],
                               env_kwargs={"max_turns": 2})
    inner = trainer.rollout_func

    def spy(prompts, tr):
        out = inner(prompts, tr)
        seen.append(out)
        return out

    trainer.rollout_func = spy
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()

    assert len(seen) >= 1
    for out in seen:
        n = len(out["prompt_ids"])
        assert n == 2 and all(len(out[k]) == n for k in ("completion_ids", "env_mask", "logprobs", "env_reward"))
        for ids, mask, lps in zip(out["completion_ids"], out["env_mask"], out["logprobs"]):
            assert len(ids) == len(mask) == len(lps)
    # multi-turn: some episode had several turns, and its tool-result tokens are masked out of the loss
    multi = [(m, t) for out in seen for m, t in zip(out["env_mask"], out["num_turns"]) if t > 1]
    assert multi and all(0 in m and 1 in m for m, _ in multi)
    logged = [h for h in trainer.state.log_history if "rewards/env_reward/mean" in h]
    assert logged, trainer.state.log_history
    assert all(h["rewards/env_reward/mean"] <= 1.0 for h in logged)
    changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert changed, "GRPO made no update"


# -- environment_factory (TRL >= 1.16): forage.integrations.trl.environment_class ----------------------------

ENV = "forage/LookupQA-1hop-v0"


def _native_result(env_id: str, task_id: str, name: str, arguments: dict) -> tuple[str, float]:
    """The oracle: the same call written by hand in Hermes format and stepped on a plain gym env."""
    import json

    import gymnasium as gym

    import forage  # noqa: F401

    env = gym.make(env_id)
    try:
        env.reset(options={"task_id": task_id})
        action = "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"
        obs, reward, *_ = env.step(action)
    finally:
        env.close()
    return obs, reward


def test_environment_class_methods_are_the_env_tools():
    from transformers.utils import get_json_schema

    from forage.integrations.session import EnvSession
    from forage.integrations.trl import environment_class

    cls = environment_class(ENV)
    env = cls()
    try:
        session = EnvSession(ENV)
        want = {t.name: t.parameters for t in session.tools}
        session.close()
        public = {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}
        assert public - {"reset", "get_reward", "close"} == set(want) == {"lookup", "search", "answer"}
        for name, params in want.items():
            got = get_json_schema(getattr(env, name))["function"]       # how TRL/transformers render the method
            assert set(got["parameters"]["properties"]) == set(params["properties"])
            assert sorted(got["parameters"].get("required", [])) == sorted(params["required"])
            for p, spec in params["properties"].items():
                assert got["parameters"]["properties"][p]["type"] == spec["type"]
                assert got["parameters"]["properties"][p]["description"] == spec["description"]
    finally:
        env.close()


def test_environment_class_steps_like_the_native_env():
    from forage.integrations.trl import environment_class

    env = environment_class(ENV)()
    try:
        task = env.session.env.tasks[0]
        prompt = env.reset(task_id=task.id, prompt=[{"role": "user", "content": ""}])
        assert prompt == task.prompt
        entity = task.metadata["path"][0]
        got = env.lookup(name=entity)
        native, _ = _native_result(ENV, task.id, "lookup", {"name": entity})
        assert f"<tool_response>\n{got}\n</tool_response>" == native  # same text, without the env's wrapping
        bad = env.lookup(nam="x")                                     # the env's own error, word for word
        native_bad, _ = _native_result(ENV, task.id, "lookup", {"nam": "x"})
        assert bad in native_bad and bad.startswith("Error: invalid arguments for lookup")
        assert env.answer(answer=task.answer) == "Answer recorded."
        # lookup ok (0), bad call (format -1 x 0.1), correct answer (1): the env's weighted sum
        assert env.get_reward() == pytest.approx(1.0 - 0.1)
        assert env.lookup(name=entity).startswith("Error: the episode is over")
        env.reset(task_id=task.id)
        assert env.get_reward() == 0.0                     # stopped without answering: ended, scored 0
        assert env.session.episode.stop_reason == "policy_stopped"
    finally:
        env.close()


class _Scripted:
    """Stands in for sampling: the next assistant turn is a scripted tool call (lookup, then answer).

    Every second answer to a task is wrong, so each GRPO group of 2 has one right and one wrong episode.
    """

    def __init__(self, tasks):
        self.tasks = tasks
        self.answers: dict[str, int] = {}

    def completion(self, text: str) -> str:
        import json
        import re

        task = next(t for t in self.tasks if t.prompt in text)
        responses = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.S)
        if not responses:
            call = {"name": "lookup", "arguments": {"name": task.metadata["path"][0]}}
        else:
            n = self.answers[task.id] = self.answers.get(task.id, 0) + 1
            value = "nobody knows" if n % 2 == 0 else task.answer
            call = {"name": "answer", "arguments": {"answer": value}}
        return "<tool_call>\n" + json.dumps(call) + "\n</tool_call><|im_end|>"


@pytest.mark.slow
def test_grpo_trainer_with_environment_factory(tiny, tmp_path, monkeypatch):
    """A real GRPOTrainer run: TRL parses the tool calls, calls the methods, scores with get_reward."""
    model, tok = tiny
    ex = _load("trl_environment")
    from forage.integrations.trl import task_dataset

    dataset = task_dataset(ENV, 4)
    from forage.integrations.session import EnvSession

    s = EnvSession(ENV)
    tasks = [t for t in s.env.tasks if t.id in set(dataset["task_id"])]
    s.close()
    script = _Scripted(tasks)

    def generate(input_ids=None, attention_mask=None, **kw):       # model.generate, scripted
        rows = [tok(script.completion(tok.decode(ids)), add_special_tokens=False).input_ids for ids in input_ids]
        width = max(map(len, rows))
        tail = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows], dtype=input_ids.dtype)
        return torch.cat([input_ids, tail], dim=1)

    monkeypatch.setattr(model, "generate", generate)        # undone after the test (the fixture is shared)
    trainer = ex.build_trainer(model, tok, ENV, steps=2, num_tasks=4, num_generations=2, batch_size=2,
                               learning_rate=1e-2, max_completion_length=256, output_dir=str(tmp_path),
                               dataset=dataset)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "tools/call_frequency" in h]
    assert len(logs) == 2
    assert all(h["tools/call_frequency"] > 0 and h["tools/failure_frequency"] == 0 for h in logs)
    env_key = next(k for k in logs[0] if k.startswith("rewards/") and k.endswith("/mean") and "Lookupqa" in k)
    # oracle: the native env's reward for the same calls (a right answer 1.0, a wrong one 0.0; no format errors)
    right = [_native_result(ENV, t.id, "answer", {"answer": t.answer})[1] for t in tasks]
    wrong = [_native_result(ENV, t.id, "answer", {"answer": "nobody knows"})[1] for t in tasks]
    assert set(right) == {1.0} and set(wrong) == {0.0}
    assert [h[env_key] for h in logs] == [pytest.approx(0.5), pytest.approx(0.5)]   # one of each per group
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters()), "GRPO made no update"
