"""The cold start: supervised fine-tuning on an env's oracle demonstrations before RL (as ReTool does).

The demonstrations are real episodes played by ``env.oracle_actions(task)`` through the rollout
engine, so they carry the exact token ids and loss mask the RL step uses: the SFT loss (token-mean
NLL) falls on the assistant turns only. Only successful demonstrations are kept.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from ..agents.evaluate import is_success
from ..agents.trajectory import Trajectory
from .config import RolloutConfig, WarmupConfig
from .model import token_logps, trainable
from .packing import collate, pack_by_tokens, policy_window

__all__ = ["demonstrations", "sft"]


def demonstrations(w: WarmupConfig, r: RolloutConfig, tokenizer: Any, first_task: int) -> list[Trajectory]:
    """``w.episodes`` successful oracle episodes of the tasks from ``w.offset`` (default ``first_task``) on."""
    import gymnasium as gym

    import forage  # noqa: F401  (registers the envs)

    from ..agents import RolloutEngine, ScriptedPolicy
    from .rollouts import engine_config

    env = gym.make(r.env, disable_env_checker=True, **r.env_kwargs)
    try:
        if not hasattr(env.unwrapped, "oracle_actions"):
            raise ValueError(f"warmup needs an env with oracle_actions(task); {r.env} has none")
        ids = [t.id for t in env.unwrapped.tasks]
        start = w.offset if w.offset is not None else first_task
        demo_ids = ids[start:start + w.episodes]
        if not demo_ids:
            raise ValueError(f"warmup: no tasks left after offset {start} ({len(ids)} tasks)")
        policy = ScriptedPolicy.from_oracle(env, tokenizer)
    finally:
        env.close()
    config = engine_config(r, 0)
    config.concurrency, config.max_new_tokens = 16, 512
    demos = RolloutEngine(policy, tokenizer, config).run_sync(r.env, demo_ids, group_size=1)
    return [d for d in demos if is_success(d)]


def sft(model: Any, demos: Sequence[Trajectory], w: WarmupConfig, pad: int, grad_clip: float, seed: int,
        progress: bool = False) -> dict[str, float]:
    """Fine-tune ``model`` on ``demos`` (token-mean NLL of the policy tokens, AdamW, ``w.epochs`` passes)."""
    if not demos:
        raise RuntimeError("warmup: no successful oracle demonstration (check the env's oracle_actions)")
    device = next(model.parameters()).device
    params = [p for _, p in trainable(model)]
    opt = torch.optim.AdamW(params, lr=w.lr, weight_decay=0.0)
    order_rng = np.random.default_rng(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        per_epoch = len(pack_by_tokens([len(d.token_ids) for d in demos], w.micro_batch_tokens))
        bar = tqdm(total=w.epochs * per_epoch, desc="warm start (SFT)", unit="batch", leave=False, dynamic_ncols=True)
    try:
        for _ in range(w.epochs):
            order = [demos[i] for i in order_rng.permutation(len(demos))]
            for idx in pack_by_tokens([len(d.token_ids) for d in order], w.micro_batch_tokens):
                batch = collate([order[i] for i in idx], pad)
                keep = policy_window(batch["loss_mask"])
                if keep is None:
                    continue
                T = batch["loss_mask"].shape[1]
                mask = batch["loss_mask"][:, T - keep + 1:].to(device)
                logp, _ = token_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), keep)
                loss = -(logp * mask).sum() / mask.sum().clamp(min=1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
                opt.step()
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(nll=f"{losses[-1]:.3f}")
    finally:
        if bar is not None:
            bar.close()
        opt.zero_grad(set_to_none=True)
    return {"warmup/demos": float(len(demos)), "warmup/nll_first": losses[0] if losses else float("nan"),
            "warmup/nll_last": losses[-1] if losses else float("nan"), "warmup/batches": float(len(losses)),
            "time/warmup_s": time.perf_counter() - t0}
