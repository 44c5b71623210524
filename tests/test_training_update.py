"""The update path against independent oracles: a naive per-sequence implementation of the losses,
the agents' own log-prob function, hand-computed values, and bit-for-bit comparisons of runs."""

from __future__ import annotations

import math

import pytest
import torch

from forage.agents.hf import sequence_logprobs
from forage.agents.trajectory import Trajectory
from forage.training import Trainer
from forage.training import losses as L
from forage.training.config import ConfigError, CovConfig, TrainConfig, config_from_dict
from forage.training.model import token_logps
from forage.training.packing import collate
from forage.training.replay import ReplayEntry
from forage.training.update import LossTerm, accumulate

from _training_helpers import VOCAB, scripted_rollout, tiny_config

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _episodes(model, n: int = 5, seed: int = 0, tool_span: bool = True) -> list[Trajectory]:
    """Episodes with a prompt, a generated turn, a tool result (mask 0) and a second turn; behaviour
    log-probs from the agents' sequence_logprobs (one sequence, no padding: an independent path)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        lens = [int(torch.randint(2, 5, (1,), generator=g)) for _ in range(4)]
        if not tool_span:
            lens[2] = lens[3] = 0
        ids = torch.randint(0, VOCAB, (sum(lens),), generator=g).tolist()
        mask = [0] * lens[0] + [1] * lens[1] + [0] * lens[2] + [1] * lens[3]
        lp = sequence_logprobs(model, ids)
        spans = [(lens[0], lens[0] + lens[1])] + ([(sum(lens[:3]), sum(lens))] if lens[3] else [])
        out.append(Trajectory(env_id="t", task_id=f"task-{i % 2}", token_ids=ids, loss_mask=mask,
                              logprobs=[x if m else 0.0 for x, m in zip(lp, mask)], turn_spans=spans,
                              reward=float(i % 2), group=f"task-{i % 2}"))
    return out


def _naive_loss(model, trajs, advs, mode: str, norm_len: float, old_shift: float = 0.0, temperature: float = 1.0):
    """Per-sequence, position by position: -A * exp(lp - old) summed over policy tokens, aggregated by hand."""
    per_seq, counts = [], []
    for t, a in zip(trajs, advs):
        ids = torch.tensor([t.token_ids])
        logits = model(input_ids=ids).logits[0].float() / temperature
        terms = []
        for pos in range(1, len(t.token_ids)):
            if t.loss_mask[pos]:
                lp = torch.log_softmax(logits[pos - 1], -1)[t.token_ids[pos]]
                old = lp.detach() + old_shift
                terms.append(-a * torch.exp(lp - old))
        per_seq.append(torch.stack(terms).sum())
        counts.append(len(terms))
    if mode == "token-mean":
        return sum(per_seq) / sum(counts)
    if mode == "seq-mean-token-mean":
        return sum(s / c for s, c in zip(per_seq, counts)) / len(trajs)
    return sum(per_seq) / norm_len / len(trajs)


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _trainer(tmp_path, **over):
    return Trainer(tiny_config(tmp_path, **over), rollout_fn=scripted_rollout, progress=False)


def _term(mode="token-mean", norm_len=50.0, **kw):
    return LossTerm(0.2, 0.28, CovConfig(mode="none"), mode, norm_len, **kw)


# -- log-probs and ratios -------------------------------------------------------------------------
def test_on_policy_ratio_is_one_and_nothing_is_clipped(tmp_path):
    """Behaviour log-probs from the agents' sequence_logprobs: the update's own log-probs agree (a shifted
    gather or a wrong mask would not), ratio 1 to float precision, no token clipped."""
    tr = _trainer(tmp_path)
    trajs = _episodes(tr.model)
    st = tr.update(trajs, [1.0, -1.0, 0.5, -0.5, 1.0])
    assert st["pg/ratio_max_dev"] < 1e-5 and st["pg/clipfrac"] == 0.0
    assert st["pg/ratio_mean"] == pytest.approx(1.0, abs=1e-6)


def test_bf16_autocast_runs_the_forward_in_bf16_close_to_fp32(tmp_path):
    """model.autocast bfloat16: token_logps runs under bf16 autocast (its log-probs move off the fp32 values
    of sequence_logprobs, so the mechanism is on) yet stay within 0.05 nats; the logged gap says so and the
    step's gradients are finite fp32 on the fp32 master weights."""
    tr = _trainer(tmp_path, **{"model.autocast": "bfloat16"})
    assert tr.model.forage_autocast is torch.bfloat16
    trajs = _episodes(tr.model)
    st = tr.update(trajs, [1.0, -1.0, 0.5, -0.5, 1.0])
    assert 1e-6 < st["pg/logp_gap"] < 0.05
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in tr.model.parameters())
    off = _trainer(tmp_path / "off")
    assert off.model.forage_autocast is None
    assert off.update(_episodes(off.model), [1.0, -1.0, 0.5, -0.5, 1.0])["pg/logp_gap"] < 1e-5


def test_autocast_auto_follows_the_cpu():
    """auto: bf16 only for fp32 weights on a CPU with hardware bf16 (what /proc/cpuinfo says), never for bf16
    weights or on request off."""
    from forage.machine import cpu_features
    from forage.training.config import ModelConfig
    from forage.training.model import autocast_dtype

    native = bool({"avx512_bf16", "amx_bf16", "bf16"} & set(cpu_features()))
    cpu = torch.device("cpu")
    assert autocast_dtype(ModelConfig(), cpu, torch.float32) == (torch.bfloat16 if native else None)
    assert autocast_dtype(ModelConfig(), cpu, torch.bfloat16) is None
    assert autocast_dtype(ModelConfig(autocast="off"), cpu, torch.float32) is None
    assert autocast_dtype(ModelConfig(), torch.device("cuda"), torch.float32) is None


def test_recomputed_behaviour_logprobs_give_ratio_exactly_one(tmp_path):
    tr = _trainer(tmp_path, **{"algo.behaviour_logprobs": "recompute"})
    st = tr.update(_episodes(tr.model), [1.0, -1.0, 0.5, -0.5, 1.0])
    assert st["pg/ratio_max_dev"] == 0.0 and st["pg/clipfrac"] == 0.0 and st["pg/ratio_mean"] == 1.0
    assert st["pg/recompute_gap"] < 1e-5   # the recomputed values agree with sequence_logprobs


def test_temperature_divides_the_logits_in_training_logprobs(tmp_path):
    tr = _trainer(tmp_path, **{"rollout.temperature": 0.5})
    t = _episodes(tr.model, n=1, tool_span=False)[0]
    b = collate([t])
    with torch.no_grad():
        lp, _ = token_logps(tr.model, b["input_ids"], b["attention_mask"], len(t.token_ids), temperature=0.5)
        logits = tr.model(input_ids=b["input_ids"]).logits[0].float()
    want = [float(torch.log_softmax(logits[p - 1] / 0.5, -1)[t.token_ids[p]]) for p in range(1, len(t.token_ids))]
    assert lp[0].tolist() == pytest.approx(want, abs=1e-5)
    # the rollout's log-probs are at T = 1: with T != 1 the trainer recomputes them (auto) and the ratio is 1
    st = tr.update([t], [1.0])
    assert st["pg/recompute_gap"] > 1e-3 and st["pg/ratio_max_dev"] == 0.0


def test_one_epoch_takes_the_behaviour_logprobs_from_the_update_forward(tmp_path):
    """auto at T != 1 with one epoch skips the separate recompute pass: the episodes' stored log-probs equal a
    hand-computed log_softmax(logits / T) of the initial weights, and the logged gap, the ratio and the step's
    parameters equal those of a run that recomputes in its own no-grad pass."""
    runs = {}
    for mode in ("auto", "recompute"):
        tr = _trainer(tmp_path / mode, **{"rollout.temperature": 0.7, "algo.behaviour_logprobs": mode,
                                          "optim.micro_batch_tokens": 24})
        trajs = _episodes(tr.model, n=6)
        if mode == "auto":
            with torch.no_grad():
                want = []
                for t in trajs:
                    logits = tr.model(input_ids=torch.tensor([t.token_ids])).logits[0].float() / 0.7
                    want.append([float(torch.log_softmax(logits[p - 1], -1)[t.token_ids[p]]) if m else 0.0
                                 for p, m in enumerate(t.loss_mask)])
            init = {k: p.detach().clone() for k, p in tr.model.named_parameters()}
        st = tr.update(trajs, [1.0, -1.0, 0.5, -0.5, 1.0, -0.25])
        runs[mode] = (st, [list(t.logprobs) for t in trajs],
                      {k: p.detach().clone() for k, p in tr.model.named_parameters()})
    (fst, flp, fp), (rst, rlp, rp) = runs["auto"], runs["recompute"]
    for got, w, t in zip(flp, want, trajs):
        assert [g for g, m in zip(got, t.loss_mask) if m] == pytest.approx([x for x, m in zip(w, t.loss_mask) if m],
                                                                          abs=1e-5)
    assert rst["pg/recompute_gap"] > 1e-3   # T = 0.7 vs the rollout's T = 1 values: the values do move
    assert fst["pg/recompute_gap"] == pytest.approx(rst["pg/recompute_gap"], rel=1e-5)
    assert fst["pg/ratio_max_dev"] == 0.0 and fst["pg/clipfrac"] == 0.0
    for a, b in zip(flp, rlp):
        assert a == pytest.approx(b, abs=1e-6)
    assert max(float((fp[k] - init[k]).abs().max()) for k in fp) > 1e-6   # the step did move the weights
    for k in fp:
        torch.testing.assert_close(fp[k], rp[k], rtol=0, atol=1e-7)


def test_top_p_below_one_is_refused():
    with pytest.raises(ConfigError, match="rollout.top_p"):
        config_from_dict({"rollout": {"top_p": 0.9}})


# -- gradients against a naive implementation ----------------------------------------------------------
@pytest.mark.parametrize("mode", AGG_MODES)
def test_gradient_equals_naive_per_sequence_implementation(tmp_path, mode):
    """Real update path (packing, padding, logits window, masks, normalisers) vs a position-by-position loop."""
    tr = _trainer(tmp_path)
    trajs = _episodes(tr.model, n=6)
    advs = [1.0, -0.5, 0.25, -1.0, 0.75, 0.1]
    tr.model.zero_grad()
    _naive_loss(tr.model, trajs, advs, mode, 50.0).backward()
    want = _grads(tr.model)
    tr.model.zero_grad()
    accumulate(tr.model, trajs, advs, _term(mode), micro_batch_tokens=30, pad=0)   # several micro-batches
    got = _grads(tr.model)
    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-4), k
    assert sum(float(v.abs().sum()) for v in want.values()) > 0


@pytest.mark.parametrize("mode", AGG_MODES)
def test_gradients_do_not_depend_on_micro_batch_size(tmp_path, mode):
    tr = _trainer(tmp_path)
    trajs = _episodes(tr.model, n=6, seed=3)
    advs = [1.0, -0.5, 0.25, -1.0, 0.75, 0.1]
    runs = []
    for mbt in (100_000, 40, 1):
        tr.model.zero_grad()
        accumulate(tr.model, trajs, advs, _term(mode), micro_batch_tokens=mbt, pad=0)
        runs.append(_grads(tr.model))
    for other in runs[1:]:
        for k in runs[0]:
            assert torch.allclose(other[k], runs[0][k], atol=1e-7, rtol=1e-5), (mode, k)


def test_masked_spans_get_zero_gradient_through_the_update(tmp_path):
    """Gradient on the logits that predict prompt / tool-result / padding tokens is exactly 0; on policy tokens not."""
    tr = _trainer(tmp_path)
    trajs = _episodes(tr.model, n=4, seed=5)
    seen = {}

    def hook(_mod, _inp, out):
        out.retain_grad()
        seen["logits"] = out

    h = tr.model.lm_head.register_forward_hook(hook)
    try:
        tr.model.zero_grad()
        accumulate(tr.model, trajs, [1.0, -1.0, 0.5, 2.0], _term(), micro_batch_tokens=100_000, pad=0)
    finally:
        h.remove()
    g = seen["logits"].grad.abs().sum(-1)          # [B, keep]
    b = collate(trajs)
    T, keep = b["loss_mask"].shape[1], g.shape[1]
    for row in range(len(trajs)):
        for j in range(keep):
            target = T - keep + j + 1                  # logits at T-keep+j predict this token
            is_policy = target < T and b["loss_mask"][row, target] == 1
            assert (g[row, j] > 0) == bool(is_policy), (row, j)


def test_replay_ratio_is_against_the_stored_logprobs(tmp_path):
    """Stored log-probs 0.5 above the current ones: ratio e^-0.5 in the SIL loss (not 1), gradient as the naive one."""
    tr = _trainer(tmp_path)
    trajs = _episodes(tr.model, n=4, seed=7)
    for t in trajs:
        t.logprobs = [x + 0.5 if m else 0.0 for x, m in zip(t.logprobs, t.loss_mask)]
    advs = [1.0, 0.5, 0.25, 2.0]
    tr.model.zero_grad()
    _naive_loss(tr.model, trajs, advs, "token-mean", 1.0, old_shift=0.5).backward()
    want = _grads(tr.model)
    tr.model.zero_grad()
    st = accumulate(tr.model, trajs, advs, LossTerm(0.2, 0.28, CovConfig(mode="none"), "token-mean", 1.0,
                                                    clamp_negative=True), micro_batch_tokens=40, pad=0)
    assert st["ratio_mean"] == pytest.approx(math.exp(-0.5), abs=1e-5)
    got = _grads(tr.model)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-4), k


def test_entropy_has_no_autograd_unless_its_coefficient_is_set(tmp_path):
    tr = _trainer(tmp_path)
    t = _episodes(tr.model, n=1)[0]
    b = collate([t])
    _, ent = token_logps(tr.model, b["input_ids"], b["attention_mask"], len(t.token_ids), with_entropy=True)
    assert not ent.requires_grad and float(ent.mean()) > 0
    _, ent = token_logps(tr.model, b["input_ids"], b["attention_mask"], len(t.token_ids), with_entropy=True,
                         entropy_grad=True)
    assert ent.requires_grad


def test_token_entropy_and_logps_match_a_full_log_softmax_across_chunks(tmp_path):
    """token_logps' logsumexp form and chunked entropy equal torch's log_softmax over the whole vocabulary,
    on a sequence longer than the 256-position entropy chunk (both with and without autograd)."""
    tr = _trainer(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 600), generator=torch.Generator().manual_seed(3))
    att = torch.ones_like(ids)
    with torch.no_grad():
        lsm = torch.log_softmax(tr.model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
    want_lp = lsm.gather(-1, ids[:, 1:, None]).squeeze(-1)
    want_ent = -(lsm.exp() * lsm).sum(-1)
    for grad in (False, True):
        lp, ent = token_logps(tr.model, ids, att, 600, with_entropy=True, entropy_grad=grad)
        assert torch.allclose(lp.detach(), want_lp, atol=1e-5) and torch.allclose(ent.detach(), want_ent, atol=1e-5)


# -- hand-computed values ---------------------------------------------------------------------------------
def test_kl_estimators_hand_values_and_k3_clamp():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])    # log pi - log ref = 1
    assert L.kl_penalty(logp, ref, "k1").item() == pytest.approx(1.0)
    assert L.kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5)
    assert L.kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-1) + 1 - 1)
    assert L.kl_penalty(torch.tensor([-2.0]), torch.tensor([-1.0]), "k3").item() == pytest.approx(math.e - 1 - 1)
    # far apart: k3 is clamped to 10 (verl's low_var_kl), not e^50
    assert L.kl_penalty(torch.tensor([-50.0]), torch.tensor([0.0]), "k3").item() == 10.0
    assert L.kl_penalty(torch.tensor([0.0]), torch.tensor([-50.0]), "k3").item() == 10.0


def test_token_covariance_hand_value():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, 0.0]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.ones(2, 2)
    # mean A = 0, mean log pi = -1.5
    assert L.token_covariance(logp, adv, mask).tolist() == [[0.5, -0.5], [1.5, -1.5]]
    mask2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # means over policy tokens only: A 1/3, log pi -2
    cov = L.token_covariance(logp, adv, mask2)
    assert cov.flatten().tolist() == pytest.approx([(1 - 1 / 3) * (-1 + 2), 0.0, (-1 - 1 / 3) * (-3 + 2), 0.0])


def test_kl_cov_uses_the_unclipped_surrogate_and_its_own_default_ratio():
    old = torch.zeros(1, 4)
    logp = torch.tensor([[math.log(2.0), 0.0, 0.0, 0.0]])   # ratio 2 on the first token
    adv = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    mask = torch.ones(1, 4)
    loss, sel, ratio = L.kl_cov_loss(logp, old, adv, mask, ratio=0.25, coef=1.0)
    # covariances (A - 1)(log pi - log2/4): 0.52, 0, 0, 0.17 -> the first token is penalised
    assert sel.tolist() == [[True, False, False, False]]
    # unclipped: -A r = -4 there (PPO-clip would give -2 x 1.2), plus |log 2 - 0|
    assert loss[0, 0].item() == pytest.approx(-4.0 + math.log(2.0))
    assert loss[0, 1:].tolist() == [-1.0, -1.0, 0.0]
    assert CovConfig(mode="kl_cov").resolved_ratio() == 0.002 and CovConfig(mode="clip_cov").resolved_ratio() == 0.0002


def test_errored_episodes_are_left_out_of_group_statistics():
    from forage.training.advantages import group_advantages

    adv = group_advantages([1.0, 0.0, 0.0], ["a", "a", "a"], "grpo", valid=[True, True, False])
    s = torch.tensor([1.0, 0.0]).std().item()
    assert adv.tolist() == pytest.approx([0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.0], rel=1e-5)
    dr = group_advantages([1.0, 0.0, 0.0], ["a", "a", "a"], "drgrpo", valid=[True, True, False])
    assert dr.tolist() == pytest.approx([0.5, -0.5, 0.0])


def test_drgrpo_normaliser_is_the_generation_budget():
    cfg = config_from_dict({"rollout": {"max_new_tokens": 50, "max_turns": 3, "max_context": 1024}})
    assert cfg.generation_budget() == 150
    cfg = config_from_dict({"rollout": {"max_new_tokens": 500, "max_turns": 3, "max_context": 1024}})
    assert cfg.generation_budget() == 1024
    assert config_from_dict({"algo": {"norm_len": 77}}).generation_budget() == 77


# -- replay semantics on whole runs -------------------------------------------------------------------
def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _run(tmp_path, steps=4, **over):
    tr = _trainer(tmp_path, **over)
    ms = [tr.train_step() for _ in range(steps)]
    return tr, ms


def test_replay_weight_zero_gives_exactly_the_parameters_of_replay_disabled(tmp_path):
    off, _ = _run(tmp_path / "off", **{"replay.enabled": False})
    zero, ms = _run(tmp_path / "zero", **{"replay.weight": {"kind": "constant", "value": 0.0}})
    assert any("sil/episodes" in m for m in ms)        # the buffer fired and was used (at weight 0)
    p0, pz = _params(off.model), _params(zero.model)
    assert all(torch.equal(p0[k], pz[k]) for k in p0)
    # and the weight really scales the effect: 1e-4 moves the weights far less than 1
    small, ms_small = _run(tmp_path / "small", **{"replay.weight": {"kind": "constant", "value": 1e-4}})
    big, _ = _run(tmp_path / "big", **{"replay.weight": {"kind": "constant", "value": 1.0}})
    assert any("loss/sil" in m for m in ms_small)

    def dist(tr):
        p = _params(tr.model)
        return math.sqrt(sum(float(((p[k] - p0[k]) ** 2).sum()) for k in p0))

    d_small, d_big = dist(small), dist(big)
    assert 0 < d_small < 0.05 * d_big, (d_small, d_big)


def test_each_replay_entry_is_used_once_never_in_its_own_step_and_only_if_it_trained(tmp_path):
    tr = _trainer(tmp_path, **{"replay.capacity": 1, "algo.filter_overlong": True})
    used: list[tuple] = []

    def rollout(step, model):
        eps = scripted_rollout(step, model)
        eps[0].stop_reason, eps[0].reward = "context_length", 1.0   # filtered (overlong) even with A > 0
        eps[1].reward = 0.0
        return eps

    tr.rollout_fn = rollout
    tr.source.fn = rollout
    take = tr.replay.take

    def spy(rng):
        batch = take(rng)
        for e, a in batch:
            assert e.step < tr.step and a >= 0
            assert e.traj.stop_reason != "context_length"
            used.append((e.step, tuple(e.traj.token_ids)))
        return batch

    tr.replay.take = spy
    fired = 0
    for _ in range(8):
        m = tr.train_step()
        fired += bool(m.get("replay/fired"))
        assert all(e.traj.stop_reason != "context_length" for e in tr.replay.entries)
        if m.get("replay/fired"):
            assert all(e.step == tr.step - 1 for e in tr.replay.entries)   # cleared, then this step's admitted
    assert fired >= 2 and used
    assert len(used) == len(set(used))


def test_spear_trigger_and_power_of_two_batch():
    from forage.training.config import ReplayConfig
    from forage.training.replay import ReplayBuffer, power_of_two_below

    assert [power_of_two_below(n) for n in (0, 1, 2, 3, 7, 8, 9)] == [0, 0, 2, 2, 4, 8, 8]
    buf = ReplayBuffer(ReplayConfig(capacity=4, trigger_factor=1.5, tolerance=100))
    buf.record_groups({"g": (0.5, 0.5, 2)})
    trajs = [Trajectory(env_id="e", task_id=f"t{i}", token_ids=[1, 2, 3], loss_mask=[0, 1, 1],
                        logprobs=[0, -1, -1], reward=1.0) for i in range(7)]
    buf.add(trajs[:6], [1.0] * 6, [0.5] * 6, step=0)
    assert buf.above_baseline() == 6 and not buf.ready()          # 6 is not > 1.5 x 4
    buf.add(trajs[6:], [1.0], [0.5], step=1)
    assert buf.ready()
    import numpy as np

    batch = buf.take(np.random.default_rng(0))
    assert len(batch) == 4 and len(buf) == 0                       # min(power of two <= 7, capacity), cleared
    assert all(a == pytest.approx(0.5) for _, a in batch)          # R - p50 = 1 - 0.5


def test_reference_is_the_post_warm_start_policy(tmp_path):
    tr = _trainer(tmp_path, **{"algo.kl_coef": 0.1, "warmup.episodes": 1, "warmup.lr": 1e-2, "warmup.epochs": 3})
    initial = _params(tr.model)
    demos = [t for t in _episodes(tr.model, n=4, seed=11)]
    tr.warm_start(demos=demos)
    warm = _params(tr.model)
    assert any(not torch.equal(initial[k], warm[k]) for k in warm)
    m = tr.train_step()
    ref = tr.reference.parameters()
    assert all(torch.equal(ref[k], warm[k]) for k in warm)
    assert m["pg/kl"] == 0.0                     # step 0: the policy is the reference
    assert tr.train_step()["pg/kl"] > 0


def test_lora_reference_is_the_post_warm_start_adapters(tmp_path):
    pytest.importorskip("peft", reason="peft (the train extra) is not installed")
    tr = _trainer(tmp_path, **{"model.lora": {"enabled": True, "r": 4, "alpha": 8}, "algo.kl_coef": 0.1,
                               "warmup.episodes": 1, "warmup.lr": 1e-2, "warmup.epochs": 3})
    tr.warm_start(demos=_episodes(tr.model, n=4, seed=12))
    warm = {k: p.detach().clone() for k, p in tr.model.named_parameters() if p.requires_grad}
    assert any(float(v.abs().sum()) > 0 for k, v in warm.items() if "lora_B" in k)   # adapters moved off identity
    m = tr.train_step()
    assert m["pg/kl"] == 0.0
    ref = tr.reference.parameters()
    assert set(ref) == set(warm) and all(torch.equal(ref[k], warm[k]) for k in warm)
    assert tr.train_step()["pg/kl"] > 0


def test_bad_config_is_refused_before_any_model_loads(monkeypatch):
    import forage.training.trainer as T

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(T, "load_model", boom)
    for key, value, where in [("advantage", "ppo", "algo.advantage"), ("kl_estimator", "k9", "algo.kl_estimator"),
                              ("loss_agg", "mean", "algo.loss_agg"), ("ppo_epochs", 0, "algo.ppo_epochs")]:
        cfg = TrainConfig()
        setattr(cfg.algo, key, value)
        with pytest.raises(ConfigError, match=where):
            Trainer(cfg)
    cfg = TrainConfig()
    cfg.rollout.ray, cfg.rollout.backend = "local", "vllm"
    with pytest.raises(ConfigError, match="rollout.ray"):
        Trainer(cfg)
    for data, where in [({"algo": {"cov": {"mode": "clipcov"}}}, "algo.cov.mode"),
                        ({"replay": {"capacity": 0}}, "replay.capacity"),
                        ({"optim": {"lr": -1}}, "optim.lr"),
                        ({"rollout": {"temperature": 0}}, "rollout.temperature"),
                        ({"algo": {"clip_high": "big"}}, "algo.clip_high"),
                        ({"rollout": {"max_turns": 3, "env_kwargs": {"max_turns": 5}}}, "rollout.env_kwargs.max_turns")]:
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            config_from_dict(data)


def test_a_failed_weight_push_stops_the_step_before_any_update(tmp_path):
    from forage.agents.vllm_weights import WeightSyncError

    tr = Trainer(tiny_config(tmp_path), progress=False)

    class FailingPush:
        last_sync_s = 0.0

        def run(self, tasks, config, version, progress=False):
            raise WeightSyncError("the server's workers did not load the weights")

        def sync(self, version):
            raise WeightSyncError("unreachable")

        def close(self):
            pass

    tr.source, tr._task_ids = FailingPush(), ["task-0", "task-1"]
    before = _params(tr.model)
    with pytest.raises(WeightSyncError, match="did not load"):
        tr.train_step()
    after = _params(tr.model)
    assert tr.step == 0 and all(torch.equal(before[k], after[k]) for k in before)
