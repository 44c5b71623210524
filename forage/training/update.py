"""Gradient accumulation for one term of a step's loss (the on-policy PG term or the replay's SIL term).

:func:`accumulate` runs the micro-batches of a set of episodes through the model and
back-propagates ``weight x`` the aggregated loss, normalised over the *whole* set (so the sum of
micro-batch gradients is the full-batch gradient, whatever the packing). The trainer calls it
once for the PG term and once for the SIL term, then takes one optimizer step: the replay weight
scales the replay's gradient, and weight 0 adds exactly nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..agents.trajectory import Trajectory
from . import losses as L
from .config import CovConfig
from .model import Reference, token_logps
from .packing import collate, pack_by_tokens, policy_tokens, policy_window

__all__ = ["LossTerm", "accumulate", "micro_batches", "recompute_logprobs"]


@dataclass
class LossTerm:
    """What one loss term needs besides the model: clip range, covariance control, KL, entropy, weight."""

    clip_low: float
    clip_high: float
    cov: CovConfig
    loss_agg: str
    norm_len: float                    # Dr.GRPO's constant (seq-mean-token-sum-norm)
    temperature: float = 1.0
    weight: float = 1.0
    clamp_negative: bool = False       # SIL: advantages below 0 count as 0
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    generator: torch.Generator | None = None
    old_is_current: bool = False       # the old log-probs are this pass's own, detached (exact for one epoch):
    #                                    the episodes' behaviour log-probs are replaced by them, as a recompute would


def micro_batches(trajs: Sequence[Trajectory], max_tokens: int, pad: int, device: torch.device):
    """(indices, policy window, tensors) of each packed micro-batch that holds policy tokens; ``mask`` and
    ``old`` are aligned with :func:`token_logps`' output."""
    for idx in pack_by_tokens([len(t.token_ids) for t in trajs], max_tokens):
        batch = collate([trajs[i] for i in idx], pad)
        keep = policy_window(batch["loss_mask"])
        if keep is None:
            continue
        T = batch["loss_mask"].shape[1]
        yield idx, keep, {
            "input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
            "mask": batch["loss_mask"][:, T - keep + 1:].to(device), "old": batch["old_logp"][:, T - keep + 1:].to(device),
        }


def accumulate(model: Any, trajs: Sequence[Trajectory], advantages: Sequence[float], term: LossTerm,
               micro_batch_tokens: int, pad: int, reference: Reference | None = None,
               num_tokens: float | None = None, num_seqs: float | None = None) -> dict[str, float]:
    """Back-propagate ``term.weight x`` the term's loss over ``trajs`` (gradients add up in ``.grad``).

    Returns per-token means over the term's policy tokens: ``entropy``, ``clipfrac``, ``kl``,
    ``ratio_mean``, ``ratio_max_dev`` (max |ratio - 1|), ``logp_gap`` (mean |log-prob - behaviour log-prob|:
    the train/rollout mismatch of precision and kernels, before any update), ``recompute_gap`` (with
    ``term.old_is_current``: mean |log-prob - the episodes' log-probs before this pass replaced them|, what
    :func:`recompute_logprobs` returns), the counts ``cov_removed`` / ``cov_penalised`` / ``tokens``, and
    ``loss`` (the term's unweighted loss). ``num_tokens`` / ``num_seqs``
    (default: those of ``trajs``) are the loss's normalisers: a rank passes the whole batch's.
    """
    device = next(model.parameters()).device
    # the normalisers: this set's counts, or the whole batch's when ``trajs`` is one rank's share of it
    num_tokens = float(num_tokens if num_tokens is not None else sum(policy_tokens(t) for t in trajs)) or 1.0
    num_seqs = float(num_seqs if num_seqs is not None else len(trajs)) or 1.0
    adv_all = torch.tensor([float(a) for a in advantages], dtype=torch.float32)
    if term.clamp_negative:
        adv_all = adv_all.clamp(min=0.0)
    st = {"loss": 0.0, "entropy": 0.0, "clipfrac": 0.0, "kl": 0.0, "ratio_mean": 0.0, "ratio_max_dev": 0.0, "logp_gap": 0.0,
          "recompute_gap": 0.0, "cov_removed": 0.0, "cov_penalised": 0.0}
    for idx, keep, b in micro_batches(trajs, micro_batch_tokens, pad, device):
        mask = b["mask"]
        adv = adv_all[idx][:, None].to(device) * mask
        ref = None
        if term.kl_coef > 0:   # before the policy forward: a LoRA reference swaps adapter values in place
            if reference is None:
                raise RuntimeError("kl_coef > 0 needs a reference policy")
            ref = reference.logps(b["input_ids"], b["attention_mask"], keep, term.temperature)
        logp, ent = token_logps(model, b["input_ids"], b["attention_mask"], keep, term.temperature,
                                with_entropy=True, entropy_grad=term.entropy_coef != 0)
        if term.old_is_current:   # one epoch: a separate no-grad pass would compute exactly these values
            st["recompute_gap"] += float(((logp.detach() - b["old"]).abs() * mask).sum())
            b["old"] = logp.detach()
            _write_logprobs(trajs, idx, keep, b["input_ids"].shape[1], b["old"])
        pl = L.policy_loss(logp, b["old"], adv, mask, term.clip_low, term.clip_high, term.cov, term.generator)
        per_tok = pl.per_token
        if ref is not None:
            kl = L.kl_penalty(logp, ref, term.kl_estimator)
            per_tok = per_tok + term.kl_coef * kl
            st["kl"] += float((kl.detach() * mask).sum())
        if term.entropy_coef != 0:
            per_tok = per_tok - term.entropy_coef * ent
        loss = L.aggregate(per_tok, mask, term.loss_agg, num_tokens=num_tokens, num_seqs=num_seqs,
                           norm_len=term.norm_len)
        if term.weight != 0:   # weight 0: exactly no gradient (and no graph kept)
            (loss * term.weight).backward()
        st["loss"] += float(loss.detach())
        st["entropy"] += float((ent.detach() * mask).sum())
        st["clipfrac"] += float((pl.clipped.float() * mask).sum())
        ratio = pl.ratio.detach()
        st["ratio_mean"] += float((ratio * mask).sum())
        st["logp_gap"] += float(((logp.detach() - b["old"]).abs() * mask).sum())
        dev = ((ratio - 1.0).abs() * mask)
        st["ratio_max_dev"] = max(st["ratio_max_dev"], float(dev.max()) if dev.numel() else 0.0)
        st["cov_removed"] += pl.cov_removed
        st["cov_penalised"] += pl.cov_penalised
    for k in ("entropy", "clipfrac", "kl", "ratio_mean", "logp_gap", "recompute_gap"):
        st[k] /= num_tokens
    st["tokens"] = num_tokens
    return st


def _write_logprobs(trajs: Sequence[Trajectory], idx: Sequence[int], keep: int, width: int,
                    logp: torch.Tensor) -> tuple[float, int]:
    """Store a micro-batch's log-probs (``token_logps``' output over the last ``keep`` positions of a
    ``width``-wide batch) as its episodes' behaviour log-probs; returns (sum |new - old|, count)."""
    moved, n = 0.0, 0
    start = width - keep + 1
    vals = logp.detach().float().cpu().tolist()
    for row, i in enumerate(idx):
        t = trajs[i]
        lp = list(t.logprobs)
        for j in range(keep - 1):
            pos = start + j
            if pos < len(t.token_ids) and t.loss_mask[pos]:
                v = vals[row][j]
                moved += abs(v - lp[pos])
                n += 1
                lp[pos] = v
        t.logprobs = lp
    return moved, n


def recompute_logprobs(model: Any, trajs: Sequence[Trajectory], temperature: float, micro_batch_tokens: int,
                       pad: int) -> float:
    """Replace the episodes' behaviour log-probs by the model's own under ``logits / temperature`` (as verl
    recomputes ``old_log_prob``); returns the mean |new - old| over policy tokens."""
    device = next(model.parameters()).device
    moved, n = 0.0, 0
    with torch.no_grad():
        for idx, keep, b in micro_batches(trajs, micro_batch_tokens, pad, device):
            logp, _ = token_logps(model, b["input_ids"], b["attention_mask"], keep, temperature)
            m, c = _write_logprobs(trajs, idx, keep, b["input_ids"].shape[1], logp)
            moved, n = moved + m, n + c
    return moved / n if n else 0.0
