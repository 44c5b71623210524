"""Trainer configuration: one dataclass per concern, loaded from YAML or TOML."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

__all__ = [
    "ModelConfig", "LoraConfig", "RolloutConfig", "AlgoConfig", "CovConfig", "ReplayConfig",
    "ScheduleConfig", "CurriculumConfig", "BonusConfig", "BudgetConfig", "OptimConfig", "WarmupConfig", "TrainConfig",
    "load_config", "config_from_dict", "config_to_dict", "ConfigError",
]


class ConfigError(ValueError):
    """A config file has an unknown key or a value of the wrong kind."""


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


@dataclass
class ModelConfig:
    """The HF causal LM to train: ``path`` is a folder, a cached hub id, ``default`` (SmolLM2) or
    ``tiny-random`` (a small random Llama built in memory, for tests; needs ``tokenizer``)."""

    path: str = "default"
    tokenizer: str | None = None          # default: same as path
    dtype: str = "auto"                   # auto: fp32 on CPU, bf16 on GPU
    device: str = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny_layers: int = 2                  # only for path: tiny-random
    tiny_hidden: int = 64
    tiny_vocab: int = 0                   # 0: the tokenizer's vocabulary size


@dataclass
class RolloutConfig:
    """What to roll out each step and how (through ``forage.agents.RolloutEngine``)."""

    env: str = "forage/LookupQA-1hop-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    tasks_per_step: int = 4
    group_size: int = 4
    max_new_tokens: int = 96
    max_context: int = 1024
    max_turns: int | None = 3
    temperature: float = 1.0
    top_p: float = 1.0
    concurrency: int = 64
    backend: str = "hf"                   # hf: the training model itself | vllm: a vLLM server, weights pushed
    vllm_url: str | None = None           # backend vllm: a server started with weight sync (None: start one)
    task_pool: int | None = None          # train on the first N tasks only (None: all)
    ray: str | None = None                # local | auto | ADDRESS: roll out in Ray actors (weights pushed each step)
    ray_actors: int = 2


@dataclass
class CovConfig:
    """Covariance regularisation: ``clip_cov`` (drop gradient) or ``kl_cov`` (KL on top tokens)."""

    mode: str = "none"                    # none | clip_cov | kl_cov
    ratio: float = 0.0002                 # fraction of tokens (clip_cov), or top fraction (kl_cov)
    lb: float = 1.0                       # clip_cov bounds on the covariance
    ub: float = 5.0
    kl_coef: float = 1.0                  # kl_cov penalty weight
    select: str = "random"                # clip_cov: random among in-bound tokens | top (highest cov)


@dataclass
class AlgoConfig:
    """The on-policy update: advantages, PPO-clip, KL, entropy and the Dr.BoT switches."""

    advantage: str = "grpo"               # grpo | drgrpo | rloo
    clip_low: float = 0.2
    clip_high: float = 0.2                # 0.28 for the asymmetric (clip-higher) variant
    kl_coef: float = 0.0                  # KL to a frozen reference (0: no reference model)
    kl_estimator: str = "k3"              # k1 | k2 | k3
    entropy_coef: float = 0.0
    loss_agg: str = "token-mean"          # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm (Dr.GRPO)
    ppo_epochs: int = 1
    filter_overlong: bool = False         # drop episodes cut by the context/token limit
    filter_repetitive: bool = False       # drop episodes whose generated tokens repeat n-grams
    repetition_ngram: int = 4
    repetition_threshold: float = 0.5
    cov: CovConfig = field(default_factory=CovConfig)


@dataclass
class ScheduleConfig:
    """A scalar over training steps: see :class:`forage.training.schedules.Schedule`."""

    kind: str = "constant"                # constant | linear | cosine_decay | cosine_ramp | step
    value: float = 1.0                    # peak / constant value
    start: float | None = None            # linear: start value (default value)
    end: float = 0.0                      # linear: end value
    period: int = 200                     # T: steps of the ramp/decay
    warmup: int = 0                       # steps at 0 before the schedule starts


@dataclass
class ReplayConfig:
    """SPEAR self-imitation replay."""

    enabled: bool = False
    capacity: int = 256
    tolerance: int = 5                    # drop entries made more than this many steps ago
    min_size: int = 4                     # run the SIL pass once this many entries are stored
    batch_size: int = 16                  # entries per SIL pass
    sampling: str = "uniform"             # uniform | prioritized (by recalibrated advantage)
    priority_alpha: float = 1.0
    history: int = 64                     # group-reward means/stds kept for the baseline
    baseline_scope: str = "global"        # global | task (per-task history)
    divide_std: bool = False              # divide by the median group std
    clear_after_use: bool = False
    clip_low: float = 0.2
    clip_high: float = 0.28
    weight: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(kind="cosine_ramp", value=1.0, period=200))
    cov: CovConfig = field(default_factory=lambda: CovConfig(mode="clip_cov", ratio=0.02, lb=1.0, ub=40.0))


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
    grad_clip: float = 1.0
    warmup_steps: int = 0
    scheduler: str = "constant"           # constant | cosine
    micro_batch_tokens: int = 4096


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

    @property
    def run_dir(self) -> Path:
        """Where metrics, plots and checkpoints of this run go."""
        return Path(self.out_dir) / self.name


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
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v or {}, f"{where}.{k}" if where else k)
        elif k == "betas":
            kwargs[k] = tuple(float(x) for x in v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from nested dicts; unknown keys raise :class:`ConfigError`."""
    return _build(TrainConfig, data, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dicts (JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config; ``overrides`` use dotted keys."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return config_from_dict(data)
