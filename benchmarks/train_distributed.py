"""1 vs 2 training ranks (torchrun, gloo, CPU) on the tiny random Llama: steps/s and trained tokens/s.

Each configuration is a real :class:`~forage.training.trainer.Trainer` run in its own processes: every
step each rank builds its share of a fixed batch of episodes (random tokens, rewards that give every
group variance), scores it with the current weights (the rollout's log-probs), and the trainer gathers,
computes advantages, splits the update and reduces the gradients. Figures are rank 0's step times after
``--skip`` warm-up steps (rank 0 waits for the other rank inside the step, so it is the job's step time).
The baseline is the fastest honest single process, measured in the same run, interleaved with the
others: the faster of one process using every core as torch threads and one process on one thread.

    python benchmarks/train_distributed.py [--steps 5] [--skip 1] [--repeats 1] [--episodes 32]

Real rollouts (``forage train --nproc N`` on LookupQA) add the env and generation time of each share;
this measures the trainer's own split: rollout scoring, gather, update.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 256


def episodes(step: int, n: int, model) -> list:
    """This rank's share of step ``step``'s ``n`` fixed episodes, scored by ``model``."""
    import torch

    from forage.training.fixed import fixed_episodes

    g = torch.Generator().manual_seed(step)
    specs = []
    for i in range(n):
        n_p, n_g = int(torch.randint(16, 32, (1,), generator=g)), int(torch.randint(16, 48, (1,), generator=g))
        specs.append((i // 4, n_p, n_g, torch.randint(0, VOCAB, (n_p + n_g,), generator=g).tolist(), float(i % 2)))
    return fixed_episodes(specs, model)


def worker(spec: dict) -> None:
    """One rank (or the single process): ``steps`` steps; rank 0 writes the per-step figures."""
    import torch

    from forage.training import Trainer
    from forage.training.config import config_from_dict

    cfg = config_from_dict({
        "name": "bench", "out_dir": spec["out"], "steps": spec["steps"], "seed": 0, "tensorboard": False,
        "model": {"path": "tiny-random", "tiny_vocab": VOCAB, "tiny_hidden": 64, "tiny_layers": 2, "autocast": "off"},
        "optim": {"lr": 1e-4, "micro_batch_tokens": 2048}, "distributed": {"strategy": spec["strategy"]},
    })
    tr = Trainer(cfg, rollout_fn=lambda step, model: episodes(step, spec["episodes"], model), progress=False)
    rows = [tr.train_step() for _ in range(spec["steps"])]
    if tr.world is None or tr.world.main:
        Path(spec["result"]).write_text(json.dumps([{k: v for k, v in r.items() if isinstance(v, (int, float))}
                                                    for r in rows]))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run(nproc: int, threads: int, strategy: str, args: argparse.Namespace, root: Path) -> dict:
    """One configuration in fresh processes; mean figures over the steps after the warm-up."""
    result = root / f"n{nproc}-t{threads}-{strategy}-{time.time_ns()}.json"
    spec = {"out": str(root), "steps": args.steps, "strategy": strategy, "episodes": args.episodes,
            "result": str(result)}
    cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cmd[1:]]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True,
                         timeout=7200)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    rows = json.loads(result.read_text())[args.skip:]
    step_s = sum(r["time/step_s"] for r in rows)
    return {"nproc": nproc, "threads": threads, "strategy": strategy, "steps": len(rows),
            "steps_per_s": len(rows) / step_s, "tokens_per_s": sum(r["pg/tokens"] for r in rows) / step_s,
            "rollout_s": sum(r["time/rollout_s"] for r in rows) / len(rows),
            "update_s": sum(r["time/update_s"] for r in rows) / len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--skip", type=int, default=1, help="first steps left out (warm-up)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=16, help="episodes per step (groups of 4)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the baseline process")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    plan = [(1, args.threads, "ddp"), (2, 1, "ddp"), (2, 1, "fsdp"), (1, 1, "ddp")]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):   # interleaved, so a change of load on the machine hits every configuration
            for nproc, threads, strategy in plan:
                r = run(nproc, threads, strategy, args, Path(tmp))
                results.append(r)
                print(f"{nproc} rank(s) x {threads} thread(s) {strategy if nproc > 1 else '':4s}: "
                      f"{r['steps_per_s']:.3f} steps/s, {r['tokens_per_s']:.0f} trained tokens/s "
                      f"(rollout scoring {r['rollout_s']:.2f} s, update {r['update_s']:.2f} s per step)", flush=True)

    def best(nproc: int, threads: int, strategy: str) -> dict:
        return max((r for r in results if (r["nproc"], r["threads"], r["strategy"]) == (nproc, threads, strategy)),
                   key=lambda r: r["steps_per_s"])

    base = max((best(*k) for k in plan if k[0] == 1), key=lambda r: r["steps_per_s"])   # the faster single process
    print(f"\nbaseline: 1 process x {base['threads']} thread(s): {base['steps_per_s']:.3f} steps/s, "
          f"{base['tokens_per_s']:.0f} tokens/s")
    summary: dict = {"baseline": base, "runs": results, "ratios": {}}
    for key in plan:
        if key[:2] == (1, base["threads"]):
            continue
        r = best(*key)
        ratio = r["steps_per_s"] / base["steps_per_s"]
        summary["ratios"][f"{key[0]}x{key[1]}-{key[2]}"] = ratio
        print(f"{key[0]} rank(s) x {key[1]} thread(s) {key[2] if key[0] > 1 else ''}: {ratio:.2f}x the baseline")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        worker(json.loads(sys.argv[1]))
    else:
        main()
