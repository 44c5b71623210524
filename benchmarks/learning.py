"""Evidence of learning: SmolLM2-135M on LookupQA 1-hop, GRPO alone vs GRPO + SPEAR, same seeds and budget.

SmolLM2-135M never writes a well-formed tool call by itself (0 of 96 sampled episodes here), so RL
alone has no signal to start from. Both arms therefore start from the same cold start: a short SFT
on oracle demonstrations of tasks outside the training pool and the eval set (``--warmup``; 0 turns
it off). Then both arms draw the same tasks and sampling seeds each step and spend the same rollout
budget; the SPEAR arm adds the self-imitation replay (with Clip-Cov on replayed tokens) and the
tool-call reward curriculum. Success is measured greedily on held-out tasks for the base model,
after the warm start and after N RL steps. Prints the figures side by side, writes JSON and one
overlaid plot.

    python benchmarks/learning.py --steps 5 --eval-tasks 16     # CPU (2 cores): about an hour
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from forage.training import config_from_dict
from forage.training.plot import plot_run
from forage.training.trainer import Trainer


def arm_config(name: str, spear: bool, args: argparse.Namespace) -> dict:
    cfg = {
        "name": name, "out_dir": args.out, "steps": args.steps, "seed": args.seed, "save_final_checkpoint": False,
        "model": {"path": args.model},
        "rollout": {"env": "forage/LookupQA-1hop-v0", "tasks_per_step": args.tasks, "group_size": args.group,
                    "max_new_tokens": args.max_new_tokens, "max_turns": args.max_turns, "task_pool": args.pool},
        "algo": {"advantage": "grpo", "clip_low": 0.2, "clip_high": 0.28},
        "optim": {"lr": args.lr, "micro_batch_tokens": 2048},
        "budget": {"filter_zero_variance": True},
        "warmup": {"episodes": args.warmup, "epochs": args.warmup_epochs, "lr": 1e-5},
    }
    if spear:
        period = max(2, 2 * args.steps)
        cfg["replay"] = {"enabled": True, "capacity": 4, "tolerance": 5,
                         "weight": {"kind": "cosine_ramp", "value": 1.0, "period": period},
                         "cov": {"mode": "clip_cov", "ratio": 0.02, "lb": 1.0, "ub": 40.0}}
        cfg["curriculum"] = {"tool_call_reward": True, "per_call": 0.1, "rule": "all",
                             "schedule": {"kind": "cosine_decay", "value": 1.0, "period": period}}
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=4, help="tasks per step")
    ap.add_argument("--group", type=int, default=4, help="episodes per task")
    ap.add_argument("--eval-tasks", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=32, help="oracle demonstrations for the shared cold start")
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--pool", type=int, default=16, help="train on the first N tasks")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default="runs/learning")
    a = ap.parse_args()

    results: dict[str, dict] = {}
    eval_ids: list[str] | None = None
    before: dict = {}
    warm: dict = {}
    start_weights: dict | None = None
    for name, spear in (("grpo", False), ("grpo+spear", True)):
        cfg = config_from_dict(arm_config(name, spear, a))
        tr = Trainer(cfg)
        if eval_ids is None:
            import gymnasium as gym

            env = gym.make(cfg.rollout.env, disable_env_checker=True)
            pool_all = [t.id for t in env.unwrapped.tasks]
            env.close()
            eval_ids = pool_all[-a.eval_tasks:]  # held out: never in the training pool or the demonstrations
            t0 = time.perf_counter()
            before = tr.evaluate(eval_ids, temperature=0.0)
            before["eval_s"] = time.perf_counter() - t0
            print(f"base model: {before}", flush=True)
            if a.warmup:
                warm = tr.warm_start()
                warm.update(tr.evaluate(eval_ids, temperature=0.0))
                print(f"after the warm start: {warm}", flush=True)
            start_weights = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
        else:  # the second arm starts from exactly the first arm's starting weights
            tr.model.load_state_dict(start_weights)
            tr.warmed_up = True
        t0 = time.perf_counter()
        run = tr.train()
        train_s = time.perf_counter() - t0
        after = tr.evaluate(eval_ids, temperature=0.0)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        results[name] = {"after": after, "train_s": train_s, "steps_per_s": a.steps / train_s,
                         "train_success": [r["success/rate"] for r in rows],
                         "sil_updates": sum(1 for r in rows if "loss/sil" in r), "run": str(run)}
        print(f"{name}: after {a.steps} steps {after}  ({train_s:.0f} s)", flush=True)
        del tr

    print()
    print(f"SmolLM2-135M on LookupQA-1hop-v0, {a.steps} steps x {a.tasks} tasks x {a.group} episodes, "
          f"held-out greedy eval on {a.eval_tasks} tasks")
    print(f"{'':24s}{'grpo':>14s}{'grpo+spear':>14s}")
    g, s = results["grpo"], results["grpo+spear"]
    print(f"{'success base model':24s}{before['success']:>14.3f}{before['success']:>14.3f}")
    if warm:
        print(f"{'success after warm start':24s}{warm['success']:>14.3f}{warm['success']:>14.3f}")
    print(f"{'success after':24s}{g['after']['success']:>14.3f}{s['after']['success']:>14.3f}")
    print(f"{'reward after':24s}{g['after']['reward']:>14.3f}{s['after']['reward']:>14.3f}")
    print(f"{'tool calls after':24s}{g['after']['tool_calls']:>14.2f}{s['after']['tool_calls']:>14.2f}")
    print(f"{'train success by step':24s}{str([round(x, 2) for x in g['train_success']]):>14s} "
          f"{str([round(x, 2) for x in s['train_success']]):>14s}")
    print(f"{'SIL updates':24s}{g['sil_updates']:>14d}{s['sil_updates']:>14d}")
    print(f"{'train wall s':24s}{g['train_s']:>14.0f}{s['train_s']:>14.0f}")
    print(f"{'steps/s':24s}{g['steps_per_s']:>14.4f}{s['steps_per_s']:>14.4f}")
    out = Path(a.out)
    png = plot_run([Path(g["run"]), Path(s["run"])], out / "learning.png")
    (out / "learning.json").write_text(json.dumps({"args": vars(a), "before": before, "warm_start": warm, "arms": results}, indent=2))
    print(f"plot: {png}\nresults: {out / 'learning.json'}")


if __name__ == "__main__":
    main()
