"""Reward shaping of one training step: every term is a function of the step's batch as a set.

``shape`` adds to each episode's task reward SPEAR's tool-call reward, the count-based novelty
bonuses (episodic, global, their per-key product) and OTC's tool efficiency. It reads the history
(global key counts, OTC's fewest calls per group) but never changes it, so permuting the batch
permutes the shaped rewards and nothing else, identical episodes get identical rewards, and
calling it twice gives the same result. ``commit`` folds the step into the history afterwards.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from ..agents.trajectory import Trajectory
from .bonuses import episode_keys, non_terminal_tool_calls, novelty_values, otc_optimal_calls, otc_reward
from .config import BonusConfig, CurriculumConfig
from .schedules import Schedule, tool_call_reward

__all__ = ["RewardShaper"]

_NOVELTY = ("episodic_novelty", "global_novelty", "novelty_product")


class RewardShaper:
    """Shaped rewards for a batch (``shape``), history updated only after the step (``commit``)."""

    def __init__(self, curriculum: CurriculumConfig, bonus: BonusConfig) -> None:
        if bonus.otc_mode not in ("multiply", "add"):
            raise ValueError(f"bonus.otc_mode must be 'multiply' or 'add', got {bonus.otc_mode!r}")
        if curriculum.rule not in ("all", "qwen3"):
            raise ValueError(f"curriculum.rule must be 'all' or 'qwen3', got {curriculum.rule!r}")
        self.curriculum = curriculum
        self.bonus = bonus
        self.key_counts: dict[str, int] = {}    # global novelty: occurrences of each key at earlier steps
        self.otc_best: dict[str, int] = {}      # OTC: fewest calls of a correct episode per group, earlier steps

    def _novelty_on(self) -> bool:
        b = self.bonus
        return bool(b.episodic_novelty or b.global_novelty or b.novelty_product)

    def shape(self, trajs: Sequence[Trajectory], groups: Sequence[str], successes: Sequence[bool], step: int,
              tool_scale: float = 1.0) -> list[float]:
        """Task reward plus the weighted components of each episode; records ``reward_components
        ["shaping/<name>"]`` and ``metadata["shaped_reward"]``. Reads the history, never changes it."""
        if not (len(trajs) == len(groups) == len(successes)):
            raise ValueError(f"trajs, groups and successes differ in length ({len(trajs)}, {len(groups)}, {len(successes)})")
        b, c = self.bonus, self.curriculum
        groups = [str(g) for g in groups]
        ok = [bool(s) for s in successes]
        calls = [non_terminal_tool_calls(t) for t in trajs]
        bonus_scale = Schedule(b.schedule)(step)
        novelty = novelty_values([episode_keys(t) for t in trajs], self.key_counts, b.novelty_reduce) \
            if self._novelty_on() else [{} for _ in trajs]
        optimum = otc_optimal_calls(groups, calls, ok, self.otc_best, b.otc_history) if b.otc else {}
        out = []
        for i, t in enumerate(trajs):
            task_reward = float(t.reward)
            comps: dict[str, float] = {}
            shaped = task_reward
            if c.tool_call_reward:
                comps["tool_call_bonus"] = tool_call_reward(calls[i], float(ok[i]), step, c, tool_scale)
                shaped += comps["tool_call_bonus"]
            for name in _NOVELTY:
                weight = getattr(b, name)
                if self._novelty_on():
                    comps[name] = novelty[i][name]
                    shaped += weight * bonus_scale * comps[name]
            if b.otc:
                r_tool = otc_reward(calls[i], optimum[groups[i]], b.otc_c) if ok[i] else 0.0
                comps["otc"] = r_tool
                if b.otc_mode == "multiply":   # OTC-GRPO: r = α · r_tool · r_φ for a correct episode
                    if ok[i]:
                        shaped += b.otc * r_tool * task_reward - task_reward
                else:
                    shaped += b.otc * bonus_scale * r_tool
            for k, v in comps.items():
                t.reward_components[f"shaping/{k}"] = float(v)
            t.metadata["shaped_reward"] = shaped
            t.metadata["tool_calls_k"] = calls[i]
            out.append(shaped)
        return out

    def commit(self, trajs: Sequence[Trajectory], groups: Sequence[str], successes: Sequence[bool]) -> None:
        """Fold this step into the history: global key counts and OTC's fewest calls per group."""
        if self._novelty_on():
            for k, n in Counter(k for t in trajs for k in episode_keys(t)).items():
                self.key_counts[k] = self.key_counts.get(k, 0) + n
        if self.bonus.otc:
            calls = [non_terminal_tool_calls(t) for t in trajs]
            now = otc_optimal_calls([str(g) for g in groups], calls, [bool(s) for s in successes], {}, False)
            for g, m in now.items():
                self.otc_best[g] = min(self.otc_best.get(g, m), m)

    def state_dict(self) -> dict[str, Any]:
        return {"key_counts": dict(self.key_counts), "otc_best": dict(self.otc_best)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.key_counts = {str(k): int(v) for k, v in st.get("key_counts", {}).items()}
        self.otc_best = {str(k): int(v) for k, v in st.get("otc_best", {}).items()}
