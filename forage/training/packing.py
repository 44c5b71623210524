"""Micro-batches packed by token count, and padded tensors for a set of trajectories."""

from __future__ import annotations

from typing import Sequence

import torch

from ..agents.trajectory import Trajectory

__all__ = ["pack_by_tokens", "collate", "policy_window", "policy_tokens"]


def pack_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped so that each micro-batch's padded size (rows x longest) stays <= max_tokens
    (first-fit over lengths sorted longest first; a too-long sequence gets its own batch)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    widths: list[int] = []
    for i in order:
        L = lengths[i]
        for b, idx in enumerate(batches):
            w = max(widths[b], L)
            if w * (len(idx) + 1) <= max_tokens:
                idx.append(i)
                widths[b] = w
                break
        else:
            batches.append([i])
            widths.append(L)
    return [sorted(b) for b in batches]


def collate(trajs: Sequence[Trajectory], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask, loss_mask and behaviour log-probs, [B, T]."""
    T = max(len(t.token_ids) for t in trajs)
    B = len(trajs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.float32)
    old = torch.zeros((B, T), dtype=torch.float32)
    for i, t in enumerate(trajs):
        n = len(t.token_ids)
        ids[i, :n] = torch.tensor(t.token_ids, dtype=torch.long)
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(t.loss_mask, dtype=torch.float32)
        old[i, :n] = torch.tensor(t.logprobs, dtype=torch.float32)
    mask[:, 0] = 0.0  # the first token has no prediction
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask, "old_logp": old}


def policy_window(loss_mask: torch.Tensor) -> int | None:
    """How many trailing positions (plus one, for the shifted logits) hold every policy token; None if none do."""
    pos = loss_mask.nonzero()
    if pos.numel() == 0:
        return None
    return loss_mask.shape[1] - int(pos[:, 1].min()) + 1


def policy_tokens(t: Trajectory) -> int:
    """Policy tokens of an episode that get a loss (the first token of a sequence has no prediction)."""
    return int(sum(t.loss_mask[1:]))
