"""Token-level losses, one function each, on [batch, tokens] tensors with a 0/1 policy-token mask.

Every per-token function returns a tensor shaped like its inputs; :func:`aggregate` turns it into
the scalar to back-propagate. Masked (prompt / tool-result / padding) tokens never contribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "masked_mean", "aggregate", "policy_gradient_loss", "ppo_clip_loss", "kl_penalty", "entropy_from_logits",
    "token_covariance", "clip_cov_keep", "kl_cov_loss", "sil_loss", "policy_loss", "PolicyLoss", "POLICY_LOSSES",
    "repetition_ratio",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over tokens where ``mask`` is 1 (0 if none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              num_tokens: float | None = None, num_seqs: float | None = None, norm_len: float | None = None) -> torch.Tensor:
    """Reduce a per-token loss to a scalar.

    ``token-mean``: sum over all policy tokens / their count (``num_tokens`` when the batch is split
    into micro-batches); ``seq-mean-token-mean``: each sequence's token mean, averaged over
    sequences (``num_seqs``); ``seq-mean-token-sum-norm`` (Dr.GRPO): token sums divided by a constant
    ``norm_len`` (the generation budget, as Dr.GRPO's code divides by its max generation length) and
    averaged over sequences, so no length bias. Pass the whole batch's ``num_tokens``/``num_seqs``
    when the batch is split into micro-batches: the sum of the micro-batch losses is then the
    full-batch loss.
    """
    m = mask.to(per_token.dtype)
    x = per_token * m
    if mode == "token-mean":
        return x.sum() / (num_tokens if num_tokens is not None else m.sum().clamp(min=1.0))
    if mode == "seq-mean-token-mean":
        per_seq = x.sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.sum() / (num_seqs if num_seqs is not None else max(1, per_token.shape[0]))
    if mode == "seq-mean-token-sum-norm":
        L = norm_len if norm_len is not None else per_token.shape[-1]
        return x.sum() / L / (num_seqs if num_seqs is not None else max(1, per_token.shape[0]))
    raise ValueError(f"unknown loss aggregation {mode!r}")


def policy_gradient_loss(logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Plain REINFORCE per token: -A * log pi (the reference the PPO loss reduces to at ratio 1)."""
    return -adv * logp


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                  clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO-clip per token: max(-A r, -A clip(r, 1-clip_low, 1+clip_high)).

    Returns (loss, clipped, ratio); ``clipped`` marks tokens whose gradient the clip removed.
    """
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = -adv * ratio
    clipped_term = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped_term)
    clipped = clipped_term > unclipped
    return loss, clipped, ratio


K3_LOG_RATIO_BOUND = 20.0   # verl's low_var_kl clamps log(ref/pi) to [-20, 20] ...
K3_MAX = 10.0               # ... and the estimate to [-10, 10]


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate from sampled tokens (Schulman's k1, k2, k3).

    k1 = log pi - log ref; k2 = (log pi - log ref)^2 / 2; k3 = ref/pi - log(ref/pi) - 1 (>= 0),
    with log(ref/pi) clamped to [-20, 20] and the estimate to at most 10, as verl's ``low_var_kl``.
    """
    d = logp - ref_logp
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        x = (-d).clamp(-K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND)
        return (torch.exp(x) - x - 1.0).clamp(max=K3_MAX)
    raise ValueError(f"unknown KL estimator {estimator!r}; use k1, k2 or k3")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at each position."""
    logits = logits.float()
    logz = torch.logsumexp(logits, -1)
    return logz - (torch.softmax(logits, -1) * logits).sum(-1)


def token_covariance(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token (A - mean A)(log pi - mean log pi), means over policy tokens; 0 elsewhere."""
    m = mask.bool()
    lp = logp.detach().float()
    a = adv.detach().float()
    if not m.any():
        return torch.zeros_like(lp)
    cov = (a - a[m].mean()) * (lp - lp[m].mean())
    return torch.where(m, cov, torch.zeros_like(cov))


def clip_cov_keep(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clipped: torch.Tensor | None,
                  ratio: float, lb: float, ub: float, select: str = "random",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Clip-Cov: which tokens keep their gradient (1) or lose it (0).

    Among policy tokens not already clipped by PPO whose covariance lies in (lb, ub),
    max(1, int(ratio * N)) are chosen (N = policy tokens) — at random (``random``, as in the
    public code) or the highest-covariance ones (``top``) — capped by how many qualify.
    Returns (keep mask, number removed).
    """
    cov = token_covariance(logp, adv, mask)
    valid = mask.bool()
    cand = valid & (cov > lb) & (cov < ub)
    if clipped is not None:
        cand = cand & ~clipped.bool()
    keep = torch.ones_like(logp, dtype=torch.float32)
    n_valid = int(valid.sum())
    idx = cand.flatten().nonzero().squeeze(-1)
    if n_valid == 0 or idx.numel() == 0:
        return keep, 0
    n = min(max(1, int(ratio * n_valid)), idx.numel())
    if select == "top":
        order = torch.argsort(cov.flatten()[idx], descending=True, stable=True)
        chosen = idx[order[:n]]
    elif select == "random":
        chosen = idx[torch.randperm(idx.numel(), generator=generator)[:n]]
    else:
        raise ValueError(f"unknown Clip-Cov selection {select!r}; use random or top")
    keep.view(-1)[chosen] = 0.0
    return keep, n


def kl_cov_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                ratio: float, coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KL-Cov per token: the *unclipped* surrogate -A r everywhere, plus coef * |log pi - log pi_old| on the
    max(1, int(ratio * N)) policy tokens of highest covariance (as the Entropy-Mechanism authors' code).

    Returns (loss, 0/1 mask of the penalised tokens, ratio).
    """
    r = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    loss = -adv * r
    cov = token_covariance(logp, adv, mask)
    valid = mask.bool()
    n_valid = int(valid.sum())
    sel = torch.zeros_like(logp, dtype=torch.bool)
    if n_valid:
        k = min(max(1, int(ratio * n_valid)), n_valid)
        flat = torch.where(valid, cov, torch.full_like(cov, -math.inf)).flatten()
        sel.view(-1)[torch.topk(flat, k).indices] = True
    penalty = coef * (logp - old_logp).abs()
    return torch.where(sel, loss + penalty, loss), sel, r


def sil_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
             clip_low: float = 0.2, clip_high: float = 0.28) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Self-imitation loss: off-policy PPO-clip against stored behaviour log-probs with A clamped >= 0.

    Replayed tokens with a non-positive (recalibrated) advantage contribute nothing.
    """
    return ppo_clip_loss(logp, old_logp, adv.clamp(min=0.0), clip_low, clip_high)


@dataclass
class PolicyLoss:
    """One policy-loss term per token, with what it did: PPO-clipped tokens, Clip-Cov removals, KL-Cov picks."""

    per_token: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor          # bool: the PPO clip removed the gradient
    cov_removed: int = 0
    cov_penalised: int = 0


def _ppo(logp, old, adv, mask, clip_low, clip_high, cov, gen) -> PolicyLoss:
    loss, clipped, ratio = ppo_clip_loss(logp, old, adv, clip_low, clip_high)
    return PolicyLoss(loss, ratio, clipped)


def _clip_cov(logp, old, adv, mask, clip_low, clip_high, cov, gen) -> PolicyLoss:
    loss, clipped, ratio = ppo_clip_loss(logp, old, adv, clip_low, clip_high)
    keep, n = clip_cov_keep(logp, adv, mask, clipped, cov.resolved_ratio(), cov.lb, cov.ub, cov.select, gen)
    return PolicyLoss(loss * keep.to(loss.device, loss.dtype), ratio, clipped, cov_removed=n)


def _kl_cov(logp, old, adv, mask, clip_low, clip_high, cov, gen) -> PolicyLoss:
    loss, sel, ratio = kl_cov_loss(logp, old, adv, mask, cov.resolved_ratio(), cov.kl_coef)
    return PolicyLoss(loss, ratio, torch.zeros_like(sel), cov_penalised=int(sel.sum()))


POLICY_LOSSES: dict[str, Callable[..., PolicyLoss]] = {"none": _ppo, "clip_cov": _clip_cov, "kl_cov": _kl_cov}


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip_low: float, clip_high: float, cov: "object", generator: torch.Generator | None = None) -> PolicyLoss:
    """The per-token policy loss named by ``cov.mode``: ``none`` (PPO-clip), ``clip_cov`` or ``kl_cov``."""
    try:
        fn = POLICY_LOSSES[cov.mode]
    except KeyError:
        raise ValueError(f"unknown cov mode {cov.mode!r}; use {', '.join(POLICY_LOSSES)}") from None
    return fn(logp, old_logp, adv, mask, clip_low, clip_high, cov, generator)


def repetition_ratio(tokens: list[int], n: int = 4) -> float:
    """Fraction of the n-grams in ``tokens`` that repeat an earlier one (0 = none repeated)."""
    if len(tokens) < n + 1:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    rep = 0
    total = len(tokens) - n + 1
    for i in range(total):
        g = tuple(tokens[i:i + n])
        if g in seen:
            rep += 1
        seen.add(g)
    return rep / total
