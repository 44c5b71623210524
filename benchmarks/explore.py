"""Exploration envs: step time per family, and Go-Explore vs plain exploration at the same number of env steps.

Part 1 times env steps (a tool-call turn through the full ToolEnv path) and raw game steps,
snapshots and restores for Game24, TextWorld, BabyAI and ScienceWorld (no snapshots there). Part 2 runs Go-Explore and plain
exploration (episodes from the reset) with the same random admissible-command policy and the
same budget of env steps on TextWorld and BabyAI tasks, at 3 seeds (seed s explores task s),
and prints cells discovered and best score side by side.

    .venv/bin/python benchmarks/explore.py [--budget-tw 1500] [--budget-babyai 3000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


import forage  # noqa: F401
from forage.envs.games.babyai import BabyAIEnv
from forage.envs.games.game24 import Game24Env
from forage.envs.games.scienceworld_games import ScienceWorldEnv, scienceworld_unavailable
from forage.envs.games.textworld_games import TextWorldEnv
from forage.explore import GoExploreConfig, RandomCommandPolicy, go_explore, plain_explore


def time_steps(env, n: int, seed: int = 0) -> dict:
    """Mean ms per env.step (random admissible command), per raw game step, per snapshot and restore."""
    policy = RandomCommandPolicy(seed, commands=["look"])
    obs, info = env.reset(seed=seed)
    t_env, steps = 0.0, 0
    while steps < n:
        action = policy.act(env, obs, info)
        t0 = time.perf_counter()
        obs, _, term, trunc, info = env.step(action)
        t_env += time.perf_counter() - t0
        steps += 1
        if term or trunc:
            obs, info = env.reset()
    out = {"env_step_ms": 1000 * t_env / steps}
    if getattr(env, "supports_snapshots", False):
        backend = env._backend
        cmds = info.get("admissible_commands") or ["look"]
        t0 = time.perf_counter()
        for i in range(n):
            backend.step(cmds[i % len(cmds)] if "go forward" in cmds else "look")
        out["game_step_ms"] = 1000 * (time.perf_counter() - t0) / n
        env.reset(seed=seed)
        t0 = time.perf_counter()
        snaps = [env.get_state() for _ in range(50)]
        out["snapshot_ms"] = 1000 * (time.perf_counter() - t0) / 50
        t0 = time.perf_counter()
        for s in snaps[:20]:
            env.reset(options={"start_state": s})
        out["restore_ms"] = 1000 * (time.perf_counter() - t0) / 20
    return out


def time_game24(n: int) -> dict:
    env = Game24Env()
    env.reset(seed=0)
    action = env.format_call("calculator", expression="(13 - 9) * (2 + 4)")
    t0 = time.perf_counter()
    for _ in range(n):
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()
    return {"env_step_ms": 1000 * (time.perf_counter() - t0) / n}


def compare(make_env, budget: int, seeds: int, explore_steps: int) -> list[dict]:
    rows = []
    env = make_env()
    try:
        for s in range(seeds):
            task = env.tasks[s % len(env.tasks)].id
            g = go_explore(env, RandomCommandPolicy(s), GoExploreConfig(budget=budget, explore_steps=explore_steps,
                                                                         seed=s), task_id=task)
            p = plain_explore(env, RandomCommandPolicy(s), budget, seed=s, task_id=task)
            rows.append({"task": task, "seed": s, "steps": budget,
                         "go_cells": g.cells, "plain_cells": p.cells,
                         "go_best": round(g.best_score, 3), "plain_best": round(p.best_score, 3),
                         "go_won": g.won, "plain_won": p.won,
                         "go_s": round(g.seconds, 1), "plain_s": round(p.seconds, 1)})
    finally:
        env.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-tw", type=int, default=1500)
    ap.add_argument("--budget-babyai", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--explore-steps", type=int, default=20)
    ap.add_argument("--timing-steps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "explore.json")
    args = ap.parse_args()

    print("== step time per family (ms, mean) ==")
    timing = {"Game24-v0": time_game24(args.timing_steps)}
    for name, make in [("TextWorld-v0 (simple L1)", lambda: TextWorldEnv(num_games=1)),
                       ("TextWorld-Coin-v0 (L15)", lambda: TextWorldEnv(challenge="coin", level=15, num_games=1)),
                       ("BabyAI-GoToLocal-v0", lambda: BabyAIEnv(levels="GoToLocal", num_tasks=1)),
                       ("BabyAI-KeyCorridorS3R1", lambda: BabyAIEnv(levels="KeyCorridorS3R1", num_tasks=1))]:
        env = make()
        try:
            timing[name] = time_steps(env, args.timing_steps)
        finally:
            env.close()
    if scienceworld_unavailable() is None:
        env = ScienceWorldEnv(task_names=["boil"], max_variations=1)
        try:
            env.reset(seed=0)  # the JVM start is not timed
            timing["ScienceWorld-v0 (boil)"] = time_steps(env, 20)
        finally:
            env.close()
    else:
        print(f"ScienceWorld skipped: {scienceworld_unavailable()}")
    for name, t in timing.items():
        print(f"{name:28s} " + "  ".join(f"{k} {v:7.2f}" for k, v in t.items()))

    settings = [
        ("TextWorld simple L1", lambda: TextWorldEnv(challenge="simple", level=1, num_games=args.seeds),
         args.budget_tw),
        ("TextWorld coin L15", lambda: TextWorldEnv(challenge="coin", level=15, num_games=args.seeds),
         args.budget_tw),
        ("BabyAI GoToLocal", lambda: BabyAIEnv(levels="GoToLocal", num_tasks=args.seeds), args.budget_babyai),
        ("BabyAI KeyCorridorS3R1", lambda: BabyAIEnv(levels="KeyCorridorS3R1", num_tasks=args.seeds),
         args.budget_babyai),
    ]
    results = {}
    print("\n== Go-Explore vs plain exploration (random admissible commands, same env steps) ==")
    header = (f"{'setting':24s} {'seed':>4s} {'steps':>6s} | {'cells GE':>8s} {'plain':>6s} | "
              f"{'best GE':>7s} {'plain':>6s} | {'won GE':>6s} {'plain':>6s}")
    print(header)
    print("-" * len(header))
    for name, make, budget in settings:
        rows = compare(make, budget, args.seeds, args.explore_steps)
        results[name] = rows
        for r in rows:
            print(f"{name:24s} {r['seed']:4d} {r['steps']:6d} | {r['go_cells']:8d} {r['plain_cells']:6d} | "
                  f"{r['go_best']:7.3f} {r['plain_best']:6.3f} | {str(r['go_won']):>6s} {str(r['plain_won']):>6s}")
        mean = lambda k: statistics.mean(r[k] for r in rows)  # noqa: E731
        print(f"{name + ' (mean)':24s} {'':4s} {budget:6d} | {mean('go_cells'):8.1f} {mean('plain_cells'):6.1f} | "
              f"{mean('go_best'):7.3f} {mean('plain_best'):6.3f} | "
              f"{sum(r['go_won'] for r in rows):>4d}/{len(rows)} {sum(r['plain_won'] for r in rows):>4d}/{len(rows)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"timing_ms": timing, "comparison": results,
                                    "config": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
