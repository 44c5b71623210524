"""Group-relative advantages: GRPO, Dr.GRPO (no std normalisation) and RLOO."""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

__all__ = ["group_advantages", "group_stats", "token_advantages"]


def group_stats(rewards: Sequence[float], groups: Sequence[Hashable],
                valid: Sequence[bool] | None = None) -> dict[Hashable, tuple[float, float, int]]:
    """Per group: (mean, population std, size) over the episodes marked valid (default all)."""
    by: dict[Hashable, list[float]] = {}
    for i, (r, g) in enumerate(zip(rewards, groups)):
        if valid is None or valid[i]:
            by.setdefault(g, []).append(float(r))
    out = {}
    for g, rs in by.items():
        t = torch.tensor(rs, dtype=torch.float64)
        out[g] = (float(t.mean()), float(t.std(unbiased=False)), len(rs))
    return out


def group_advantages(rewards: Sequence[float] | torch.Tensor, groups: Sequence[Hashable],
                     method: str = "grpo", eps: float = 1e-6, valid: Sequence[bool] | None = None) -> torch.Tensor:
    """One scalar advantage per episode, relative to the other episodes of its group.

    ``grpo``: (r - mean) / (std + eps) (unbiased std, as GRPO); ``drgrpo``: r - mean;
    ``rloo``: r - mean of the *other* episodes. A group of one gets 0. Episodes with
    ``valid[i]`` False (errored: their reward says nothing about the policy) get 0 and do not
    enter their group's statistics.
    """
    r = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if len(groups) != r.numel():
        raise ValueError(f"{r.numel()} rewards but {len(groups)} group labels")
    if method not in ("grpo", "drgrpo", "rloo"):
        raise ValueError(f"unknown advantage method {method!r}; use grpo, drgrpo or rloo")
    adv = torch.zeros_like(r)
    index: dict[Hashable, list[int]] = {}
    if valid is not None and len(valid) != r.numel():
        raise ValueError(f"{r.numel()} rewards but {len(valid)} validity flags")
    for i, g in enumerate(groups):
        if valid is None or valid[i]:
            index.setdefault(g, []).append(i)
    for idx in index.values():
        if len(idx) < 2:
            continue
        x = r[idx]
        mean = x.mean()
        if method == "grpo":
            adv[idx] = (x - mean) / (x.std(unbiased=True) + eps)
        elif method == "drgrpo":
            adv[idx] = x - mean
        else:
            n = len(idx)
            adv[idx] = (x - (x.sum() - x) / (n - 1))
    return adv


def token_advantages(adv: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sequence advantages [B] over tokens [B, T] (0 where the mask is 0)."""
    return adv[:, None].to(loss_mask.dtype if loss_mask.is_floating_point() else torch.float32) * loss_mask
