"""Trainer configuration: one dataclass per component, loaded from YAML or TOML and validated on load.

Every mode is a ``Literal``; :func:`config_from_dict` checks each value's type and each
component's ranges and combinations (:func:`validate_config`), so a bad key, mode, value or
combination is a :class:`ConfigError` naming the key before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

__all__ = [
    "ModelConfig", "LoraConfig", "RolloutConfig", "AlgoConfig", "CovConfig", "ReplayConfig",
    "ScheduleConfig", "CurriculumConfig", "BonusConfig", "BudgetConfig", "OptimConfig", "WarmupConfig", "DistributedConfig",
    "TrainConfig",
    "load_config", "config_from_dict", "config_to_dict", "validate_config", "ConfigError",
    "CLIP_COV_RATIO", "KL_COV_RATIO",
]

# the Entropy-Mechanism authors' defaults (PRIME-RL/Entropy-Mechanism-of-RL recipe/dapo/7b_*.sh):
CLIP_COV_RATIO = 0.0002   # clip_cov_ratio
KL_COV_RATIO = 0.002      # k_percent = 0.2 (a percentage there)


class ConfigError(ValueError):
    """A config has an unknown key, a value of the wrong kind or range, or a combination that cannot work."""


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class LoraConfig:
    """Optional LoRA adapters (peft); only the adapters train when enabled."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def check(self, where: str) -> None:
        _need(self.r >= 1, f"{where}.r", f"must be >= 1, got {self.r}")
        _need(0.0 <= self.dropout < 1.0, f"{where}.dropout", f"must be in [0, 1), got {self.dropout}")
        _need(bool(self.target_modules), f"{where}.target_modules", "must name at least one module")


@dataclass
class ModelConfig:
    """The HF causal LM to train: ``path`` is a folder, a cached hub id, ``default`` (SmolLM2) or
    ``tiny-random`` (a small random Llama built in memory, for tests; needs ``tokenizer`` or ``tiny_vocab``)."""

    path: str = "default"
    tokenizer: str | None = None          # default: same as path
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"   # auto: fp32 on CPU, bf16 on GPU
    # bf16 autocast of the forward/backward over fp32 weights (the optimizer keeps fp32). auto: on when the
    # weights are fp32 on a CPU that multiplies bf16 in hardware (AVX-512 BF16 / AMX / Arm BF16), else off.
    autocast: Literal["auto", "bfloat16", "off"] = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny_layers: int = 2                  # only for path: tiny-random
    tiny_hidden: int = 64
    tiny_vocab: int = 0                   # 0: the tokenizer's vocabulary size

    def check(self, where: str) -> None:
        if self.path == "tiny-random":
            _need(bool(self.tokenizer) or self.tiny_vocab > 0, f"{where}.tiny_vocab",
                  "model.path tiny-random needs model.tokenizer or model.tiny_vocab > 0")
            _need(self.tiny_hidden >= 4 and self.tiny_hidden % 4 == 0, f"{where}.tiny_hidden",
                  f"must be a positive multiple of 4 (4 attention heads), got {self.tiny_hidden}")
        _need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), f"{where}.device",
              f"unknown device {self.device!r}")


@dataclass
class RolloutConfig:
    """What to roll out each step and how (through ``forage.agents.RolloutEngine``).

    ``max_turns`` is the one turn limit of an episode: it is passed to the env (``env_kwargs``) and
    to the engine alike; None (the default) keeps the env's own limit. ``temperature`` divides the logits both when sampling
    and in every training log-prob; ``top_p`` < 1 is refused (no training log-prob applies it).
    """

    env: str = "forage/LookupQA-1hop-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    tasks_per_step: int = 4
    group_size: int = 4
    max_new_tokens: int = 96
    max_context: int = 1024
    max_turns: int | None = None   # None: the env's own limit (e.g. LookupQA's 6); set it to change that
    temperature: float = 1.0
    top_p: float = 1.0
    concurrency: int = 64
    backend: Literal["hf", "vllm"] = "hf"   # hf: the training model itself | vllm: a vLLM server, weights pushed
    vllm_url: str | None = None           # backend vllm: a server started with weight sync (None: start one)
    task_pool: int | None = None          # train on the first N tasks only (None: all)
    ray: str | None = None                # local | auto | ADDRESS: roll out in Ray actors (weights pushed each step)
    ray_actors: int = 2

    def check(self, where: str) -> None:
        for k in ("tasks_per_step", "group_size", "max_new_tokens", "max_context", "concurrency"):
            _need(getattr(self, k) >= 1, f"{where}.{k}", f"must be >= 1, got {getattr(self, k)}")
        _need(self.max_turns is None or self.max_turns >= 1, f"{where}.max_turns", f"must be >= 1 or null, got {self.max_turns}")
        _need(self.task_pool is None or self.task_pool >= 1, f"{where}.task_pool", f"must be >= 1 or null, got {self.task_pool}")
        _need(self.temperature > 0, f"{where}.temperature",
              f"must be > 0 (training log-probs divide the logits by it), got {self.temperature}")
        _need(self.top_p == 1.0, f"{where}.top_p",
              f"top-p {self.top_p} is not applied to training log-probs (the PPO ratio would compare different "
              "distributions); use 1.0")
        _need(self.ray is None or self.backend == "hf", f"{where}.ray",
              f"rollout.ray runs HF copies of the model in the actors; it does not combine with rollout.backend "
              f"{self.backend!r} (use backend hf, or drop rollout.ray)")
        _need(self.ray_actors >= 1, f"{where}.ray_actors", f"must be >= 1, got {self.ray_actors}")
        mt = self.env_kwargs.get("max_turns")
        _need(mt is None or self.max_turns is None or mt == self.max_turns, f"{where}.env_kwargs.max_turns",
              f"{mt} disagrees with rollout.max_turns {self.max_turns}; set the turn limit once (rollout.max_turns)")


@dataclass
class CovConfig:
    """Covariance regularisation (Entropy-Mechanism): ``clip_cov`` (drop gradient) or ``kl_cov`` (KL on top tokens)."""

    mode: Literal["none", "clip_cov", "kl_cov"] = "none"
    ratio: float | None = None            # fraction of policy tokens; None: the authors' default for the mode
    lb: float = 1.0                       # clip_cov bounds on the covariance
    ub: float = 5.0
    kl_coef: float = 1.0                  # kl_cov: weight of |log pi - log pi_old| (ppo_kl_coef)
    select: Literal["random", "top"] = "random"   # clip_cov: random among in-bound tokens (authors) | highest cov

    def resolved_ratio(self) -> float:
        """``ratio``, or the authors' default for the mode (Clip-Cov 0.0002, KL-Cov 0.002)."""
        if self.ratio is not None:
            return float(self.ratio)
        return KL_COV_RATIO if self.mode == "kl_cov" else CLIP_COV_RATIO

    def check(self, where: str) -> None:
        _need(self.ratio is None or 0 < self.ratio <= 1, f"{where}.ratio", f"must be in (0, 1], got {self.ratio}")
        _need(self.lb < self.ub, f"{where}.lb", f"must be below ub ({self.lb} >= {self.ub})")
        _need(self.kl_coef >= 0, f"{where}.kl_coef", f"must be >= 0, got {self.kl_coef}")


LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@dataclass
class AlgoConfig:
    """The on-policy update: advantages, PPO-clip, KL, entropy and the Dr.BoT switches."""

    advantage: Literal["grpo", "drgrpo", "rloo"] = "grpo"
    clip_low: float = 0.2
    clip_high: float = 0.2                # 0.28 for the asymmetric (clip-higher) variant
    kl_coef: float = 0.0                  # KL to the reference (the policy after the cold start); 0: none
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = 0.0
    loss_agg: LossAgg = "token-mean"      # seq-mean-token-sum-norm is Dr.GRPO's
    norm_len: int | None = None           # Dr.GRPO's constant: None = the generation budget (see generation_budget)
    # auto: recompute iff temperature != 1 (taken from the update's own forward when one epoch on one process
    # makes that exact); recompute: always, in a separate no-grad pass; rollout: the sampler's values
    behaviour_logprobs: Literal["auto", "rollout", "recompute"] = "auto"
    ppo_epochs: int = 1
    filter_overlong: bool = False         # drop episodes cut by the context/token limit
    filter_repetitive: bool = False       # drop episodes whose generated tokens repeat n-grams
    repetition_ngram: int = 4
    repetition_threshold: float = 0.5
    cov: CovConfig = field(default_factory=CovConfig)

    def check(self, where: str) -> None:
        for k in ("clip_low", "clip_high", "kl_coef"):
            _need(getattr(self, k) >= 0, f"{where}.{k}", f"must be >= 0, got {getattr(self, k)}")
        _need(self.clip_low < 1, f"{where}.clip_low", f"must be < 1, got {self.clip_low}")
        _need(self.ppo_epochs >= 1, f"{where}.ppo_epochs", f"must be >= 1, got {self.ppo_epochs}")
        _need(self.norm_len is None or self.norm_len >= 1, f"{where}.norm_len", f"must be >= 1 or null, got {self.norm_len}")
        _need(self.repetition_ngram >= 1, f"{where}.repetition_ngram", f"must be >= 1, got {self.repetition_ngram}")
        _need(0 <= self.repetition_threshold <= 1, f"{where}.repetition_threshold",
              f"must be in [0, 1], got {self.repetition_threshold}")


@dataclass
class ScheduleConfig:
    """A scalar over training steps: see :class:`forage.training.schedules.Schedule`."""

    kind: Literal["constant", "linear", "cosine_decay", "cosine_ramp", "step"] = "constant"
    value: float = 1.0                    # peak / constant value
    start: float | None = None            # linear: start value (default value)
    end: float = 0.0                      # linear: end value
    period: int = 200                     # T: steps of the ramp/decay
    warmup: int = 0                       # steps at 0 before the schedule starts

    def check(self, where: str) -> None:
        _need(self.period >= 0, f"{where}.period", f"must be >= 0, got {self.period}")
        _need(self.warmup >= 0, f"{where}.warmup", f"must be >= 0, got {self.warmup}")


@dataclass
class ReplayConfig:
    """SPEAR self-imitation replay, by default as the authors' code runs it (see docs/training.md)."""

    enabled: bool = False
    capacity: int = 2048                  # SPEAR trajectory_buffer_size: the trigger's scale and the batch cap
    trigger: Literal["spear", "min_size"] = "spear"   # spear: entries with R > p50 exceed trigger_factor x capacity
    trigger_factor: float = 1.5
    min_size: int = 4                     # trigger min_size: fire once this many entries are stored
    batch_size: int | None = None         # None: SPEAR's largest power of two <= eligible entries (<= capacity)
    sampling: Literal["uniform", "prioritized"] = "uniform"   # prioritized: by recalibrated advantage^alpha
    priority_alpha: float = 1.0
    tolerance: int = 5                    # drop entries made more than this many steps ago
    history: int = 10240                  # group-mean rewards kept for the baseline (SPEAR baseline_buffer_size)
    baseline_scope: Literal["global", "task"] = "global"   # global (SPEAR) | per-task history
    divide_std: bool = False              # divide by the median group std (SPEAR norm_adv_by_std_in_grpo, off)
    clear_after_use: bool = True          # SPEAR: the whole buffer is emptied after a replay pass
    clip_low: float = 0.2
    clip_high: float = 0.28
    weight: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(kind="cosine_ramp", value=1.0, period=200))
    cov: CovConfig = field(default_factory=lambda: CovConfig(mode="clip_cov", ratio=0.02, lb=1.0, ub=40.0))

    def check(self, where: str) -> None:
        for k in ("capacity", "min_size", "history"):
            _need(getattr(self, k) >= 1, f"{where}.{k}", f"must be >= 1, got {getattr(self, k)}")
        _need(self.batch_size is None or self.batch_size >= 1, f"{where}.batch_size",
              f"must be >= 1 or null, got {self.batch_size}")
        _need(self.trigger_factor > 0, f"{where}.trigger_factor", f"must be > 0, got {self.trigger_factor}")
        _need(self.tolerance >= 0, f"{where}.tolerance", f"must be >= 0, got {self.tolerance}")
        _need(self.priority_alpha >= 0, f"{where}.priority_alpha", f"must be >= 0, got {self.priority_alpha}")
        _need(0 <= self.clip_low < 1 and self.clip_high >= 0, f"{where}.clip_low",
              f"clip bounds must satisfy 0 <= clip_low < 1 and clip_high >= 0 ({self.clip_low}, {self.clip_high})")
        _need(self.cov.mode != "kl_cov", f"{where}.cov.mode",
              "kl_cov is not built for the replay pass (SPEAR's scripts use clip_cov there); use clip_cov or none")


@dataclass
class CurriculumConfig:
    """SPEAR's tool-call reward curriculum (its two rules), optionally scaled by the measured entropy.

    k = the episode's tool calls without the final answer call. ``rule`` ``all`` (SPEAR's Qwen2.5
    and agent scripts): every episode gets min(cap, per_call·k)·schedule(t); ``qwen3`` (SPEAR's
    Qwen3 scripts): a failed episode gets min(cap, per_call·k)·schedule(t), a successful one
    cap·1[k > 0]·schedule(t). SPEAR's schedule: (cos(πt/T)+1)/2 for t ≤ T = 200, then 0.
    """

    tool_call_reward: bool = False
    rule: Literal["all", "qwen3"] = "all"
    per_call: float = 0.1
    cap: float = 1.0
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(kind="cosine_decay", value=1.0, period=200))
    entropy_target: float | None = None   # set: scale the tool reward by the entropy gap
    entropy_gain: float = 1.0

    def check(self, where: str) -> None:
        _need(self.per_call >= 0, f"{where}.per_call", f"must be >= 0, got {self.per_call}")
        _need(self.cap >= 0, f"{where}.cap", f"must be >= 0, got {self.cap}")
        _need(self.entropy_target is None or self.entropy_target > 0, f"{where}.entropy_target",
              f"must be > 0 or null, got {self.entropy_target}")
        _need(self.entropy_gain >= 0, f"{where}.entropy_gain", f"must be >= 0, got {self.entropy_gain}")


@dataclass
class BonusConfig:
    """Exploration bonuses and OTC's tool efficiency (see :mod:`forage.training.shaping`).

    The novelty weights and an ``add``-mode OTC weight are scaled by ``schedule``. ``otc_mode``
    ``multiply`` is OTC-GRPO's reward: a correct episode's task reward r becomes otc·r_tool·r
    (``otc`` is OTC's α); ``add`` adds otc·schedule·r_tool to correct episodes instead.
    """

    episodic_novelty: float = 0.0
    global_novelty: float = 0.0
    novelty_product: float = 0.0          # per key: episodic x global, then combined (Henaff et al. 2023)
    novelty_reduce: Literal["sum", "mean"] = "sum"   # combine the per-key bonuses of an episode
    otc: float = 0.0                      # 0: off
    otc_mode: Literal["multiply", "add"] = "multiply"
    otc_c: float = 1.0                    # OTC's smoothing constant c (cos(m·π/(2m+c)) when the optimum is 0)
    otc_history: bool = True              # the optimum is also the fewest calls seen at earlier steps
    success_key: str = "correct"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def check(self, where: str) -> None:
        for k in ("episodic_novelty", "global_novelty", "novelty_product", "otc"):
            _need(getattr(self, k) >= 0, f"{where}.{k}", f"must be >= 0, got {getattr(self, k)}")
        _need(self.otc_c > 0, f"{where}.otc_c", f"must be > 0, got {self.otc_c}")


@dataclass
class BudgetConfig:
    """Rollout budget: zero-variance filtering and Knapsack-RL allocation (see :mod:`forage.training.budget`).

    A task's success rate is estimated from its last ``window`` rollout groups (Knapsack-RL uses
    the previous epoch's group, window 1), smoothed by ``prior`` pseudo-counts each way.
    """

    filter_zero_variance: bool = True     # drop groups whose rewards are all equal from the PG loss
    knapsack: bool = False                # spread tasks_per_step*group_size samples by task value
    min_group: int = 2
    max_group: int = 16
    window: int = 1                       # rollout groups per task kept for the success estimate
    prior: float = 0.0                    # Beta pseudo-counts added to successes and failures

    def check(self, where: str) -> None:
        _need(self.min_group >= 1, f"{where}.min_group", f"must be >= 1, got {self.min_group}")
        _need(self.max_group >= self.min_group, f"{where}.max_group",
              f"must be >= min_group ({self.max_group} < {self.min_group})")
        _need(self.window >= 1, f"{where}.window", f"must be >= 1, got {self.window}")
        _need(self.prior >= 0, f"{where}.prior", f"must be >= 0, got {self.prior}")


@dataclass
class OptimConfig:
    """AdamW, a warmup + constant/cosine scheduler, gradient clipping and packing."""

    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0                # <= 0: no clipping
    warmup_steps: int = 0
    scheduler: Literal["constant", "cosine"] = "constant"
    micro_batch_tokens: int = 4096

    def check(self, where: str) -> None:
        _need(self.lr > 0, f"{where}.lr", f"must be > 0, got {self.lr}")
        _need(self.weight_decay >= 0, f"{where}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{where}.betas",
              f"must be two numbers in [0, 1), got {self.betas}")
        _need(self.eps > 0, f"{where}.eps", f"must be > 0, got {self.eps}")
        _need(self.warmup_steps >= 0, f"{where}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _need(self.micro_batch_tokens >= 1, f"{where}.micro_batch_tokens", f"must be >= 1, got {self.micro_batch_tokens}")


@dataclass
class WarmupConfig:
    """Cold start: supervised fine-tuning on the env's oracle demonstrations before RL (as ReTool does).

    A small model that never emits a well-formed tool call gets no reward signal, so RL alone
    cannot start; a few demonstrations of the format fix that. Needs an env with
    ``oracle_actions(task)`` (LookupQA has one).
    """

    episodes: int = 0                     # 0: no warm start
    offset: int | None = None             # first demonstration task (default: right after the training pool)
    epochs: int = 1
    lr: float = 1e-5
    micro_batch_tokens: int = 4096

    def check(self, where: str) -> None:
        _need(self.episodes >= 0, f"{where}.episodes", f"must be >= 0, got {self.episodes}")
        _need(self.offset is None or self.offset >= 0, f"{where}.offset", f"must be >= 0 or null, got {self.offset}")
        _need(self.epochs >= 1, f"{where}.epochs", f"must be >= 1, got {self.epochs}")
        _need(self.lr > 0, f"{where}.lr", f"must be > 0, got {self.lr}")
        _need(self.micro_batch_tokens >= 1, f"{where}.micro_batch_tokens", f"must be >= 1, got {self.micro_batch_tokens}")


@dataclass
class DistributedConfig:
    """Training on several ranks under torchrun (``forage train --nproc N``; see forage/training/distributed.py).

    ``ddp`` keeps a whole model on each rank and all-reduces the gradients; ``fsdp`` shards parameters,
    gradients and optimizer state over the ranks (FSDP2 ``fully_shard`` on each transformer block). Ignored
    in a single process.
    """

    strategy: Literal["ddp", "fsdp"] = "ddp"
    backend: Literal["auto", "gloo", "nccl"] = "auto"   # auto: nccl with CUDA, else gloo
    timeout_s: int = 1800                 # a collective waiting longer than this fails the run

    def check(self, where: str) -> None:
        _need(self.timeout_s >= 1, f"{where}.timeout_s", f"must be >= 1, got {self.timeout_s}")


@dataclass
class TrainConfig:
    """The whole run."""

    name: str = "run"
    out_dir: str = "runs"
    steps: int = 10
    seed: int = 0
    checkpoint_every: int = 0             # 0: only at the end
    save_final_checkpoint: bool = True
    keep_checkpoints: int = 2
    tensorboard: bool = True
    save_rollouts: bool = True            # RUN/rollouts/step-NNNNNN.jsonl (trajectories with their rewards)
    eval_every: int = 0                   # 0: no periodic eval
    eval_tasks: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    bonus: BonusConfig = field(default_factory=BonusConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    @property
    def run_dir(self) -> Path:
        """Where metrics, plots and checkpoints of this run go."""
        return Path(self.out_dir) / self.name

    def check(self, where: str) -> None:
        for k in ("steps", "checkpoint_every", "eval_every", "eval_tasks"):
            _need(getattr(self, k) >= 0, k, f"must be >= 0, got {getattr(self, k)}")
        _need(bool(self.name) and "/" not in self.name, "name", f"must be a non-empty folder name, got {self.name!r}")
        if self.rollout.backend == "vllm" and not self.rollout.vllm_url:
            _need(self.model.path != "tiny-random", "rollout.backend",
                  "vllm needs a model folder (model.path) to start a server from, not tiny-random")
        if self.distributed.strategy == "fsdp":   # what the sharded path does not build
            _need(self.algo.kl_coef == 0, "distributed.strategy",
                  "fsdp with algo.kl_coef > 0 is not built (the KL reference would be a second sharded model); use ddp")
            _need(not self.model.lora.enabled, "distributed.strategy",
                  "fsdp with LoRA is not built (the adapters are small: use ddp)")
            _need(self.rollout.ray is None, "distributed.strategy", "fsdp does not combine with rollout.ray")

    def generation_budget(self) -> int:
        """The most policy tokens one episode can hold: Dr.GRPO's constant normaliser by default."""
        r = self.rollout
        if self.algo.norm_len is not None:
            return int(self.algo.norm_len)
        if r.max_turns is None:
            return int(r.max_context)
        return int(min(r.max_context, r.max_turns * r.max_new_tokens))


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from YAML/TOML/JSON) fits the annotation ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table/mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        t = hints[k]
        key = f"{where}.{k}" if where else k
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v or {}, key)
            continue
        if not _type_ok(v, t):
            raise ConfigError(f"{key}: expected {_describe(t)}, got {v!r}")
        if k == "betas":
            v = tuple(float(x) for x in v)
        elif t is float or (typing.get_origin(t) in (typing.Union, types.UnionType) and float in typing.get_args(t)
                            and isinstance(v, int) and not isinstance(v, bool)):
            v = float(v)
        kwargs[k] = v
    return cls(**kwargs)


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Check every component's ranges and the combinations (raises :class:`ConfigError` naming the key)."""

    def walk(node: Any, where: str) -> None:
        hints = get_type_hints(type(node))
        for f in dataclasses.fields(node):   # types first (a config built in Python skipped _build)
            child, key = getattr(node, f.name), f"{where}.{f.name}" if where else f.name
            if not dataclasses.is_dataclass(child) and not _type_ok(child, hints[f.name]):
                raise ConfigError(f"{key}: expected {_describe(hints[f.name])}, got {child!r}")
        check = getattr(node, "check", None)
        if callable(check):
            check(where)
        for f in dataclasses.fields(node):
            child = getattr(node, f.name)
            if dataclasses.is_dataclass(child):
                walk(child, f"{where}.{f.name}" if where else f.name)

    walk(cfg, "")
    return cfg


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from nested dicts; unknown keys and bad values raise :class:`ConfigError`."""
    return validate_config(_build(TrainConfig, data, ""))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dicts (JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config; ``overrides`` use dotted keys."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # a syntax error in the file
        raise ConfigError(f"{path}: cannot parse: {e}") from None
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is not a table")
        node[parts[-1]] = value
    return config_from_dict(data)
