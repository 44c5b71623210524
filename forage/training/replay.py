"""SPEAR's self-imitation replay buffer: admit, recalibrate, trigger, take, clear.

As the authors' code runs it (TencentYoutuResearch/SPEAR, ``TrajectoryBufferBatch`` in
``ray_trainer_hybrid.py``):

- **admit** (after the update): the episodes that trained (survived the filters) with advantage > 0,
  with their behaviour log-probs and the step; the per-group mean/std rewards of the groups that
  trained go to the baseline history (``history`` group means, SPEAR's ``baseline_buffer_size``);
- **expire**: entries made more than ``tolerance`` steps ago are dropped;
- **trigger**: the buffer fires once the entries whose reward is above the baseline median
  exceed ``trigger_factor`` x ``capacity`` (``trigger: min_size`` instead fires from ``min_size``);
- **take** (before the current step's episodes are admitted, so nothing is replayed in the step it
  was made): recalibrate Â = R - p50(history) (/ p50 std with ``divide_std``), keep Â >= 0, take a
  random power-of-two subset (at most ``capacity``), then **clear** the buffer.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np

from ..agents.evaluate import group_key
from ..agents.trajectory import Trajectory
from .config import ReplayConfig

__all__ = ["ReplayEntry", "ReplayBuffer", "power_of_two_below"]


@dataclass
class ReplayEntry:
    """A stored episode: its (shaped) reward, the advantage it had when made, and the step it was made at."""

    traj: Trajectory
    reward: float
    advantage: float
    step: int

    @property
    def task(self) -> str:
        """The episode's group key (its task)."""
        return group_key(self.traj)


def power_of_two_below(n: int) -> int:
    """The largest power of two <= n, and 0 for n <= 1 (SPEAR's ``nearest_lower_power_of_2``)."""
    return 0 if n <= 1 else 1 << (n.bit_length() - 1)


class ReplayBuffer:
    """Episodes whose advantage was > 0, with their behaviour log-probs (kept in the trajectory)."""

    def __init__(self, cfg: ReplayConfig | None = None) -> None:
        self.cfg = cfg or ReplayConfig()
        self.entries: list[ReplayEntry] = []
        self.means: deque[float] = deque(maxlen=self.cfg.history)
        self.stds: deque[float] = deque(maxlen=self.cfg.history)
        self.task_means: dict[str, deque[float]] = {}
        self.task_stds: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    # -- filling ------------------------------------------------------------------------------
    def record_groups(self, stats: dict[Hashable, tuple[float, float, int]]) -> None:
        """Append per-group (mean, std, size) rewards of the groups that trained to the baseline history."""
        for g, (mean, std, _n) in stats.items():
            self.means.append(float(mean))
            self.stds.append(float(std))
            key = str(g)
            self.task_means.setdefault(key, deque(maxlen=self.cfg.history)).append(float(mean))
            self.task_stds.setdefault(key, deque(maxlen=self.cfg.history)).append(float(std))

    def add(self, trajs: Sequence[Trajectory], rewards: Sequence[float], advantages: Sequence[float], step: int) -> int:
        """Store the episodes with advantage > 0 (pass only those that trained); returns how many were added."""
        added = 0
        for t, r, a in zip(trajs, rewards, advantages):
            if a > 0 and not t.error and t.num_generated > 0:
                self.entries.append(ReplayEntry(t, float(r), float(a), int(step)))
                added += 1
        if self.cfg.trigger == "min_size" and len(self.entries) > self.cfg.capacity:  # keep the newest
            self.entries = self.entries[-self.cfg.capacity:]
        return added

    def expire(self, step: int) -> int:
        """Drop entries made more than ``tolerance`` steps before ``step``; returns how many."""
        before = len(self.entries)
        self.entries = [e for e in self.entries if step - e.step <= self.cfg.tolerance]
        return before - len(self.entries)

    # -- using -------------------------------------------------------------------------------
    def baseline(self, task: str | None = None) -> tuple[float | None, float]:
        """(median of the group-mean rewards in the history, median of the group stds); (None, 1) when empty."""
        means, stds = self.means, self.stds
        if self.cfg.baseline_scope == "task" and task is not None and task in self.task_means:
            means, stds = self.task_means[task], self.task_stds[task]
        if not means:
            return None, 1.0
        return statistics.median(means), statistics.median(stds)

    def recalibrated(self, entry: ReplayEntry) -> float:
        """Â = R - median(history of group means) (/ median std with ``divide_std``); may be negative."""
        base, std = self.baseline(entry.task)
        if base is None:
            base = float(np.mean([e.reward for e in self.entries])) if self.entries else 0.0
        a = entry.reward - base
        if self.cfg.divide_std:
            a = a / (std + 1e-6)
        return a

    def above_baseline(self) -> int:
        """Entries whose reward is above the baseline median (SPEAR's ``get_buffer_size``)."""
        if not self.entries:
            return 0
        base, _ = self.baseline()
        if base is None:  # no history yet: above the stored rewards' mean, as SPEAR does per stored batch
            base = float(np.mean([e.reward for e in self.entries]))
        return sum(e.reward > base for e in self.entries)

    def ready(self) -> bool:
        """Whether the buffer fires this step (``trigger``)."""
        if self.cfg.trigger == "min_size":
            return len(self.entries) >= self.cfg.min_size
        return self.above_baseline() > self.cfg.trigger_factor * self.cfg.capacity

    def sample(self, rng: np.random.Generator) -> list[tuple[ReplayEntry, float]]:
        """(entry, Â) pairs with Â >= 0: ``batch_size`` of them (default SPEAR's power of two, <= capacity),
        uniformly or prioritised by Â^alpha. Does not clear the buffer (see :meth:`take`)."""
        scored = [(e, self.recalibrated(e)) for e in self.entries]
        scored = [(e, a) for e, a in scored if a >= 0]
        want = self.cfg.batch_size if self.cfg.batch_size is not None else power_of_two_below(len(scored))
        n = min(want, len(scored), self.cfg.capacity)
        if n <= 0:
            return []
        if self.cfg.sampling == "prioritized":
            p = np.array([a for _, a in scored], dtype=np.float64) ** self.cfg.priority_alpha
            n = min(n, int((p > 0).sum()))
            if n == 0:
                return []
            idx = rng.choice(len(scored), size=n, replace=False, p=p / p.sum())
        else:
            idx = rng.choice(len(scored), size=n, replace=False)
        return [scored[int(i)] for i in sorted(idx)]

    def take(self, rng: np.random.Generator) -> list[tuple[ReplayEntry, float]]:
        """If the trigger fires: :meth:`sample`, then clear the buffer (``clear_after_use``); else []."""
        if not self.ready():
            return []
        batch = self.sample(rng)
        if self.cfg.clear_after_use:
            self.entries = []
        return batch

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The stored entries and the baseline history (JSON-ready)."""
        return {
            "entries": [{"traj": e.traj.to_dict(), "reward": e.reward, "advantage": e.advantage, "step": e.step}
                        for e in self.entries],
            "means": list(self.means), "stds": list(self.stds),
            "task_means": {k: list(v) for k, v in self.task_means.items()},
            "task_stds": {k: list(v) for k, v in self.task_stds.items()},
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        h = self.cfg.history
        self.entries = [ReplayEntry(Trajectory.from_dict(e["traj"]), e["reward"], e["advantage"], e["step"])
                        for e in d.get("entries", [])]
        self.means = deque(d.get("means", []), maxlen=h)
        self.stds = deque(d.get("stds", []), maxlen=h)
        self.task_means = {k: deque(v, maxlen=h) for k, v in d.get("task_means", {}).items()}
        self.task_stds = {k: deque(v, maxlen=h) for k, v in d.get("task_stds", {}).items()}
