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
    from forage.agents.hf import sequence_logprobs
    from forage.agents.trajectory import Trajectory
    from forage.training.distributed import shard_bounds

    from _training_helpers import VOCAB

    g = torch.Generator().manual_seed(1000 + step)
    specs = []
    for task in range(TASKS):
        for _ in range(GROUP):
            n_p, n_g = int(torch.randint(3, 6, (1,), generator=g)), int(torch.randint(2, 12, (1,), generator=g))
            ids = torch.randint(0, VOCAB, (n_p + n_g,), generator=g).tolist()
            # task 0 always fails (a zero-variance group: filtered); the others succeed half the time
            reward = 0.0 if task == 0 else float(torch.rand(1, generator=g) < 0.5)
            specs.append((task, n_p, n_g, ids, reward))
    rank, size = 0, 1
    if torch.distributed.is_initialized():
        rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    a, b = shard_bounds(len(specs), rank, size)
    out = []
    for task, n_p, n_g, ids, reward in specs[a:b]:
        lp = sequence_logprobs(model, ids)
        mask = [0] * n_p + [1] * n_g
        out.append(Trajectory(env_id="fixed", task_id=f"task-{task}", token_ids=ids, loss_mask=mask,
                              logprobs=[x if m else 0.0 for x, m in zip(lp, mask)], turn_spans=[(n_p, n_p + n_g)],
                              reward=reward, reward_components={"correct": reward}, group=f"task-{task}",
                              num_tool_calls=task % 3))
    return out


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
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:   # a hung collective: reap the launcher and both ranks
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{name} on {nproc} rank(s) hung for 600 s: {stderr[-6000:]}")
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
