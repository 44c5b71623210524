"""The trainer on 2 ranks (torchrun, gloo, CPU) against the single-process trainer on the same batches.

Each test launches this file as a worker (``python -m torch.distributed.run --nproc-per-node 2 THIS ...`` or
plain ``python THIS ...`` for the single process): a tiny random Llama trains on fixed episodes whose tokens
and rewards depend only on the step (each rank builds and scores only its share, with the current weights),
and rank 0 writes the final parameters and the per-step metrics. The oracle is the single-process trainer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).resolve().parent
TASKS, GROUP = 5, 3   # 15 episodes: shares of 8 and 7, of different lengths (unequal micro-batch counts)

# the equality check: no Clip-Cov (its random picks are per micro-batch, so they depend on the split), no
# gradient clipping, and Adam's eps = 1 so that a step is ~lr x gradient: a wrong normaliser or a missing
# rank shows in the parameters (with the default eps, Adam's first step is lr x sign(gradient), blind to scale)
EXACT = {"algo.cov": {"mode": "none"}, "replay.cov": {"mode": "none"}, "optim.grad_clip": 0.0, "optim.eps": 1.0,
         "optim.micro_batch_tokens": 24}


def fixed_rollout(step: int, model: Any) -> list:
    """This rank's share of the step's fixed episodes (all of them in one process), with the model's log-probs."""
    from forage.training.fixed import fixed_episodes

    from _training_helpers import VOCAB

    g = torch.Generator().manual_seed(1000 + step)
    specs = []
    for task in range(TASKS):
        for _ in range(GROUP):
            n_p, n_g = int(torch.randint(3, 6, (1,), generator=g)), int(torch.randint(2, 12, (1,), generator=g))
            ids = torch.randint(0, VOCAB, (n_p + n_g,), generator=g).tolist()
            # task 0 always fails (a zero-variance group: filtered); the others succeed half the time
            reward = 0.0 if task == 0 else float(torch.rand(1, generator=g) < 0.5)
            specs.append((task, n_p, n_g, ids, reward, task % 3))
    return fixed_episodes(specs, model)


def worker(args: dict) -> None:
    """One rank (or the single process): train ``steps`` steps (after resuming if asked), save what was asked."""
    from forage.training import Trainer

    from _training_helpers import tiny_config

    cfg = tiny_config(Path(args["run"]), **{"distributed.strategy": args["strategy"], **args["over"]})
    tr = Trainer(cfg, rollout_fn=fixed_rollout, progress=False)
    if args.get("resume"):
        assert tr.resume() == args["resume"]
    metrics = [tr.train_step() for _ in range(args["steps"] - tr.step)]
    if args.get("save"):
        tr.save()
    st = tr.state_dict()   # every rank: it gathers (FSDP shards, each rank's streams); rank 0 holds it all
    if tr.world is None or tr.world.main:
        torch.save({"params": st["model"], "metrics": metrics, "step": tr.step}, args["out"])
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _run(tmp_path: Path, name: str, nproc: int, **args: Any) -> dict:
    out = tmp_path / f"{name}.pt"
    spec = {"run": str(tmp_path / name), "out": str(out), "strategy": "ddp", "over": {}, **args}
    cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # the same kernels in the single process as in each rank
    for attempt in range(2):
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:   # a hung collective: reap the launcher and both ranks
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{name} on {nproc} rank(s) hung for 600 s: {stderr[-6000:]}")
        # Known, not yet understood: under load a gloo rank once aborted with "terminate called without an active
        # exception" (SIGABRT) in a fresh-clone CI run; one retry, said out loud, so a real failure still fails.
        if proc.returncode != 0 and attempt == 0 and "terminate called without an active exception" in stderr:
            print(f"retrying {name}: a rank aborted in C++ (terminate without an active exception)")
            continue
        break
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return torch.load(out, weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The oracle: the single-process trainer, 3 steps on the whole batches, and its starting parameters."""
    tmp = tmp_path_factory.mktemp("single")
    return _run(tmp, "single", 1, steps=3, over=EXACT), _run(tmp, "init", 1, steps=0, over=EXACT)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_take_the_single_process_steps(tmp_path, single, strategy):
    """3 steps on 2 ranks (each rolling out its share) = 3 single-process steps on the whole batch: parameters
    within 1e-6 (absolute; the steps moved them by ~1e-3) and the logged loss, gradient norm and replay alike."""
    one, init = single
    two = _run(tmp_path, strategy, 2, steps=3, strategy=strategy, over=EXACT)
    moved = _max_diff(one["params"], init["params"])
    assert moved > 1e-4   # the steps did move the parameters, far more than the tolerance
    assert _max_diff(two["params"], one["params"]) < 1e-6
    fired = False
    for m1, m2 in zip(one["metrics"], two["metrics"]):
        for k in ("loss/pg", "pg/grad_norm", "entropy/token", "pg/ratio_mean", "pg/tokens", "loss/sil", "sil/tokens"):
            assert (k in m1) == (k in m2), k
            if k in m1:
                assert m2[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-7), (k, m1[k], m2[k])
        for k in ("budget/episodes", "budget/episodes_used", "budget/zero_variance_groups", "replay/size",
                  "replay/added", "replay/baseline", "adv/abs_mean", "reward/mean"):
            assert m2[k] == pytest.approx(m1[k], rel=1e-6), (k, m1[k], m2[k])
        fired |= "loss/sil" in m1
    assert one["metrics"][0]["budget/episodes"] == TASKS * GROUP and one["metrics"][0]["budget/zero_variance_groups"] >= 1
    assert fired   # the replay (gathered baseline, split SIL pass) took part


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resumed_two_rank_run_takes_the_same_next_step(tmp_path, strategy):
    """2 ranks, Clip-Cov on (each rank's random picks): 2 steps, checkpoint, new processes resume and take step 3;
    it equals step 3 of an uninterrupted 2-rank run, bit for bit."""
    whole = _run(tmp_path, "whole", 2, steps=3, strategy=strategy)
    _run(tmp_path, "cut", 2, steps=2, strategy=strategy, save=True)
    resumed = _run(tmp_path, "cut", 2, steps=3, strategy=strategy, resume=2)
    assert resumed["step"] == 3
    for k in whole["params"]:
        assert torch.equal(whole["params"][k], resumed["params"][k]), k
    m1, m2 = whole["metrics"][2], resumed["metrics"][0]
    assert m1["pg/cov_removed"] > 0   # Clip-Cov picked tokens on both ranks' streams
    for k in ("loss/pg", "pg/grad_norm", "pg/cov_removed", "replay/size"):
        assert m2[k] == m1[k], k
    assert m2.get("loss/sil") == m1.get("loss/sil")


@pytest.mark.slow
def test_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path):
    """A 2-rank checkpoint is whole: one process loads its model and optimizer (and warns that the per-rank
    random streams restart)."""
    from forage.training import Trainer
    from forage.training.checkpoint import latest_checkpoint, load_checkpoint

    from _training_helpers import tiny_config

    two = _run(tmp_path, "two", 2, steps=2, save=True)
    st = load_checkpoint(latest_checkpoint(tmp_path / "two" / "t"))
    assert st["world_size"] == 2 and len(st["ranks"]) == 2
    tr = Trainer(tiny_config(tmp_path / "two"), rollout_fn=fixed_rollout, progress=False)
    with pytest.warns(UserWarning, match="2 rank"):
        assert tr.resume() == 2
    for k, v in tr.model.named_parameters():
        assert torch.equal(v.detach(), two["params"][k]), k
    assert len(tr.optimizer.state) == len(list(tr.model.parameters()))
    tr.train_step()   # and it trains on


@pytest.mark.slow
def test_cli_nproc_2_on_lookupqa(tmp_path):
    """`forage train --nproc 2` end to end: torchrun, the real engine on LookupQA (each rank its share), the cold
    start, the held-out panel, rank 0's files and one voice, and --resume on 2 ranks."""
    from forage.agents.models import default_model_dir, is_prepared
    from forage.training.checkpoint import latest_checkpoint, load_checkpoint
    from forage.training.metrics import read_metrics

    if not is_prepared():
        pytest.skip(f"SmolLM2 is not prepared at {default_model_dir()} (run `forage model prepare`)")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
name: cli
out_dir: {tmp_path}
steps: 2
tensorboard: false
model: {{path: tiny-random, tokenizer: default, tiny_hidden: 32, autocast: "off"}}
rollout: {{env: forage/LookupQA-1hop-v0, tasks_per_step: 3, group_size: 2, max_new_tokens: 6, max_turns: 2, task_pool: 8}}
warmup: {{episodes: 3, epochs: 1, lr: 1.0e-3}}
eval_tasks: 3
""")

    def forage_train(*extra: str) -> str:
        cmd = [sys.executable, "-m", "forage.train", "--config", str(cfg), "--nproc", "2", "--no-plot", *extra]
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"forage train --nproc 2 hung: {out[-6000:]}")
        assert proc.returncode == 0, out[-6000:]
        return out

    out = forage_train()
    assert "torchrun: 2 ranks, ddp" in out and out.count("run folder:") == 1   # rank 0 speaks, once
    run = tmp_path / "cli"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["budget/episodes"] == 6   # both ranks' shares, gathered
    lines = (run / "rollouts" / "step-000000.jsonl").read_text().splitlines()
    tasks = [json.loads(x)["task_id"] for x in lines]
    assert len(tasks) == 6 and all(tasks[i] == tasks[i + 1] for i in (0, 2, 4))   # the plan's order, groups whole
    assert json.loads((run / "warmup.json").read_text())["warmup/demos"] == 3
    ev = json.loads((run / "eval.json").read_text())
    assert ev["after_rl"]["step"] == 2 and len(ev["panel"]) == 3
    st = load_checkpoint(latest_checkpoint(run))
    assert st["step"] == 2 and st["world_size"] == 2
    out = forage_train("--resume", "--steps", "3")
    assert "resumed at step 2" in out and "warm start" not in out
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2]


def test_shard_bounds_cover_each_item_once():
    from forage.training.distributed import shard_bounds

    for n in range(0, 12):
        for size in range(1, 5):
            spans = [shard_bounds(n, r, size) for r in range(size)]
            assert [i for a, b in spans for i in range(a, b)] == list(range(n))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


if __name__ == "__main__":
    import faulthandler

    faulthandler.register(signal.SIGUSR1)   # kill -USR1 PID prints where a rank waits
    sys.path.insert(0, str(HERE))
    worker(json.loads(sys.argv[1]))
