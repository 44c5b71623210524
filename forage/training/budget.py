"""Rollout budget: drop zero-variance groups, and Knapsack-RL's allocation of samples over tasks.

Knapsack-RL (Li et al. 2025, "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget
Allocation") gives a task with success rate p and N rollouts the value

    Value(N, p) = (1 - p^N - (1 - p)^N) · p(1 - p)^2

(the chance that the group is not all-equal, i.e. carries a GRPO gradient, times InfoGain(p) ≈
p(1 - p)^2) and maximises the total value under the sample budget. Value is concave in N, so
handing out samples one at a time to the largest marginal gain is the knapsack optimum.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Hashable, Sequence

from .config import BudgetConfig

__all__ = ["zero_variance_groups", "TaskStats", "allocate", "task_value", "info_gain"]


def zero_variance_groups(rewards: Sequence[float], groups: Sequence[Hashable], tol: float = 1e-8) -> set[Hashable]:
    """Groups whose rewards are all equal (their group-relative advantages are all 0)."""
    by: dict[Hashable, list[float]] = {}
    for r, g in zip(rewards, groups):
        by.setdefault(g, []).append(float(r))
    return {g for g, rs in by.items() if max(rs) - min(rs) <= tol}


class TaskStats:
    """Per-task success rate from the task's last ``window`` rollout groups (older ones are forgotten).

    Knapsack-RL estimates p from the previous epoch's rollouts of the prompt (window 1). ``prior``
    adds pseudo-successes and pseudo-failures; a task never rolled out has p = 1/2.
    """

    def __init__(self, prior: float = 0.0, window: int = 1) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.prior = float(prior)
        self.groups: dict[str, deque[tuple[float, float]]] = {}

    def record(self, groups: Sequence[str], successes: Sequence[float]) -> None:
        """Add one step's episodes: one (successes, tries) entry per task in the batch."""
        agg: dict[str, list[float]] = {}
        for g, s in zip(groups, successes):
            a = agg.setdefault(str(g), [0.0, 0.0])
            a[0] += float(s > 0)
            a[1] += 1.0
        for g, (succ, tries) in agg.items():
            self.groups.setdefault(g, deque(maxlen=self.window)).append((succ, tries))

    def p(self, task: str) -> float:
        """Estimated success rate of ``task``."""
        entries = self.groups.get(str(task))
        succ = sum(s for s, _ in entries) if entries else 0.0
        tries = sum(n for _, n in entries) if entries else 0.0
        if tries + 2 * self.prior <= 0:
            return 0.5
        return (succ + self.prior) / (tries + 2 * self.prior)

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "groups": {g: [list(e) for e in d] for g, d in self.groups.items()}}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.groups = {g: deque((tuple(e) for e in es), maxlen=self.window) for g, es in d.get("groups", {}).items()}


def info_gain(p: float) -> float:
    """Knapsack-RL's InfoGain(p) ≈ p(1 - p)^2 (the expected rise of the success rate after a step)."""
    return p * (1.0 - p) ** 2


def task_value(p: float, n: int) -> float:
    """Knapsack-RL's Value(n, p) = P(the n rewards are not all equal) · InfoGain(p)."""
    if n <= 0:
        return 0.0
    return (1.0 - p ** n - (1.0 - p) ** n) * info_gain(p)


def allocate(tasks: Sequence[str], total: int, stats: TaskStats, cfg: BudgetConfig) -> dict[str, int]:
    """Samples per task summing to ``total`` (if the caps allow): each gets ``min_group``, the rest go
    one by one to the largest marginal value, capped at ``max_group``. Once no task gains (every
    estimate is 0 or 1), the leftover goes to the lowest estimated success rate first, as
    Knapsack-RL's fallback hands spare budget to unsolved tasks."""
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        return {}
    lo = max(1, min(cfg.min_group, total // len(tasks)))
    alloc = {t: lo for t in tasks}
    ps = {t: stats.p(t) for t in tasks}
    left = total - lo * len(tasks)
    while left > 0:
        open_ = [t for t in tasks if alloc[t] < cfg.max_group]
        if not open_:
            break
        gains = {t: task_value(ps[t], alloc[t] + 1) - task_value(ps[t], alloc[t]) for t in open_}
        best = max(open_, key=lambda t: (round(gains[t], 12), -ps[t], -alloc[t]))
        alloc[best] += 1
        left -= 1
    return alloc
