"""Shared fixtures of the training tests: a tiny random Llama and scripted trajectories."""

from __future__ import annotations

from typing import Any

import torch

from forage.agents.hf import sequence_logprobs
from forage.agents.trajectory import Trajectory
from forage.training.config import config_from_dict

VOCAB = 96


def tiny_config(tmp_path, **over: Any):
    """A TrainConfig with a tiny in-memory model, replay on, Clip-Cov on, writing under tmp_path."""
    d: dict[str, Any] = {
        "name": "t", "out_dir": str(tmp_path), "steps": 3, "seed": 7, "tensorboard": False,
        # fp32 throughout: these tests check the mechanisms to float precision (bf16 autocast has its own test)
        "model": {"path": "tiny-random", "tiny_vocab": VOCAB, "tiny_hidden": 32, "autocast": "off"},
        "rollout": {"tasks_per_step": 2, "group_size": 3, "max_turns": 3},
        "algo": {"cov": {"mode": "clip_cov", "ratio": 0.1, "lb": -1e9, "ub": 1e9}},
        "replay": {"enabled": True, "capacity": 2, "sampling": "prioritized",   # SPEAR's trigger: > 3 entries above p50
                   "weight": {"kind": "constant", "value": 0.5}},
        "optim": {"lr": 1e-2, "micro_batch_tokens": 40},
    }
    for k, v in over.items():
        node = d
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return config_from_dict(d)


def scripted_rollout(step: int, model: Any) -> list[Trajectory]:
    """Random token episodes drawn from torch's global RNG, with the model's own behaviour log-probs."""
    out = []
    for task in range(2):
        for _ in range(3):
            n_p = int(torch.randint(3, 6, (1,)))
            n_g = int(torch.randint(3, 9, (1,)))
            ids = torch.randint(0, VOCAB, (n_p + n_g,)).tolist()
            lp = sequence_logprobs(model, ids)
            mask = [0] * n_p + [1] * n_g
            reward = float(torch.rand(1) < 0.5)
            out.append(Trajectory(env_id="scripted", task_id=f"task-{task}", token_ids=ids, loss_mask=mask,
                                  logprobs=[x if m else 0.0 for x, m in zip(lp, mask)], turn_spans=[(n_p, n_p + n_g)],
                                  reward=reward, reward_components={"correct": reward}, group=f"task-{task}",
                                  num_tool_calls=int(torch.randint(0, 3, (1,)))))
    return out
