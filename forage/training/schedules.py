"""Curriculum schedules: scalars over training steps, SPEAR's tool-call reward (two rules), entropy-driven scaling."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import CurriculumConfig, ScheduleConfig

__all__ = ["Schedule", "tool_call_reward", "EntropyScaler", "cosine_decay", "cosine_ramp"]


def cosine_decay(t: float, period: float) -> float:
    """(cos(pi t / T) + 1) / 2 for t <= T, then 0."""
    if period <= 0 or t >= period:
        return 0.0
    return (math.cos(math.pi * t / period) + 1.0) / 2.0


def cosine_ramp(t: float, period: float) -> float:
    """(1 - cos(pi t / T)) / 2 for t <= T, then 1."""
    if period <= 0 or t >= period:
        return 1.0
    return (1.0 - math.cos(math.pi * max(t, 0.0) / period)) / 2.0


@dataclass
class Schedule:
    """A scalar of the training step built from a :class:`ScheduleConfig`."""

    cfg: ScheduleConfig

    def __call__(self, step: int) -> float:
        c = self.cfg
        t = step - c.warmup
        if t < 0:
            return 0.0
        if c.kind == "constant":
            return c.value
        if c.kind == "cosine_decay":
            return c.value * cosine_decay(t, c.period)
        if c.kind == "cosine_ramp":
            return c.value * cosine_ramp(t, c.period)
        if c.kind == "linear":
            start = c.value if c.start is None else c.start
            frac = min(1.0, t / c.period) if c.period > 0 else 1.0
            return start + (c.end - start) * frac
        if c.kind == "step":
            return c.value if t < c.period else c.end
        raise ValueError(f"unknown schedule kind {c.kind!r}; use constant, linear, cosine_decay, cosine_ramp or step")


class EntropyScaler:
    """Scales a schedule by how far the measured entropy is below a target (more exploration reward
    while entropy is low), clamped to [0, 2]; 1 when no target is set or nothing was measured."""

    def __init__(self, target: float | None, gain: float = 1.0) -> None:
        self.target = target
        self.gain = gain
        self.last_entropy: float | None = None

    def observe(self, entropy: float) -> None:
        """Record the entropy measured this step."""
        self.last_entropy = float(entropy)

    def factor(self) -> float:
        """Multiplier for the scheduled value."""
        if self.target is None or self.last_entropy is None or self.target <= 0:
            return 1.0
        return max(0.0, min(2.0, 1.0 + self.gain * (self.target - self.last_entropy) / self.target))

    def state_dict(self) -> dict:
        return {"last_entropy": self.last_entropy}

    def load_state_dict(self, d: dict) -> None:
        self.last_entropy = d.get("last_entropy")


def tool_call_reward(num_tool_calls: int, success: float | bool, step: int, cfg: CurriculumConfig,
                     scale: float = 1.0) -> float:
    """SPEAR's tool-call reward for one episode with k = ``num_tool_calls`` non-terminal calls.

    ``rule`` all: min(cap, per_call·k)·schedule(step); ``qwen3``: that for a failure, and
    cap·1[k > 0]·schedule(step) for a success (``success`` > 0). ``scale``: the entropy factor.
    """
    if not cfg.tool_call_reward:
        return 0.0
    k = max(0, int(num_tool_calls))
    if cfg.rule == "qwen3" and success > 0:
        base = cfg.cap * float(k > 0)
    elif cfg.rule in ("all", "qwen3"):
        base = min(cfg.cap, cfg.per_call * k)
    else:
        raise ValueError(f"curriculum.rule must be 'all' or 'qwen3', got {cfg.rule!r}")
    return base * Schedule(cfg.schedule)(step) * scale
