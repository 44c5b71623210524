"""Steps/s and per-step overhead of LookupQA-v0 with a scripted (oracle) policy.

Sync (one env, step by step) and async (1, 64, 512 concurrent episodes on one event loop),
printed beside two baselines measured in the same run: the floor (the bare dict lookup that the
`lookup` tool wraps) and a minimal tool step (a regex finds ``<lookup>name</lookup>``, the dict
answers, an f-string wraps the result: the work GEM's and SkyRL-gym's search steps do). The sync
rows time each reset and step on its own (the oracle's actions are written before the clock starts).

    .venv/bin/python benchmarks/env_overhead.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import gymnasium as gym

import forage  # noqa: F401
from forage.envs.lookup import LookupQAEnv


def bench_dict_floor(env: LookupQAEnv, n: int) -> float:
    """Seconds per bare lookup in the knowledge base dict (the work a step really needs)."""
    names = [t.metadata["path"][0] for t in env.tasks]
    kb = env.kb.entities
    t0 = time.perf_counter()
    for i in range(n):
        kb.get(names[i % len(names)])
    return (time.perf_counter() - t0) / n


def bench_minimal_step(env: LookupQAEnv, n: int) -> float:
    """Seconds per minimal tool step: regex parse, dict lookup, formatted result (no validation, no info)."""
    kb = {name: ent.describe() for name, ent in env.kb.entities.items()}
    actions = [f"<lookup>{t.metadata['path'][0]}</lookup>" for t in env.tasks]
    pattern = re.compile(r"<lookup>(.*?)</lookup>", re.DOTALL)
    t0 = time.perf_counter()
    for i in range(n):
        m = pattern.search(actions[i % len(actions)])
        text = kb.get(m.group(1).strip()) if m else None
        _ = f"\n<information>{text or 'No results.'}</information>\n"
    return (time.perf_counter() - t0) / n


def bench_sync(n_steps: int, tool_format: str = "hermes") -> tuple[float, int, float]:
    """(step seconds, steps, mean reset seconds): each call timed on its own."""
    env = gym.make("forage/LookupQA-v0", tool_format=tool_format).unwrapped
    plans = []
    for seed in range(len(env.tasks)):
        env.reset(seed=seed)
        plans.append(env.oracle_actions(env.episode.task))
    clock = time.perf_counter
    steps = resets = 0
    t_step = t_reset = 0.0
    while steps < n_steps:
        seed = resets % len(plans)
        t0 = clock()
        env.reset(seed=seed)
        t_reset += clock() - t0
        resets += 1
        for action in plans[seed]:
            t0 = clock()
            env.step(action)
            t_step += clock() - t0
            steps += 1
    env.close()
    return t_step, steps, t_reset / resets


async def bench_async(concurrency: int, n_steps: int) -> tuple[float, int]:
    envs = [LookupQAEnv() for _ in range(concurrency)]
    per_env = max(1, n_steps // concurrency)
    counts = [0] * concurrency

    async def drive(i: int, env: LookupQAEnv) -> None:
        seed = i * 100_000
        while counts[i] < per_env:
            await env.areset(seed=seed)
            seed += 1
            for action in env.oracle_actions(env.episode.task):
                await env.astep(action)
                counts[i] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(drive(i, e) for i, e in enumerate(envs)))
    return time.perf_counter() - t0, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (this machine is shared)")
    args = parser.parse_args()
    probe = LookupQAEnv()
    floor = min(bench_dict_floor(probe, 200_000) for _ in range(args.repeat))
    minimal = min(bench_minimal_step(probe, 200_000) for _ in range(args.repeat))

    def best(run) -> tuple[int, float]:
        results = [run() for _ in range(args.repeat)]
        secs, steps = min(results, key=lambda r: r[0] / r[1])[:2]
        return steps, secs

    sync_rows = {fmt: [bench_sync(args.steps, fmt) for _ in range(args.repeat)] for fmt in ("hermes", "xml")}
    rows = []
    for fmt, results in sync_rows.items():
        secs, steps, _ = min(results, key=lambda r: r[0] / r[1])
        rows.append((f"sync step ({fmt})", steps, secs))
    for c in (1, 64, 512):
        rows.append((f"async, {c} concurrent*", *best(lambda: asyncio.run(bench_async(c, args.steps)))))
    print(f"floor: bare dict lookup = {floor * 1e6:.3f} us; minimal tool step (regex + dict + f-string) = "
          f"{minimal * 1e6:.2f} us (best of {args.repeat} runs each)")
    print(f"{'mode':<28}{'steps':>8}{'steps/s':>12}{'us/step':>10}{'x minimal':>11}{'x floor':>10}")
    for name, steps, secs in rows:
        per = secs / steps
        print(f"{name:<28}{steps:>8}{steps / secs:>12,.0f}{per * 1e6:>10.1f}{per / minimal:>11.1f}{per / floor:>10,.0f}")
    for fmt, results in sync_rows.items():
        print(f"sync reset ({fmt}): {min(r[2] for r in results) * 1e6:.1f} us")
    print("* async rows time whole episodes (resets and the oracle writing its calls included)")


if __name__ == "__main__":
    main()
