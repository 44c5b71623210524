"""GPU check: the trainer on CUDA in bf16 with a tiny random Llama, then one update at a realistic length.

Made for a GPU machine with no network that receives only the working tree (so no SmolLM2): the model is
built in memory and the episodes are synthetic token sequences whose behaviour log-probs come from the
model itself, so the PPO ratio starts at 1. Part 1 runs ``Trainer.train_step`` a few times (update, replay,
metrics) and asserts finite losses; part 2 times one policy update of a bigger random model on sequences
of ``--seq-len`` tokens. Prints steps/s and tokens/s for both.

    bash scripts/gpu_check.sh                 # on the GPU machine (installs carried wheels first)
    python benchmarks/gpu_check.py --device cpu --steps 2 --seq-len 256   # the same code path on a CPU
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import Any

import torch

from forage.agents.hf import sequence_logprobs
from forage.agents.trajectory import Trajectory
from forage.training import config_from_dict
from forage.training.trainer import Trainer


def synthetic_rollout(vocab: int, tasks: int, group: int, prompt_len: int, gen_len: int, device: str):
    """A rollout function: random episodes with the policy's own log-probs and random 0/1 rewards."""

    def rollout(step: int, model: Any) -> list[Trajectory]:
        g = torch.Generator().manual_seed(1000 + step)
        out = []
        for task in range(tasks):
            for _ in range(group):
                ids = torch.randint(0, vocab, (prompt_len + gen_len,), generator=g).tolist()
                mask = [0] * prompt_len + [1] * gen_len
                with torch.no_grad():
                    lp = sequence_logprobs(model, ids)
                reward = float(torch.rand(1, generator=g) < 0.5)
                out.append(Trajectory(env_id="synthetic", task_id=f"t{task}", group=f"t{task}", token_ids=ids,
                                      loss_mask=mask, logprobs=[x if m else 0.0 for x, m in zip(lp, mask)],
                                      turn_spans=[(prompt_len, prompt_len + gen_len)], reward=reward,
                                      reward_components={"correct": reward}, num_tool_calls=1))
        return out

    return rollout


def config(args: argparse.Namespace, hidden: int, layers: int, out: str) -> Any:
    return config_from_dict({
        "name": "gpu-check", "out_dir": out, "steps": args.steps, "seed": 0, "tensorboard": False,
        "save_final_checkpoint": False,
        "model": {"path": "tiny-random", "tiny_vocab": args.vocab, "tiny_hidden": hidden, "tiny_layers": layers,
                  "device": args.device, "dtype": args.dtype},
        "rollout": {"tasks_per_step": args.tasks, "group_size": args.group},
        "algo": {"clip_low": 0.2, "clip_high": 0.28, "cov": {"mode": "clip_cov"}},
        "replay": {"enabled": True, "capacity": 4, "trigger": "min_size", "min_size": 4},
        "optim": {"lr": 1e-5, "micro_batch_tokens": args.micro_batch_tokens},
    })


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq-len", type=int, default=2048, help="part 2: tokens per sequence")
    ap.add_argument("--micro-batch-tokens", type=int, default=16384)
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        assert torch.cuda.is_available(), "no CUDA device: run with --device cpu to check the code path"
        print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")

    with tempfile.TemporaryDirectory() as out:
        # 1. the trainer's whole step on the device, tiny model, short episodes
        cfg = config(args, hidden=256, layers=4, out=out)
        tr = Trainer(cfg, rollout_fn=synthetic_rollout(args.vocab, args.tasks, args.group, 32, 96, args.device),
                     progress=False)
        p = next(tr.model.parameters())
        print(f"part 1: tiny Llama {sum(x.numel() for x in tr.model.parameters()) / 1e6:.1f}M params on "
              f"{p.device} in {p.dtype}, {args.tasks}x{args.group} episodes of 128 tokens a step")
        tr.train_step()   # warm-up (kernels, allocator)
        sync(args.device)
        t0 = time.perf_counter()
        tokens = 0.0
        for _ in range(args.steps):
            m = tr.train_step()
            for k in ("loss/pg", "loss/sil", "pg/grad_norm"):
                if k in m:
                    assert math.isfinite(float(m[k])), f"{k} is not finite: {m[k]}"
            tokens += float(m.get("pg/tokens", 0.0))
        sync(args.device)
        dt = time.perf_counter() - t0
        print(f"part 1: {args.steps / dt:.2f} steps/s, {tokens / dt:,.0f} trained tokens/s (rollout included), "
              f"last loss/pg {m.get('loss/pg')}")
        tr.close()
        del tr

        # 2. one policy update at a realistic length on a bigger random model
        cfg = config(args, hidden=1024, layers=8, out=out)
        n = max(2, args.micro_batch_tokens // args.seq_len * 2)
        roll = synthetic_rollout(args.vocab, 2, n // 2, args.seq_len // 4, args.seq_len - args.seq_len // 4,
                                 args.device)
        tr = Trainer(cfg, rollout_fn=roll, progress=False)
        tr.train_step()
        sync(args.device)
        t0 = time.perf_counter()
        m = tr.train_step()
        sync(args.device)
        dt = time.perf_counter() - t0
        assert math.isfinite(float(m.get("loss/pg", 0.0))), m
        if args.device.startswith("cuda"):
            print(f"part 2: peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        print(f"part 2: {n} sequences x {args.seq_len} tokens, step {dt:.2f} s (behaviour log-probs + update), "
              f"{float(m.get('pg/tokens', 0.0)) / dt:,.0f} trained tokens/s")
        tr.close()
    print("gpu check: OK")


if __name__ == "__main__":
    main()
