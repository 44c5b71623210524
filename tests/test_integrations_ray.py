"""Rollouts in Ray actors (local Ray, 2 CPUs) give the same trajectories as the single-process engine."""

from __future__ import annotations

import sys

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'forage-gym[ray]')")

from forage.agents import RolloutConfig, RolloutEngine, ScriptedPolicy  # noqa: E402
from forage.agents.ray_rollout import RayRolloutEngine  # noqa: E402
from forage.assets import cache_dir  # noqa: E402

SMOLLM2 = cache_dir("models", "SmolLM2-135M-Instruct")
ENV_ID = "forage/LookupQA-v0"

# the factories run inside the actors: ship this module's functions by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOLLM2))


def make_policy():
    """The oracle on most tasks, a wrong answer on tasks whose prompt hashes odd (so rewards differ)."""
    import zlib

    import gymnasium as gym

    import forage  # noqa: F401

    env = gym.make(ENV_ID).unwrapped
    oracle = ScriptedPolicy.from_oracle(env, make_tokenizer())
    right = oracle.respond

    def respond(prompt: str, turn: int) -> str:
        if zlib.crc32(prompt.split("<|im_start|>user", 1)[-1][:200].encode()) % 3 == 0:
            return env.format_call("answer", answer="wrong on purpose")
        return right(prompt, turn)

    oracle.respond = respond
    return oracle


@pytest.fixture(scope="module")
def local_ray():
    if not (SMOLLM2 / "tokenizer.json").exists():
        pytest.skip(f"no SmolLM2 tokenizer at {SMOLLM2}; run `forage model prepare` (setup step 60-model)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_actors_match_single_process(local_ray):
    cfg = RolloutConfig(concurrency=8, max_new_tokens=128, seed=0)
    seeds = list(range(10))
    single = RolloutEngine(make_policy(), make_tokenizer(), cfg).run_sync(ENV_ID, seeds, group_size=2)
    engine = RayRolloutEngine(make_policy, make_tokenizer, cfg, num_actors=2, address="local")
    try:
        distributed = engine.run_sync(ENV_ID, seeds, group_size=2)
        again = engine.run_sync(ENV_ID, seeds[:3], group_size=1)   # envs stay warm in the actors
        stats = engine.stats()
    finally:
        engine.shutdown()
    assert len(distributed) == len(single) == 20
    fields = ("task_id", "token_ids", "loss_mask", "logprobs", "turn_spans", "reward", "reward_components",
              "num_turns", "stop_reason", "answer", "seed", "group", "error")
    for a, b in zip(single, distributed):
        for f in fields:
            assert getattr(a, f) == getattr(b, f), f
        assert [m["content"] for m in a.messages] == [m["content"] for m in b.messages]
    rewards = {t.reward for t in single}
    assert len(rewards) > 1 and all(t.error is None for t in single)  # real episodes, some right, some wrong
    assert [t.task_id for t in again] == [t.task_id for t in single[0:6:2]]
    assert sum(s["episodes_run"] for s in stats) == 23 and all(s["episodes_run"] > 0 for s in stats)


@pytest.mark.slow
def test_ray_example_script(local_ray):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "ray_rollout.py"
    spec = importlib.util.spec_from_file_location("forage_example_ray_rollout", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    result = module.main(["--ray", "local", "--tasks", "3", "--group-size", "2", "--actors", "2", "--check"])
    assert result["episodes"] == 6 and result["success"] == 1.0 and result["same_as_single_process"] is True


@pytest.mark.slow
def test_eval_cli_on_ray_matches_one_process(local_ray, tmp_path):
    """``forage eval --ray local``: the same trajectories, token for token, as the one-process eval."""
    import json

    from typer.testing import CliRunner

    from forage.cli import app

    common = ["eval", "--env", ENV_ID, "--policy", "scripted", "--episodes", "5", "--samples", "2",
              "--runs-dir", str(tmp_path), "--no-progress", "--sampling-seed", "3"]
    one = CliRunner().invoke(app, common + ["--name", "one"])
    spread = CliRunner().invoke(app, common + ["--name", "spread", "--ray", "local", "--ray-actors", "2"])
    assert one.exit_code == 0, one.output
    assert spread.exit_code == 0, spread.output
    summary = json.loads((tmp_path / "spread" / "summary.json").read_text())
    assert summary["ray_actors"] == 2 and "on 2 Ray actors" in summary["policy"]
    assert summary["episodes"] == 10 and summary["success_rate"] == 1.0

    def load(name: str) -> list[dict]:
        return [json.loads(x) for x in (tmp_path / name / "trajectories.jsonl").read_text().splitlines()]

    a, b = load("one"), load("spread")
    assert len(a) == len(b) == 10
    for x, y in zip(a, b):
        for f in ("task_id", "token_ids", "loss_mask", "reward", "reward_components", "answer", "seed", "group"):
            assert x[f] == y[f], f


def test_eval_cli_ray_bad_input_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from forage.cli import app

    base = ["eval", "--episodes", "1", "--runs-dir", str(tmp_path), "--no-progress", "--ray", "local"]
    r = CliRunner().invoke(app, base + ["--policy", "openai:http://127.0.0.1:9#m"])
    assert r.exit_code != 0 and "not spread over Ray" in r.output
    r = CliRunner().invoke(app, base + ["--policy", "scripted", "--ray-actors", "0"])
    assert r.exit_code != 0 and "--ray-actors must be >= 1" in r.output


@pytest.mark.slow
def test_trainer_rolls_out_in_ray_actors_with_pushed_weights(local_ray, tmp_path):
    """``rollout.ray``: the actors roll out with the trainer's current weights (pushed after each update)."""
    import torch
    from _training_helpers import tiny_config

    from forage.agents.hf import sequence_logprobs
    from forage.training import Trainer

    cfg = tiny_config(tmp_path, **{"model.tokenizer": "default", "model.tiny_vocab": 0,
                                   "rollout.env": "forage/LookupQA-1hop-v0", "rollout.task_pool": 4,
                                   "rollout.max_turns": 2, "rollout.max_new_tokens": 8,
                                   "rollout.ray": "local", "rollout.ray_actors": 2})
    tr = Trainer(cfg, progress=False)

    def checksum() -> float:
        return float(sum(p.detach().double().sum() for p in tr.model.state_dict().values()))

    def nudge() -> None:   # a weight change that does not depend on this tiny model's rewards varying
        with torch.no_grad():
            for p in tr.model.parameters():
                p.mul_(1.01)

    try:
        first = tr.train_step()
        assert first["time/weight_sync_s"] == 0.0   # the shipped copy already held step 0's weights
        nudge()
        pushed = checksum()
        second = tr.train_step()
        assert second["time/weight_sync_s"] > 0 and second["budget/episodes"] == 6
        engine = tr.ray_rollout_engine()
        assert engine.weights_checksums() == [pytest.approx(pushed, rel=1e-12)] * 2
        nudge()
        assert engine.weights_checksums() != [pytest.approx(checksum(), rel=1e-9)] * 2
        tr.sync_rollout_weights()
        assert engine.weights_checksums() == [pytest.approx(checksum(), rel=1e-12)] * 2
        assert {s["weights_version"] for s in engine.stats()} == {2}
        # behaviour log-probs recorded in the actors are the trainer's model's own
        trajs = tr.default_rollout(tr.step, tr.model)
        with torch.no_grad():
            for t in trajs[:3]:
                mine = sequence_logprobs(tr.model, t.token_ids)
                got = [(a, b) for a, b, m in zip(t.logprobs, mine, t.loss_mask) if m]
                assert got and all(abs(a - b) < 1e-3 for a, b in got)
    finally:
        tr.close()
    assert tr._ray_engine is None and ray.is_initialized()   # the fixture's instance stays up
