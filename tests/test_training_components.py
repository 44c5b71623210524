"""Replay buffer, schedules and packing (reward shaping and the budget: test_training_shaping.py)."""

from __future__ import annotations

import numpy as np
import pytest

from forage.agents.trajectory import Trajectory
from forage.training.advantages import group_stats
from forage.training.config import ReplayConfig, ScheduleConfig
from forage.training.packing import collate, pack_by_tokens
from forage.training.replay import ReplayBuffer
from forage.training.schedules import Schedule


def _traj(task: str, reward: float, n: int = 4, calls: list | None = None) -> Trajectory:
    msgs = []
    for c in calls or []:
        msgs.append({"role": "assistant", "content": "x"})
        msgs.append({"role": "tool", "content": f"result of {c}", "tool_calls": [{"name": "lookup", "arguments": {"name": c}}]})
    return Trajectory(env_id="e", task_id=task, token_ids=list(range(2 + n)), loss_mask=[0, 0] + [1] * n,
                      logprobs=[0.0, 0.0] + [-1.0] * n, turn_spans=[(2, 2 + n)], reward=reward, group=task,
                      messages=msgs, num_tool_calls=len(calls or []))


def test_replay_keeps_only_positive_advantage_and_expires_stale():
    buf = ReplayBuffer(ReplayConfig(tolerance=5, trigger="min_size", min_size=2))
    trajs = [_traj("a", 1.0), _traj("a", 0.0), _traj("b", 1.0)]
    assert buf.add(trajs, [1.0, 0.0, 1.0], [0.8, -0.8, 0.0], step=0) == 1
    buf.add([_traj("c", 1.0)], [1.0], [0.5], step=3)
    assert len(buf) == 2 and buf.ready()
    assert buf.expire(5) == 0 and len(buf) == 2
    assert buf.expire(6) == 1 and [e.step for e in buf.entries] == [3]


def test_recalibration_lowers_a_stale_success_once_success_rate_rises():
    buf = ReplayBuffer(ReplayConfig(history=8, tolerance=100))
    buf.record_groups(group_stats([1, 0, 0, 0], ["t"] * 4))  # success rate 0.25
    buf.add([_traj("t", 1.0)], [1.0], [1.5], step=0)
    entry = buf.entries[0]
    early = buf.recalibrated(entry)
    assert early == pytest.approx(0.75)
    for step in range(1, 6):  # the policy got better: groups now succeed 3 of 4 times
        buf.record_groups(group_stats([1, 1, 1, 0], [f"t{step}"] * 4))
    late = buf.recalibrated(entry)
    assert late == pytest.approx(0.25) and late < early
    for _ in range(10):  # everything succeeds: the stale success no longer stands out
        buf.record_groups(group_stats([1, 1, 1, 1], ["t"] * 4))
    assert buf.recalibrated(entry) == 0.0
    assert buf.sample(np.random.default_rng(0)) == []


def test_recalibration_divide_std_and_task_scope():
    buf = ReplayBuffer(ReplayConfig(divide_std=True, baseline_scope="task"))
    buf.record_groups(group_stats([1, 0], ["a", "a"]))       # mean .5 std .5
    buf.record_groups(group_stats([1, 1, 1, 0], ["b"] * 4))  # mean .75
    buf.add([_traj("a", 1.0)], [1.0], [1.0], step=0)
    assert buf.recalibrated(buf.entries[0]) == pytest.approx(0.5 / (0.5 + 1e-6))


def test_prioritized_sampling_prefers_high_advantage():
    buf = ReplayBuffer(ReplayConfig(batch_size=1, sampling="prioritized", tolerance=100, history=4))
    buf.record_groups({"g": (0.0, 1.0, 4)})
    buf.add([_traj("lo", 0.1), _traj("hi", 2.0)], [0.1, 2.0], [0.1, 2.0], step=0)
    rng = np.random.default_rng(0)
    picks = [buf.sample(rng)[0][0].task for _ in range(400)]
    assert picks.count("hi") > 300
    uni = ReplayBuffer(ReplayConfig(batch_size=1, sampling="uniform", tolerance=100))
    uni.load_state_dict(buf.state_dict())
    picks = [uni.sample(rng)[0][0].task for _ in range(400)]
    assert 120 < picks.count("hi") < 280
    assert len(uni.entries) == 2 and uni.entries[1].traj.token_ids == buf.entries[1].traj.token_ids


def test_schedules():
    decay = Schedule(ScheduleConfig(kind="cosine_decay", value=1.0, period=200))
    ramp = Schedule(ScheduleConfig(kind="cosine_ramp", value=1.0, period=200))
    assert decay(0) == 1.0 and decay(100) == pytest.approx(0.5) and decay(200) == 0.0 and decay(500) == 0.0
    assert ramp(0) == 0.0 and ramp(100) == pytest.approx(0.5) and ramp(200) == 1.0
    for t in (0, 37, 150):  # the replay weight grows exactly as the tool reward decays
        assert decay(t) + ramp(t) == pytest.approx(1.0)
    lin = Schedule(ScheduleConfig(kind="linear", start=1.0, end=0.0, period=10, warmup=2))
    assert lin(0) == 0.0 and lin(2) == 1.0 and lin(7) == pytest.approx(0.5) and lin(100) == 0.0
    with pytest.raises(ValueError):
        Schedule(ScheduleConfig(kind="zigzag"))(0)


def test_pack_by_tokens_and_collate():
    lengths = [10, 3, 7, 7, 2, 12]
    batches = pack_by_tokens(lengths, 20)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 20
    assert pack_by_tokens([50], 20) == [[0]]
    batch = collate([_traj("a", 0, n=3), _traj("b", 0, n=5)], pad_id=9)
    assert batch["input_ids"].shape == (2, 7) and batch["input_ids"][0, -1] == 9
    assert batch["loss_mask"][0].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert batch["attention_mask"][0].sum() == 5 and batch["old_logp"][1, 2] == -1.0


def test_plot_draws_the_held_out_panel_from_the_cold_start(tmp_path):
    """eval.json's cold-start score is the curve's point at 0 updates, each eval at its update count."""
    import json

    from forage.training.plot import held_out_curve, plot_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "success/rate": 0.0}) + "\n")
    (run / "eval.json").write_text(json.dumps({"panel": ["a", "b"], "before_rl": {"success": 0.25},
                                               "during_rl": [{"step": 4, "success": 0.5}, {"step": 8, "success": 0.75}]}))
    assert held_out_curve(run) == [(0, 0.25), (4, 0.5), (8, 0.75)]
    assert plot_run(run).exists()
    assert held_out_curve(tmp_path) == []
