"""Math of the training losses and advantages, on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from forage.training import losses as L
from forage.training.advantages import group_advantages


def _logits_and_logp(seed: int = 0, B: int = 3, T: int = 7, V: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, requires_grad=True)
    tokens = torch.randint(0, V, (B, T), generator=g)
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    return logits, logp


def test_masked_tokens_get_zero_gradient():
    logits, logp = _logits_and_logp()
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]], dtype=torch.float32)
    adv = torch.tensor([1.5, -0.7, 0.3])[:, None] * mask
    old = logp.detach() + 0.05 * torch.randn(logp.shape)
    per_tok, _, _ = L.ppo_clip_loss(logp, old, adv, 0.2, 0.28)
    per_tok = per_tok + 0.1 * L.kl_penalty(logp, old.detach() - 0.1)
    L.aggregate(per_tok, mask).backward()
    grad_norm_per_pos = logits.grad.abs().sum(-1)
    assert torch.all(grad_norm_per_pos[mask == 0] == 0)
    assert torch.all(grad_norm_per_pos[mask == 1] > 0)


def test_ratio_one_no_clip_equals_policy_gradient():
    logits, logp = _logits_and_logp(1)
    mask = torch.ones_like(logp)
    mask[:, :2] = 0
    adv = torch.tensor([0.9, -1.2, 0.4])[:, None] * mask
    per_tok, clipped, ratio = L.ppo_clip_loss(logp, logp.detach(), adv, 0.2, 0.2)
    assert torch.allclose(ratio, torch.ones_like(ratio)) and not clipped.any()
    (g_ppo,) = torch.autograd.grad(L.aggregate(per_tok, mask), logits, retain_graph=True)
    (g_pg,) = torch.autograd.grad(L.aggregate(L.policy_gradient_loss(logp, adv), mask), logits)
    assert torch.allclose(g_ppo, g_pg, atol=1e-6)
    assert g_pg.abs().sum() > 0


def test_ppo_clip_removes_gradient_outside_trust_region():
    logp = torch.tensor([[0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, 1.0, -1.0, 1.0]])  # ratios e, 1/e, e, 1/e
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped, _ = L.ppo_clip_loss(logp, old, adv, 0.2, 0.28)
    loss.sum().backward()
    # A>0 with ratio above 1+eps and A<0 with ratio below 1-eps are clipped: no gradient
    assert clipped.tolist() == [[True, False, False, True]]
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0
    assert logp.grad[0, 1] != 0 and logp.grad[0, 2] != 0


def test_sil_loss_ignores_negative_advantages():
    logits, logp = _logits_and_logp(2)
    mask = torch.ones_like(logp)
    adv = torch.tensor([1.0, -2.0, 0.0])[:, None] * mask
    old = logp.detach()
    per_tok, _, _ = L.sil_loss(logp, old, adv)
    L.aggregate(per_tok, mask).backward()
    g = logits.grad.abs().sum(-1)
    assert torch.all(g[0] > 0)
    assert torch.all(g[1] == 0) and torch.all(g[2] == 0)


def test_clip_cov_top_removes_exact_fraction_of_highest_covariance():
    g = torch.Generator().manual_seed(3)
    logp = torch.randn(4, 25, generator=g)
    adv = torch.randn(4, 1, generator=g).expand(4, 25).clone()
    mask = torch.ones(4, 25)
    mask[:, :5] = 0  # 80 policy tokens
    adv = adv * mask
    keep, n = L.clip_cov_keep(logp, adv, mask, None, ratio=0.05, lb=-math.inf, ub=math.inf, select="top")
    assert n == 4 == int((keep == 0).sum())
    cov = L.token_covariance(logp, adv, mask)
    removed = cov[keep == 0]
    kept_policy = cov[(keep == 1) & (mask == 1)]
    assert removed.min() >= kept_policy.max()
    assert torch.all(keep[mask == 0] == 1)


def test_clip_cov_random_respects_bounds_ppo_clipping_and_count():
    g = torch.Generator().manual_seed(4)
    logp = torch.randn(2, 50, generator=g)
    adv = torch.randn(2, 1, generator=g).expand(2, 50).clone()
    mask = torch.ones(2, 50)
    clipped = torch.zeros(2, 50, dtype=torch.bool)
    clipped[0, :10] = True
    cov = L.token_covariance(logp, adv, mask)
    lb, ub = 0.1, 2.0
    keep, n = L.clip_cov_keep(logp, adv, mask, clipped, ratio=0.02, lb=lb, ub=ub, select="random",
                              generator=torch.Generator().manual_seed(0))
    assert n == max(1, int(0.02 * 100)) == int((keep == 0).sum())
    rm = keep == 0
    assert torch.all((cov[rm] > lb) & (cov[rm] < ub)) and not clipped[rm].any()
    # nothing in bounds: nothing removed
    keep2, n2 = L.clip_cov_keep(logp, adv, mask, None, 0.02, lb=1e6, ub=1e7)
    assert n2 == 0 and torch.all(keep2 == 1)


def test_clip_cov_zero_keep_zeroes_those_token_gradients():
    logits, logp = _logits_and_logp(5, B=2, T=10)
    mask = torch.ones_like(logp)
    adv = torch.tensor([1.0, -1.0])[:, None] * mask
    per_tok, clipped, _ = L.ppo_clip_loss(logp, logp.detach(), adv)
    keep, n = L.clip_cov_keep(logp, adv, mask, clipped, 0.2, -math.inf, math.inf, "top")
    L.aggregate(per_tok * keep, mask).backward()
    g = logits.grad.abs().sum(-1)
    assert n == 4
    assert torch.all(g[keep == 0] == 0) and torch.all(g[keep == 1] > 0)


def test_kl_cov_penalises_top_covariance_tokens_only():
    logp = torch.randn(2, 10, generator=torch.Generator().manual_seed(6), requires_grad=True)
    old = logp.detach() - 0.3
    mask = torch.ones(2, 10)
    adv = torch.tensor([1.0, -0.5])[:, None] * mask
    new, sel, ratio = L.kl_cov_loss(logp, old, adv, mask, ratio=0.1, coef=2.0)
    assert int(sel.sum()) == 2
    cov = L.token_covariance(logp, adv, mask)
    assert cov[sel].min() >= cov[~sel].max()
    unclipped = -adv * math.exp(0.3)          # ratio e^0.3 = 1.35: outside PPO's clip, but KL-Cov does not clip
    assert torch.allclose(new[sel], unclipped[sel] + 0.6, atol=1e-5)
    assert torch.allclose(new[~sel], unclipped[~sel], atol=1e-5)


def test_kl_estimators_are_zero_at_equal_policies_and_k3_nonnegative():
    x = torch.randn(50)
    for est in ("k1", "k2", "k3"):
        assert torch.allclose(L.kl_penalty(x, x, est), torch.zeros(50))
    assert torch.all(L.kl_penalty(x, x + torch.randn(50), "k3") >= -1e-6)
    with pytest.raises(ValueError):
        L.kl_penalty(x, x, "k9")


def test_entropy_from_logits_uniform_and_peaked():
    assert torch.allclose(L.entropy_from_logits(torch.zeros(1, 8)), torch.tensor([math.log(8)]))
    assert L.entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])) < 1e-6


def test_aggregation_modes():
    x = torch.tensor([[1.0, 1.0, 1.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert L.aggregate(x, m, "token-mean").item() == pytest.approx(7 / 4)
    assert L.aggregate(x, m, "seq-mean-token-mean").item() == pytest.approx((1 + 4) / 2)
    assert L.aggregate(x, m, "seq-mean-token-sum-norm", norm_len=10).item() == pytest.approx((3 + 4) / 10 / 2)


def test_group_advantages_grpo_drgrpo_rloo():
    r = [1.0, 0.0, 0.0, 0.0, 5.0, 5.0, 2.0]
    g = ["a", "a", "a", "a", "b", "b", "c"]
    grpo = group_advantages(r, g, "grpo")
    dr = group_advantages(r, g, "drgrpo")
    rloo = group_advantages(r, g, "rloo")
    assert dr[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    std = torch.tensor([1.0, 0, 0, 0]).std().item()
    assert grpo[0].item() == pytest.approx(0.75 / std, rel=1e-4)
    assert rloo[:4].tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])
    assert grpo[4:].tolist() == [0.0, 0.0, 0.0]  # equal rewards and a singleton group: no signal
    with pytest.raises(ValueError):
        group_advantages(r, g, "ppo")


def test_repetition_ratio():
    assert L.repetition_ratio(list(range(20))) == 0.0
    assert L.repetition_ratio([1, 2] * 20) > 0.8
