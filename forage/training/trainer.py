"""The training loop, top to bottom: roll out, shape, advantages, filter, update (+ replay), log.

One step (:meth:`Trainer.train_step`):

1. **roll out** this step's tasks, ``group_size`` episodes each (a :class:`~.rollouts.RolloutSource`:
   the training model in-process, a vLLM server or Ray actors with pushed weights, or a ``rollout_fn``);
2. **shape** the rewards over the whole batch (:class:`~.shaping.RewardShaper`: tool-call curriculum,
   novelty bonuses, OTC); the shaper's history is updated only after the step;
3. **advantages** per group (GRPO / Dr.GRPO / RLOO), errored episodes left out of the statistics;
4. **filter**: zero-variance groups, errored, empty, overlong or repetitive episodes get no loss;
5. **replay**: if SPEAR's trigger fires, take a batch from the buffer (before this step's episodes
   enter it) with advantages recalibrated against the baseline history, and clear the buffer;
6. **update**: one optimizer step on PG + w(t)·SIL (token-level PPO-clip on policy tokens, optional KL
   to the post-cold-start reference, entropy bonus, Clip-Cov / KL-Cov; SIL against stored log-probs);
7. **after the step**: the shaper's history, the per-task success counts, and the replay buffer (the
   episodes that trained with advantage > 0, and their groups' reward statistics) are updated;
8. **log** metrics (JSONL + TensorBoard) and checkpoint.

Under torchrun (``forage train --nproc N``, :mod:`.distributed`) each rank rolls out its share of step 1,
the shares are gathered, steps 2-5 and 7 run on the whole batch on every rank alike, step 6 splits the
batch over the ranks with the whole batch's normalisers and reduces the gradients (DDP or FSDP2), and
rank 0 logs, checkpoints and pushes weights to a vLLM server.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..agents.evaluate import answer_entropy, group_key, is_success
from ..agents.trajectory import Trajectory, save_jsonl
from . import losses as L
from .advantages import group_advantages, group_stats
from .budget import TaskStats, allocate, zero_variance_groups
from .checkpoint import (checkpoint_path, latest_checkpoint, load_checkpoint, optimizer_by_index, optimizer_by_name,
                         prune_checkpoints, rng_state, save_checkpoint, set_rng_state)
from .config import TrainConfig, config_to_dict, validate_config
from .distributed import World, full_model_state, init_world, micro_batch_count, pad_passes, shard, wrap_for_loss
from .metrics import MetricsLogger
from .model import Reference, load_model, pad_id, trainable
from .packing import policy_tokens
from .replay import ReplayBuffer, ReplayEntry
from .rollouts import FunctionSource, RolloutFn, VLLMSource, engine_config, make_source
from .schedules import EntropyScaler, Schedule
from .update import LossTerm, accumulate, recompute_logprobs
from .warmup import demonstrations as oracle_demonstrations, sft

__all__ = ["Trainer", "load_model", "RolloutFn"]


def _make_shaper(cfg: TrainConfig) -> Any:
    from .shaping import RewardShaper

    return RewardShaper(cfg.curriculum, cfg.bonus)


def rollout_time_split(trajs: Sequence[Trajectory], wall_s: float) -> dict[str, float]:
    """The rollout's wall time split into generation and env time (episodes run concurrently, so the split is
    each share of the summed per-episode times), and the tokens generated."""
    gen = sum(t.timings.get("generate_s", 0.0) for t in trajs)
    env = sum(t.timings.get("env_s", 0.0) for t in trajs)
    share = gen / (gen + env) if gen + env > 0 else 1.0
    return {"time/generate_s": max(0.0, wall_s) * share, "time/env_s": max(0.0, wall_s) * (1.0 - share),
            "tokens/generated": float(sum(t.num_generated for t in trajs))}


class Trainer:
    """GRPO-family trainer with SPEAR self-imitation replay; see the module docstring for one step."""

    def __init__(self, cfg: TrainConfig, model: Any = None, tokenizer: Any = None,
                 rollout_fn: RolloutFn | None = None, progress: bool = True) -> None:
        """Under torchrun, every rank builds one (it joins the process group); ``rollout_fn`` then returns the
        calling rank's share of the step's episodes (``trainer.world.rank`` of ``trainer.world.size``)."""
        validate_config(cfg)   # a bad config fails here, before any model loads
        self.cfg = cfg
        d = cfg.distributed
        self.world: World | None = init_world(d.strategy, d.backend, d.timeout_s)
        if self.world is not None and cfg.rollout.ray:
            raise ValueError("rollout.ray does not combine with torchrun: each rank rolls out its own share")
        progress = progress and (self.world is None or self.world.main)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if model is None:
            model, loaded_tok = load_model(cfg.model, seed=cfg.seed)
            tokenizer = tokenizer or loaded_tok
        self.model, self.tokenizer, self.progress = model, tokenizer, progress
        self.device = next(model.parameters()).device
        # rollouts run on an unsharded model: the training model itself, or under FSDP a full copy (refreshed
        # from the shards before each rollout); the loss runs through the DDP wrapper or the sharded model
        self.rollout_model = model
        self.loss_model = model
        self._rollout_model_step: int | None = 0
        if self.world is not None:
            if self.world.strategy == "fsdp":
                self.rollout_model = copy.deepcopy(model).eval().requires_grad_(False)
            self.loss_model = wrap_for_loss(model, self.world)
        self.rollout_fn = rollout_fn
        self.source = FunctionSource(rollout_fn, self.rollout_model) if rollout_fn is not None else make_source(
            self.rollout_model, tokenizer, cfg.rollout, cfg.model.path, cfg.model.lora.enabled, cfg.run_dir, progress)
        self.step = 0
        self.model.train()
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([p for _, p in trainable(model)], lr=o.lr, weight_decay=o.weight_decay,
                                           betas=tuple(o.betas), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.reference: Reference | None = None     # snapshot of the policy at the first step (after the cold start)
        self.replay = ReplayBuffer(cfg.replay)
        self.shaper = _make_shaper(cfg)
        self.task_stats = TaskStats(cfg.budget.prior, cfg.budget.window)
        self.entropy_scaler = EntropyScaler(cfg.curriculum.entropy_target, cfg.curriculum.entropy_gain)
        # separate streams, so that replay (sampling, Clip-Cov picks) never shifts the task draws or the PG picks
        # (the task draws and replay sampling are the same on every rank; the Clip-Cov picks are each rank's own)
        self.rng = np.random.default_rng(cfg.seed)
        self.replay_rng = np.random.default_rng(cfg.seed + 2)
        self.cov_gen, self.sil_cov_gen = torch.Generator(), torch.Generator()
        self._seed_rank_streams(0)
        self.logger: MetricsLogger | None = None
        self._task_ids: list[str] | None = None
        self.warmed_up = cfg.warmup.episodes <= 0

    def _seed_rank_streams(self, step: int) -> None:
        """Seed the Clip-Cov generators (rank 0 at step 0: the single-process seeds; others: their own streams)."""
        rank = self.world.rank if self.world is not None else 0
        if rank == 0 and step == 0:
            self.cov_gen.manual_seed(self.cfg.seed + 1)
            self.sil_cov_gen.manual_seed(self.cfg.seed + 4)
            return
        a, b = np.random.SeedSequence([self.cfg.seed, rank, step]).generate_state(2)
        self.cov_gen.manual_seed(int(a))
        self.sil_cov_gen.manual_seed(int(b))

    def _lr_lambda(self, step: int) -> float:
        o = self.cfg.optim
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.scheduler == "cosine":
            span = max(1, self.cfg.steps - o.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - o.warmup_steps) / span)))
        return 1.0

    # -- one training step -----------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """Roll out, shape, advantages, filter, replay, update; returns this step's metrics (also logged)."""
        step, a, cfg = self.step, self.cfg.algo, self.cfg
        m: dict[str, Any] = {}
        t0 = time.perf_counter()
        if a.kl_coef > 0 and self.reference is None:   # after the cold start, before any RL update
            self.reference = Reference(self.model, cfg.model.lora.enabled)

        # 1. roll out
        trajs = self.collect(step)
        m["time/rollout_s"] = time.perf_counter() - t0
        if self.rollout_fn is None and (cfg.rollout.ray or cfg.rollout.backend == "vllm"):
            m["time/weight_sync_s"] = self.source.last_sync_s
        if not trajs:
            raise RuntimeError(f"step {step}: the rollout returned no trajectories")
        m.update(rollout_time_split(trajs, m["time/rollout_s"] - m.get("time/weight_sync_s", 0.0)))
        groups = [group_key(t) for t in trajs]
        successes = [is_success(t) for t in trajs]
        valid = [t.error is None for t in trajs]

        # 2. shape (a function of the batch as a set; the shaper's history changes after the step)
        shaped = self.shaper.shape(trajs, groups, successes, step, tool_scale=self.entropy_scaler.factor())

        # 3. advantages, errored episodes out of the group statistics
        adv = group_advantages(shaped, groups, a.advantage, valid=valid)

        # 4. filter
        reasons = [self.filter_reason(t) for t in trajs]
        dropped = zero_variance_groups([r for r, v in zip(shaped, valid) if v], [g for g, v in zip(groups, valid) if v]) \
            if cfg.budget.filter_zero_variance else set()
        train = [i for i, (g, r) in enumerate(zip(groups, reasons)) if g not in dropped and r is None]
        m.update({"budget/groups": len(set(groups)), "budget/zero_variance_groups": len(dropped),
                  "budget/episodes_used": len(train), "budget/episodes": len(trajs),
                  **{f"filter/{k}": reasons.count(k) for k in ("error", "empty", "overlong", "repetitive")},
                  "filter/errors": reasons.count("error")})

        # 5. replay: taken before this step's episodes enter the buffer, then the buffer is cleared
        replay_batch: list[tuple[ReplayEntry, float]] = []
        w = 0.0
        if cfg.replay.enabled:
            m["replay/expired"] = self.replay.expire(step)
            m["replay/above_baseline"] = self.replay.above_baseline()
            w = Schedule(cfg.replay.weight)(step)
            replay_batch = self.replay.take(self.replay_rng)
            m.update({"replay/weight": w, "replay/fired": float(bool(replay_batch))})

        # 6. one optimizer step on PG + w * SIL
        t1 = time.perf_counter()
        st = self.update([trajs[i] for i in train], [float(adv[i]) for i in train], replay_batch, w)
        m.update(st)
        if "entropy/token" in st:
            self.entropy_scaler.observe(st["entropy/token"])
        with warnings.catch_warnings():  # the LR follows the step count even when no update ran
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        m["time/update_s"] = time.perf_counter() - t1
        if replay_batch:
            m.update({"sil/adv_mean": float(np.mean([x for _, x in replay_batch])),
                      "sil/staleness": float(np.mean([step - e.step for e, _ in replay_batch]))})

        # 7. after the step: shaping history, per-task success counts, replay admission
        self.shaper.commit(trajs, groups, successes)
        self.task_stats.record([g for g, v in zip(groups, valid) if v], [float(s) for s, v in zip(successes, valid) if v])
        if cfg.replay.enabled:
            trained = [trajs[i] for i in train]
            self.replay.record_groups(group_stats([shaped[i] for i in train], [groups[i] for i in train]))
            m["replay/added"] = self.replay.add(trained, [shaped[i] for i in train], [float(adv[i]) for i in train], step)
            m["replay/size"] = len(self.replay)
            base, _ = self.replay.baseline()
            m["replay/baseline"] = base if base is not None else float("nan")

        # 8. log
        m.update(self.rollout_metrics(trajs, groups, successes, shaped, adv))
        m["time/step_s"] = time.perf_counter() - t0
        self.step += 1
        if self.logger is not None:
            self.logger.log(step, m)
            if cfg.save_rollouts:
                for t, x in zip(trajs, adv.tolist()):
                    t.metadata["advantage"] = x
                save_jsonl(trajs, cfg.run_dir / "rollouts" / f"step-{step:06d}.jsonl")
        return m

    def filter_reason(self, t: Trajectory) -> str | None:
        """Why an episode gets no loss (``error``, ``empty``, ``overlong``, ``repetitive``), or None."""
        a = self.cfg.algo
        if t.error:
            return "error"
        if t.num_generated == 0:
            return "empty"
        if a.filter_overlong and (t.stop_reason in ("context_length", "token_budget")
                                  or (t.metadata.get("finish_reasons") or [None])[-1] == "length"):
            return "overlong"
        if a.filter_repetitive:
            gen = [tok for tok, m in zip(t.token_ids, t.loss_mask) if m]
            if L.repetition_ratio(gen, a.repetition_ngram) > a.repetition_threshold:
                return "repetitive"
        return None

    def update(self, trajs: Sequence[Trajectory], advantages: Sequence[float],
               replay: Sequence[tuple[ReplayEntry, float]] = (), replay_weight: float = 0.0) -> dict[str, float]:
        """One optimizer step (per PPO epoch) on the PG loss of ``trajs`` plus ``replay_weight`` x the SIL loss
        of the replayed entries (first epoch only); no step at all when neither contributes."""
        a, r, o, T = self.cfg.algo, self.cfg.replay, self.cfg.optim, self.cfg.rollout.temperature
        pad = pad_id(self.tokenizer)
        out: dict[str, float] = {}
        recompute = a.behaviour_logprobs == "recompute" or (a.behaviour_logprobs == "auto" and T != 1.0)
        # auto on one process with one epoch: the update's own forward gives the values a recompute pass would
        # (same weights, no step in between), so that pass is skipped and its log-probs are taken from the update
        fused = recompute and a.behaviour_logprobs == "auto" and a.ppo_epochs == 1 and self.world is None
        if trajs and recompute and not fused:
            out["pg/recompute_gap"] = self._recompute(trajs, T, pad)
        norm_len = float(self.cfg.generation_budget())
        pg_term = LossTerm(a.clip_low, a.clip_high, a.cov, a.loss_agg, norm_len, T, kl_coef=a.kl_coef,
                           kl_estimator=a.kl_estimator, entropy_coef=a.entropy_coef, generator=self.cov_gen,
                           old_is_current=fused)
        sil_term = LossTerm(r.clip_low, r.clip_high, r.cov, a.loss_agg, norm_len, T, weight=replay_weight,
                            clamp_negative=True, generator=self.sil_cov_gen)
        params = [p for _, p in trainable(self.model)]
        sil_on = bool(replay) and replay_weight != 0
        for epoch in range(a.ppo_epochs):
            with_sil = sil_on and epoch == 0
            if not trajs and not with_sil:
                break
            self.optimizer.zero_grad(set_to_none=True)
            if trajs:
                pg = self._accumulate(trajs, advantages, pg_term, pad, self.reference)
                if epoch == 0:
                    out.update({"loss/pg": pg["loss"], "entropy/token": pg["entropy"], "pg/clipfrac": pg["clipfrac"],
                                "pg/ratio_mean": pg["ratio_mean"], "pg/ratio_max_dev": pg["ratio_max_dev"],
                                "pg/logp_gap": pg["logp_gap"],
                                "pg/kl": pg["kl"], "pg/cov_removed": pg["cov_removed"],
                                "pg/cov_penalised": pg["cov_penalised"], "pg/tokens": pg["tokens"]})
                    if fused:
                        out["pg/recompute_gap"] = pg["recompute_gap"]
            if with_sil:
                sil = self._accumulate([e.traj for e, _ in replay], [x for _, x in replay], sil_term, pad)
                out.update({"loss/sil": sil["loss"], "sil/episodes": float(len(replay)), "sil/clipfrac": sil["clipfrac"],
                            "sil/ratio_mean": sil["ratio_mean"], "sil/cov_removed": sil["cov_removed"],
                            "sil/tokens": sil["tokens"]})
            gnorm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else float("inf"))
            gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm   # FSDP: a DTensor
            out["pg/grad_norm" if epoch == 0 else f"pg/grad_norm_epoch{epoch}"] = float(gnorm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if replay and not sil_on:
            out["sil/episodes"] = float(len(replay))   # taken (and cleared) at weight 0: no gradient
        return out

    def _accumulate(self, trajs: Sequence[Trajectory], advantages: Sequence[float], term: LossTerm, pad: int,
                    reference: Reference | None = None) -> dict[str, float]:
        """:func:`~.update.accumulate` over the whole ``trajs``: in one process directly; on several ranks each
        back-propagates its share with the whole set's normalisers and its gradient scaled by the rank count
        (DDP and FSDP2 average the ranks' gradients: the result is their sum, the single-process gradient)."""
        mbt, w = self.cfg.optim.micro_batch_tokens, self.world
        if w is None:
            return accumulate(self.model, trajs, advantages, term, mbt, pad, reference)
        mine, mine_adv = shard(trajs, w), shard(advantages, w)
        scaled = dataclasses.replace(term, weight=term.weight * w.size)
        n = micro_batch_count(mine, mbt)
        most = w.max_int(n)   # before any pass: the passes' own collectives must line up across the ranks
        st = accumulate(self.loss_model, mine, mine_adv, scaled, mbt, pad, reference,
                        num_tokens=float(sum(policy_tokens(t) for t in trajs)), num_seqs=float(len(trajs)))
        pad_passes(self.loss_model, most - n, backward=term.weight != 0)
        return w.reduce_stats(st)

    def _recompute(self, trajs: Sequence[Trajectory], temperature: float, pad: int) -> float:
        """:func:`~.update.recompute_logprobs` over ``trajs``; on several ranks each recomputes its share and the
        new log-probs are gathered, so every rank (and its replay buffer) holds the same ones."""
        mbt, w = self.cfg.optim.micro_batch_tokens, self.world
        if w is None:
            return recompute_logprobs(self.model, trajs, temperature, mbt, pad)
        mine = shard(trajs, w)
        n = micro_batch_count(mine, mbt)
        most = w.max_int(n)
        gap = recompute_logprobs(self.model, mine, temperature, mbt, pad)
        if w.strategy == "fsdp":   # the sharded forward all-gathers: match the other ranks' passes
            pad_passes(self.model, most - n, backward=False)
        for t, lp in zip(trajs, w.gather([t.logprobs for t in mine])):
            t.logprobs = lp
        weights = w.gather([(gap, sum(policy_tokens(t) for t in mine))])
        total = sum(n for _, n in weights)
        return sum(g * n for g, n in weights) / total if total else 0.0

    def rollout_metrics(self, trajs: Sequence[Trajectory], groups: Sequence[str], successes: Sequence[bool],
                        shaped: Sequence[float], adv: torch.Tensor) -> dict[str, Any]:
        """What the step's episodes looked like: rewards, success, tools, turns, answer entropy, components."""
        by: dict[str, list[str | None]] = {}
        for t, g in zip(trajs, groups):
            by.setdefault(g, []).append(t.answer)
        m: dict[str, Any] = {
            "reward/mean": float(np.mean([t.reward for t in trajs])), "reward/shaped_mean": float(np.mean(shaped)),
            "success/rate": float(np.mean(successes)),
            "tools/calls_mean": float(np.mean([t.num_tool_calls for t in trajs])),
            "turns/mean": float(np.mean([t.num_turns for t in trajs])),
            "tokens/generated_mean": float(np.mean([t.num_generated for t in trajs])),
            "entropy/answer": float(np.mean([answer_entropy(v) for v in by.values()])),
            "adv/abs_mean": float(adv.abs().mean()), "lr": float(self.scheduler.get_last_lr()[0]),
        }
        c = self.cfg.curriculum
        if c.tool_call_reward:
            m["curriculum/tool_call_scale"] = Schedule(c.schedule)(self.step) * self.entropy_scaler.factor()
        for k in sorted({k for t in trajs for k in t.reward_components}):
            m[f"reward/{k}"] = float(np.mean([t.reward_components.get(k, 0.0) for t in trajs]))
        return m

    # -- rollouts ----------------------------------------------------------------------------------
    def task_ids(self) -> list[str]:
        """Every task id of the training env, in the env's order."""
        if self._task_ids is None:
            import gymnasium as gym

            import forage  # noqa: F401  (registers the envs)

            env = gym.make(self.cfg.rollout.env, disable_env_checker=True, **self.cfg.rollout.env_kwargs)
            try:
                self._task_ids = [t.id for t in env.unwrapped.tasks]
            finally:
                env.close()
        return self._task_ids

    def task_pool(self) -> list[str]:
        """Task ids of the training env (the first ``rollout.task_pool`` of them)."""
        n = self.cfg.rollout.task_pool
        return self.task_ids()[:n] if n else self.task_ids()

    def plan_tasks(self) -> tuple[list[str], dict[str, int]]:
        """This step's tasks (drawn with the trainer's RNG) and samples per task."""
        r = self.cfg.rollout
        pool = self.task_pool()
        k = min(r.tasks_per_step, len(pool))
        tasks = [pool[int(i)] for i in self.rng.choice(len(pool), size=k, replace=False)]
        if self.cfg.budget.knapsack:
            return tasks, allocate(tasks, k * r.group_size, self.task_stats, self.cfg.budget)
        return tasks, {t: r.group_size for t in tasks}

    def collect(self, step: int) -> list[Trajectory]:
        """This step's episodes: the ``rollout_fn``'s, or the planned tasks through the rollout source (on several
        ranks: each rank's share, gathered in rank order)."""
        self._prepare_rollouts()
        if self.rollout_fn is not None:
            local = list(self.rollout_fn(step, self.rollout_model))
        else:
            local = self.default_rollout(step, self.rollout_model)
        return self.world.gather(local) if self.world is not None else local

    def _prepare_rollouts(self) -> None:
        """On several ranks, before rolling out: refresh the FSDP rollout copy from the shards (every rank), and
        with a vLLM server let rank 0 start it (unless ``rollout.vllm_url``) and push the weights, the others wait."""
        w = self.world
        if w is None:
            return
        if w.strategy == "fsdp" and self._rollout_model_step != self.step:
            self.rollout_model.load_state_dict(full_model_state(self.model, w, cpu_offload=False))
            self._rollout_model_step = self.step
        if not isinstance(self.source, VLLMSource):
            return
        from ..agents.vllm_weights import WeightSyncError

        url, err = None, None
        if w.main:
            try:
                url = self.source.url()
                self.source.sync(self.step)
            except Exception as e:   # the other ranks must hear of it, not wait for a push that never comes
                err = f"{type(e).__name__}: {e}"
        url, err = w.broadcast((url, err))
        if err is not None:
            raise WeightSyncError(f"rank 0 could not push the weights to the vLLM server: {err}")
        if not w.main:   # same server, weights already pushed by rank 0
            self.source.cfg.vllm_url = url
            self.source.url()
            self.source.pushed_version = self.step

    def default_rollout(self, step: int, model: Any) -> list[Trajectory]:
        """Roll out this step's planned tasks with the rollout source (weights pushed first if stale); on several
        ranks, this rank's contiguous share of them, sampled with its own seed."""
        tasks, alloc = self.plan_tasks()
        jobs = [t for t in tasks for _ in range(alloc[t])]
        seed = int(self.rng.integers(0, 2**31 - 1))
        if self.world is not None:
            jobs = shard(jobs, self.world)
            seed = int(np.random.SeedSequence([seed, self.world.rank]).generate_state(1)[0]) & 0x7FFFFFFF
        config = engine_config(self.cfg.rollout, self.step, seed=seed)
        bar: Any = False
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc=f"step {step} rollouts", unit="ep", leave=False, dynamic_ncols=True)
        try:
            return self.source.run(jobs, config, self.step, progress=bar)
        finally:
            if bar is not False:
                bar.close()

    def evaluate(self, task_ids: Sequence[str], temperature: float = 0.0, seed: int = 0,
                 per_task: bool = False) -> dict[str, Any]:
        """Success rate and mean reward over ``task_ids`` (one episode each, greedy by default); ``per_task``
        adds ``successes``, each task's 0/1 in the order of ``task_ids``."""
        source = self.source if self.rollout_fn is None else make_source(
            self.rollout_model, self.tokenizer, self.cfg.rollout, self.cfg.model.path, self.cfg.model.lora.enabled,
            self.cfg.run_dir, self.progress)
        self._prepare_rollouts()
        config = engine_config(self.cfg.rollout, self.step, temperature, seed)
        trajs = source.run(shard(list(task_ids), self.world), config, self.step)
        if self.world is not None:   # each rank scored its share of the tasks
            trajs = self.world.gather(trajs)
        succ = [is_success(t) for t in trajs]
        out: dict[str, Any] = {"success": float(np.mean(succ)) if succ else 0.0,
                               "reward": float(np.mean([t.reward for t in trajs])) if trajs else 0.0,
                               "tool_calls": float(np.mean([t.num_tool_calls for t in trajs])) if trajs else 0.0}
        if per_task:
            by_task = {t.task_id: int(s) for t, s in zip(trajs, succ)}
            out["successes"] = [by_task.get(tid, 0) for tid in task_ids]
        return out

    def sync_rollout_weights(self) -> float:
        """Push the current weights to the Ray actors or the vLLM server if theirs are older; returns seconds."""
        return self.source.sync(self.step)

    def ray_rollout_engine(self) -> Any:
        """The Ray actors' engine (``rollout.ray``), made on first use."""
        return self.source.actors(self.step)

    @property
    def _pushed_version(self) -> int | None:
        return getattr(self.source, "pushed_version", None)

    @property
    def _last_sync_s(self) -> float:
        return self.source.last_sync_s

    @property
    def _ray_engine(self) -> Any:
        return getattr(self.source, "engine", None)

    def close(self) -> None:
        """Stop what the rollout source started (Ray actors, a vLLM server)."""
        self.source.close()

    # -- cold start ------------------------------------------------------------------------------
    def demonstrations(self) -> list[Trajectory]:
        """``warmup.episodes`` successful oracle episodes of tasks outside the training pool."""
        return oracle_demonstrations(self.cfg.warmup, self.cfg.rollout, self.tokenizer, len(self.task_pool()))

    def warm_start(self, demos: Sequence[Trajectory] | None = None) -> dict[str, float]:
        """Cold-start SFT on ``demos`` (default :meth:`demonstrations`); the KL reference is taken after it."""
        demos = list(demos) if demos is not None else self.demonstrations()
        stats = sft(self.model, demos, self.cfg.warmup, pad_id(self.tokenizer), self.cfg.optim.grad_clip,
                    self.cfg.seed + 3, self.progress)
        if self.world is not None and self.world.strategy == "ddp":   # the replicas start RL from rank 0's weights
            self.world.broadcast_params(self.model)
        self.warmed_up = True
        self.reference = None   # re-snapshot at the first RL step: the reference is the post-warm-start policy
        return stats

    def cold_start_once(self) -> None:
        """The warm start, unless done already (or resumed past it); its figures go to RUN/warmup.json."""
        if self.warmed_up:
            return
        warm = self.warm_start()   # on several ranks: the same SFT on each (replicated, not split)
        if self.world is not None and not self.world.main:
            return
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (self.cfg.run_dir / "warmup.json").write_text(json.dumps(warm, indent=2))
        if self.progress:
            print(f"warm start: SFT on {warm['warmup/demos']:.0f} oracle demonstrations, "
                  f"NLL {warm['warmup/nll_first']:.3f} -> {warm['warmup/nll_last']:.3f}", flush=True)

    # -- the run ---------------------------------------------------------------------------------
    def train(self, steps: int | None = None, eval_fn: Callable[["Trainer"], dict[str, float]] | None = None) -> Path:
        """Run until ``steps`` (default ``cfg.steps``) with a progress bar; returns the run folder.

        ``eval_fn(trainer)`` runs every ``cfg.eval_every`` steps and after the last one; its figures are
        logged as ``eval/...`` with that step's metrics."""
        total = self.cfg.steps if steps is None else steps
        run_dir = self.cfg.run_dir
        if self.world is None or self.world.main:   # rank 0 writes the run folder
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(config_to_dict(self.cfg), indent=2))
            self.logger = MetricsLogger(run_dir, self.cfg.tensorboard)
            self.logger.truncate_after(self.step)
        bar = None
        try:
            self.cold_start_once()
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
            while self.step < total:
                m = self.train_step()
                if eval_fn is not None and (self.step == total or (self.cfg.eval_every
                                                                   and self.step % self.cfg.eval_every == 0)):
                    ev = eval_fn(self)
                    if self.logger is not None:
                        self.logger.log(self.step - 1, {**m, **{f"eval/{k}": v for k, v in ev.items()}})
                if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                    self.save()
                if bar is not None:
                    bar.update(1)
                    loss = f"{m['loss/pg']:.3f}" if "loss/pg" in m else "skipped (no reward variance)"
                    bar.set_postfix(reward=f"{m['reward/mean']:.2f}", success=f"{m['success/rate']:.2f}",
                                    loss=loss, replay=m.get("replay/size", 0))
            if self.cfg.save_final_checkpoint and (not self.cfg.checkpoint_every or self.step % self.cfg.checkpoint_every):
                self.save()
        finally:
            if bar is not None:
                bar.close()
            if self.logger is not None:
                self.logger.close()
            self.close()
        return run_dir

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to take the same next step.

        On several ranks every rank must call it (FSDP gathers the shards, and each rank's own random streams
        are gathered under ``ranks``); only rank 0's result is complete, in the single-process format."""
        w = self.world
        names = [k for k, _ in trainable(self.model)]
        if w is not None and w.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            full = full_model_state(self.model, w)   # on rank 0 only
            model = {k: full[k] for k in names if k in full}
            opt = get_optimizer_state_dict(self.model, self.optimizer,
                                           options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            optimizer = optimizer_by_index(opt, names) if w.main else {}
        else:
            model = {k: v.detach().cpu().clone() for k, v in trainable(self.model)}
            optimizer = self.optimizer.state_dict()
        own = {"cov_rng": self.cov_gen.get_state(), "sil_cov_rng": self.sil_cov_gen.get_state(), "rng": rng_state()}
        st = {
            "step": self.step,
            "warmed_up": self.warmed_up,
            "config": config_to_dict(self.cfg),
            "model": model,
            "reference": self.reference.state_dict() if self.reference is not None else None,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "replay": self.replay.state_dict(),
            "shaper": self.shaper.state_dict(),
            "task_stats": self.task_stats.state_dict(),
            "entropy_scaler": self.entropy_scaler.state_dict(),
            "trainer_rng": self.rng.bit_generator.state,
            "replay_rng": self.replay_rng.bit_generator.state,
            **own,
        }
        if w is not None:
            st["world_size"] = w.size
            st["ranks"] = w.gather_to_main(own)
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the model must be built the same way).

        Any strategy and rank count can load any checkpoint: the model, optimizer, replay buffer, shaping,
        schedules and the shared random streams are whole in it. Each rank's own streams (Clip-Cov picks, the
        global RNGs) come back only on the rank count that wrote them; on another count they are re-seeded
        (with a warning), so the run goes on correctly but does not repeat the uninterrupted run step for step."""
        missing = set(st["model"]) - {k for k, _ in self.model.named_parameters()}
        if missing:
            raise ValueError(f"checkpoint has parameters the model lacks: {sorted(missing)[:5]}")
        if st.get("reference") is not None:   # the post-warm-start snapshot, not the freshly loaded base
            self.reference = Reference(self.model, self.cfg.model.lora.enabled)
            self.reference.load_state_dict(st["reference"])
        w = self.world
        if w is not None and w.strategy == "fsdp":   # every rank shards the full tensors it read
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, strict=False)
            names = [k for k, _ in trainable(self.model)]
            set_model_state_dict(self.model, st["model"], options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_by_name(st["optimizer"], names), options=opts)
        else:
            self.model.load_state_dict(st["model"], strict=False)
            self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.replay.load_state_dict(st["replay"])
        self.shaper.load_state_dict(st["shaper"])
        self.task_stats.load_state_dict(st["task_stats"])
        self.entropy_scaler.load_state_dict(st["entropy_scaler"])
        self.rng.bit_generator.state = st["trainer_rng"]
        self.replay_rng.bit_generator.state = st["replay_rng"]
        self.step = int(st["step"])
        self.warmed_up = bool(st.get("warmed_up", True))
        self._rollout_model_step = None
        rank, size = (w.rank, w.size) if w is not None else (0, 1)
        ranks = st.get("ranks") or [{k: st[k] for k in ("cov_rng", "sil_cov_rng", "rng")}]
        if len(ranks) == size:
            own = ranks[rank]
            self.cov_gen.set_state(own["cov_rng"])
            self.sil_cov_gen.set_state(own["sil_cov_rng"])
            set_rng_state(own["rng"])
        else:
            warnings.warn(f"a checkpoint of {len(ranks)} rank(s) resumed on {size}: each rank's own random streams "
                          "are re-seeded, so this run does not repeat the uninterrupted one step for step")
            self._seed_rank_streams(self.step)
            seed = int(np.random.SeedSequence([self.cfg.seed, rank, self.step, 1]).generate_state(1)[0])
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)

    def save(self) -> Path:
        """Checkpoint into ``run_dir/checkpoints/step-NNNNNN``, keeping the newest few (rank 0 writes it; every
        rank must call this on several ranks, and returns once it is on disk)."""
        st = self.state_dict()
        path = checkpoint_path(self.cfg.run_dir, self.step)
        if self.world is None or self.world.main:
            path = save_checkpoint(self.cfg.run_dir, self.step, st)
            prune_checkpoints(self.cfg.run_dir, self.cfg.keep_checkpoints)
        if self.world is not None:
            self.world.barrier()
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Load a checkpoint (default: the run's newest); returns the step it resumes at (0: none)."""
        ckpt = Path(path) if path else latest_checkpoint(self.cfg.run_dir)
        if ckpt is None:
            return 0
        self.load_state_dict(load_checkpoint(ckpt))
        return self.step
