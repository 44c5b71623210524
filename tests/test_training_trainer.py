"""The training loop end to end on a tiny model: updates, replay, resume equality, config, plots, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from forage.training import Trainer
from forage.training.checkpoint import latest_checkpoint
from forage.training.config import ConfigError, load_config
from forage.training.metrics import read_metrics
from forage.training.plot import plot_run

from _training_helpers import scripted_rollout, tiny_config


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_step_updates_params_and_logs(tmp_path):
    tr = Trainer(tiny_config(tmp_path), rollout_fn=scripted_rollout, progress=False)
    before = _params(tr.model)
    run = tr.train(steps=3)
    after = _params(tr.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for key in ("loss/pg", "entropy/token", "reward/mean", "success/rate", "replay/size", "budget/zero_variance_groups"):
        assert key in rows[-1]
    assert rows[0]["replay/size"] > 0 and "loss/sil" not in rows[0]   # nothing is replayed in its own step
    assert any("loss/sil" in r for r in rows[1:])
    assert rows[0]["entropy/token"] > 0
    from forage.agents.trajectory import load_jsonl

    saved = list(load_jsonl(run / "rollouts" / "step-000002.jsonl"))
    assert len(saved) == 6 and "advantage" in saved[0].metadata


def test_resume_gives_the_same_next_step(tmp_path):
    # uninterrupted: 3 steps
    a = Trainer(tiny_config(tmp_path / "a"), rollout_fn=scripted_rollout, progress=False)
    ma = [a.train_step() for _ in range(3)]
    # interrupted after 2 steps: checkpoint, throw everything away, rebuild, resume, 1 step
    b = Trainer(tiny_config(tmp_path / "b"), rollout_fn=scripted_rollout, progress=False)
    for _ in range(2):
        b.train_step()
    ckpt = b.save()
    torch.manual_seed(12345)  # disturb the global RNG as a fresh process would
    del b
    c = Trainer(tiny_config(tmp_path / "b"), rollout_fn=scripted_rollout, progress=False)
    assert c.resume() == 2 and latest_checkpoint(tmp_path / "b" / "t") == ckpt
    mc = c.train_step()
    assert mc["loss/pg"] == ma[2]["loss/pg"]
    assert mc.get("loss/sil") == ma[2].get("loss/sil")
    assert mc["replay/size"] == ma[2]["replay/size"]
    pa, pc = _params(a.model), _params(c.model)
    assert all(torch.equal(pa[k], pc[k]) for k in pa)


def test_lora_trains_only_adapters_and_kl_starts_at_zero(tmp_path):
    pytest.importorskip("peft", reason="peft (the train extra) is not installed")
    cfg = tiny_config(tmp_path, **{"model.lora": {"enabled": True, "r": 4, "alpha": 8}, "algo.kl_coef": 0.1})
    tr = Trainer(cfg, rollout_fn=scripted_rollout, progress=False)
    trainable = [k for k, p in tr.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    m0 = tr.train_step()
    m1 = tr.train_step()
    assert m0["pg/kl"] == 0.0  # the reference is the policy at step 0
    assert m1["pg/kl"] > 0
    assert set(tr.state_dict()["model"]) == set(trainable)


def test_kl_reference_and_drgrpo_rloo_run(tmp_path):
    for adv in ("drgrpo", "rloo"):
        cfg = tiny_config(tmp_path / adv, **{"algo.kl_coef": 0.05, "algo.advantage": adv,
                                             "algo.cov": {"mode": "kl_cov", "ratio": 0.2},
                                             "algo.loss_agg": "seq-mean-token-sum-norm"})
        tr = Trainer(cfg, rollout_fn=scripted_rollout, progress=False)
        tr.train_step()
        m = tr.train_step()
        assert m["pg/kl"] > 0 and m["pg/cov_penalised"] > 0


def test_config_yaml_toml_and_errors(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("name: x\nsteps: 5\nalgo:\n  clip_high: 0.28\nreplay:\n  enabled: true\n  weight: {kind: cosine_ramp, period: 50}\n")
    cfg = load_config(y, {"optim.lr": 3e-6})
    assert cfg.steps == 5 and cfg.algo.clip_high == 0.28 and cfg.replay.weight.period == 50 and cfg.optim.lr == 3e-6
    t = tmp_path / "c.toml"
    t.write_text('name = "x"\n[curriculum]\ntool_call_reward = true\n[curriculum.schedule]\nperiod = 100\n')
    assert load_config(t).curriculum.schedule.period == 100
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo:\n  clip_hgh: 0.3\n")
    with pytest.raises(ConfigError, match="clip_hgh"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_example_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.joinpath("examples", "configs")
    files = sorted(root.glob("*.yaml")) + sorted(root.glob("*.toml"))
    assert len(files) >= 3
    for f in files:
        load_config(f)


def test_plot_and_cli_plot(tmp_path):
    tr = Trainer(tiny_config(tmp_path), rollout_fn=scripted_rollout, progress=False)
    run = tr.train(steps=2)
    png = plot_run(run)
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from forage.cli import app

    res = CliRunner().invoke(app, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").exists() and "plot:" in res.output
    res = CliRunner().invoke(app, ["plot", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no metrics" in res.output


@pytest.mark.slow
def test_cli_train_real_engine_on_lookupqa(tmp_path):
    """`forage train` end to end: the agents' RolloutEngine + HFPolicy on LookupQA with a tiny random
    model that uses SmolLM2's tokenizer and chat template."""
    from forage.agents.models import default_model_dir, is_prepared

    if not is_prepared():
        pytest.skip(f"SmolLM2 is not prepared at {default_model_dir()} (run `forage model prepare`)")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
name: cli
out_dir: {tmp_path}
steps: 2
tensorboard: true
model: {{path: tiny-random, tokenizer: default, tiny_hidden: 32}}
rollout: {{env: forage/LookupQA-1hop-v0, tasks_per_step: 2, group_size: 2, max_new_tokens: 6, max_turns: 2, task_pool: 8}}
replay: {{enabled: true, min_size: 1, weight: {{kind: constant, value: 1.0}}}}
curriculum: {{tool_call_reward: true}}
bonus: {{episodic_novelty: 0.1, global_novelty: 0.1, novelty_product: 0.1, otc: 0.1}}
budget: {{knapsack: true}}
warmup: {{episodes: 4, epochs: 2, lr: 1.0e-3}}
eval_tasks: 3
""")
    from forage.cli import app

    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--set", "algo.filter_repetitive=true"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = tmp_path / "cli"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["budget/episodes"] == 4 and rows[0]["turns/mean"] >= 1
    assert "reward/format" in rows[0] and "reward/shaping/otc" in rows[0]
    assert (run / "plots" / "training.png").exists() and "plot:" in res.output
    assert list((run / "tensorboard").glob("events.*"))
    assert latest_checkpoint(run) is not None
    cfgj = json.loads((run / "config.json").read_text())
    assert cfgj["rollout"]["env"] == "forage/LookupQA-1hop-v0"
    # the cold start fitted the oracle demonstrations (same batch twice: the second NLL is lower)
    warm = json.loads((run / "warmup.json").read_text())
    assert warm["warmup/demos"] == 4 and warm["warmup/batches"] == 2
    assert warm["warmup/nll_last"] < warm["warmup/nll_first"]
    assert "warm start: SFT on 4 oracle demonstrations" in res.output
    # the held-out panel: the env's last 3 tasks, outside the pool (first 8) and the demonstrations (next 4)
    ev = json.loads((run / "eval.json").read_text())
    import gymnasium as gym

    ids = [t.id for t in gym.make("forage/LookupQA-1hop-v0").unwrapped.tasks]
    assert ev["panel"] == ids[-3:] and not set(ev["panel"]) & set(ids[:12])
    assert ev["before_rl"] is not None and ev["after_rl"]["step"] == 2 and 0 <= ev["after_rl"]["success"] <= 1
    assert "held-out greedy success before RL" in res.output and "on 3 tasks (after 2 RL steps" in res.output
    assert "eval/success" in rows[-1]
    # --resume continues from the final checkpoint to a higher step count
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--resume", "--steps", "3", "--no-plot"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "resumed at step 2" in res.output
    assert "warm start" not in res.output  # a resumed run does not redo the cold start
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2]


@pytest.mark.slow
def test_demonstrations_are_exact_oracle_episodes(tmp_path):
    """Warm-start data: successful oracle episodes outside the training pool, loss only on assistant turns."""
    from forage.agents.models import default_model_dir, is_prepared, resolve_model

    if not is_prepared():
        pytest.skip(f"SmolLM2 is not prepared at {default_model_dir()} (run `forage model prepare`)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    cfg = tiny_config(tmp_path, **{"model.tiny_vocab": len(tok), "rollout.env": "forage/LookupQA-1hop-v0",
                                   "rollout.task_pool": 5, "rollout.max_turns": 4, "warmup.episodes": 3})
    tr = Trainer(cfg, tokenizer=tok, progress=False)
    demos = tr.demonstrations()
    assert len(demos) == 3 and not tr.warmed_up
    assert not {d.task_id for d in demos} & set(tr.task_pool())
    for d in demos:
        assert d.reward_components["correct"] == 1.0 and d.num_tool_calls >= 2
        taught = tok.decode([t for t, m in zip(d.token_ids, d.loss_mask) if m])
        assert "<tool_call>" in taught and "tool_response" not in taught and "<|im_start|>user" not in taught
    m = tr.warm_start()
    assert tr.warmed_up and m["warmup/demos"] == 3
