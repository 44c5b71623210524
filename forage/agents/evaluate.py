"""Evaluation: run a policy on an env's tasks, K samples each, and report what a paper would.

Metrics: success rate, unbiased pass@k (Chen et al. 2021: ``1 - C(n-c, k) / C(n, k)`` per task,
averaged), mean turns / tool calls / generated tokens, the rate of errored and truncated
episodes, and answer-level entropy (the Shannon entropy, in nats, of the distribution of a
task's normalised final answers across its K samples, averaged over tasks; "no answer" counts as
one answer). Results go to ``runs/<name>/trajectories.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .trajectory import Trajectory, save_jsonl

__all__ = ["pass_at_k", "answer_entropy", "is_success", "group_key", "summarize", "EvalConfig", "evaluate_tasks",
           "eval_task_list"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (needs ``k <= n``)."""
    if k <= 0 or n <= 0:
        raise ValueError("n and k must be positive")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i), numerically stable
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def _norm_answer(a: str | None) -> str:
    if a is None:
        return "<no answer>"
    try:
        from ..envs.rewards import normalize_answer

        return normalize_answer(a)
    except Exception:  # pragma: no cover
        return " ".join(a.lower().split())


def answer_entropy(answers: Iterable[str | None]) -> float:
    """Shannon entropy (nats) of the normalised answers (None counts as one answer)."""
    counts = Counter(_norm_answer(a) for a in answers)
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return float(-sum((c / total) * math.log(c / total) for c in counts.values()))


def is_success(t: Trajectory) -> bool:
    """An episode succeeded if its ``correct``/``success``/``pass`` component is positive (else reward > 0)."""
    if t.error:
        return False
    for key in ("correct", "success", "pass", "passed", "solved"):
        if key in t.reward_components:
            return t.reward_components[key] > 0.5
    return t.reward > 0


def group_key(t: Trajectory) -> str:
    """The group an episode belongs to: its ``group`` (set by the rollout engine), else its task id."""
    return str(t.group) if t.group is not None else str(t.task_id)


def summarize(trajs: Sequence[Trajectory], ks: Sequence[int] | None = None,
              success: Callable[[Trajectory], bool] = is_success) -> dict[str, Any]:
    """Aggregate metrics and per-task results of grouped trajectories."""
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajs:
        by_task.setdefault(group_key(t), []).append(t)
    n_min = min((len(v) for v in by_task.values()), default=0)
    ks = sorted({k for k in (ks or [1, n_min]) if 1 <= k <= n_min}) if n_min else []
    per_task = []
    for task_id, ts in by_task.items():
        c = sum(success(t) for t in ts)
        per_task.append({
            "task_id": task_id,
            "samples": len(ts),
            "successes": c,
            **{f"pass@{k}": pass_at_k(len(ts), c, k) for k in ks},
            "answers": dict(Counter(_norm_answer(t.answer) for t in ts)),
            "answer_entropy": answer_entropy(t.answer for t in ts),
            "mean_reward": sum(t.reward for t in ts) / len(ts),
            "errors": sum(bool(t.error) for t in ts),
        })
    n = len(trajs) or 1

    def mean(xs: Iterable[float]) -> float:
        xs = list(xs)
        return float(sum(xs) / len(xs)) if xs else 0.0

    stop_reasons = Counter(t.stop_reason or "none" for t in trajs)
    summary: dict[str, Any] = {
        "episodes": len(trajs),
        "tasks": len(by_task),
        "success_rate": sum(success(t) for t in trajs) / n,
        **{f"pass@{k}": mean(p[f"pass@{k}"] for p in per_task) for k in ks},
        "mean_reward": mean(t.reward for t in trajs),
        "mean_turns": mean(t.num_turns for t in trajs),
        "mean_tool_calls": mean(t.num_tool_calls for t in trajs),
        "mean_generated_tokens": mean(t.num_generated for t in trajs),
        "mean_total_tokens": mean(len(t.token_ids) for t in trajs),
        "answer_entropy": mean(p["answer_entropy"] for p in per_task),
        "answered_rate": sum(t.answer is not None for t in trajs) / n,
        "truncated_rate": sum(t.truncated for t in trajs) / n,
        "error_rate": sum(bool(t.error) for t in trajs) / n,
        "stop_reasons": dict(stop_reasons),
        "reward_components": {k: mean(t.reward_components.get(k, 0.0) for t in trajs)
                              for k in sorted({k for t in trajs for k in t.reward_components})},
        "per_task": per_task,
    }
    return summary


@dataclass
class EvalConfig:
    """What to evaluate and where to write it."""

    env_id: str
    episodes: int = 20            # distinct tasks
    samples: int = 1              # samples per task (K)
    ks: list[int] = field(default_factory=list)
    out_dir: Path = Path("runs/eval")
    task_seed: int = 0            # which tasks (a seeded permutation of the env's task list)


def eval_task_list(env: Any, n: int, seed: int = 0) -> list[str]:
    """``n`` task ids from ``env`` (a seeded permutation, so hop counts and kinds mix)."""
    import numpy as np

    env = getattr(env, "unwrapped", env)
    ids = [t.id for t in env.tasks]
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order[: min(n, len(ids))]]


async def evaluate_tasks(run: Callable[..., Any], cfg: EvalConfig, task_ids: Sequence[str],
                         progress: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call ``run(task_ids, group_size, progress=..., on_done=...)`` and write the JSONL and summary."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traj_path = out / "trajectories.jsonl"
    traj_path.write_text("")
    t0 = time.perf_counter()

    def write(t: Trajectory) -> None:  # stream results as they finish
        save_jsonl([t], traj_path, append=True)

    trajs = await run(list(task_ids), cfg.samples, progress=progress, on_done=write)
    wall = time.perf_counter() - t0
    save_jsonl(trajs, traj_path)  # final file in task order
    summary = summarize(trajs, cfg.ks or None)
    gen = sum(t.num_generated for t in trajs)
    summary.update({"env_id": cfg.env_id, "samples": cfg.samples, "wall_s": round(wall, 2),
                    "generated_tokens_per_s": round(gen / wall, 2) if wall > 0 else 0.0,
                    "trajectories": str(traj_path), **(extra or {})})
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
