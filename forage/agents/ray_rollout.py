"""Rollouts in Ray actors: each actor holds a RolloutEngine (its policy) and a pool of envs.

Same answers as the single-process :class:`~forage.agents.RolloutEngine`, spread over a Ray cluster::

    from forage.agents.ray_rollout import RayRolloutEngine

    engine = RayRolloutEngine(policy_factory, tokenizer_factory, RolloutConfig(seed=0),
                              num_actors=4, address="local")   # or "auto", "ray://head:10001"
    trajs = engine.run_sync("forage/LookupQA-v0", [0, 1, 2, 3], group_size=8)   # grouped, in input order
    trajs = await engine.run(...)                                          # the same from async code
    engine.shutdown()

``policy_factory()`` and ``tokenizer_factory()`` run inside each actor (so each actor builds its own
model or vLLM engine, or a client of a shared vLLM server); give ``num_gpus_per_actor`` on GPU
clusters. Every episode keeps its global index, and its sampling seeds derive from ``RolloutConfig.seed``, the index and the turn,
and therefore the trajectories do not depend on how many actors there are.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from .rollout import EnvSpec, RolloutConfig, RolloutEngine, TaskSpec, _EnvPool, run_blocking
from .trajectory import Trajectory

__all__ = ["RayRolloutEngine", "RolloutWorker", "init_ray"]


def init_ray(address: str | None = "local", num_cpus: int | None = None, **kwargs: Any) -> Any:
    """Connect to Ray: ``"local"`` starts a private local instance, anything else is a cluster address."""
    import ray

    if ray.is_initialized():
        return ray
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray


class RolloutWorker:
    """The actor body: a RolloutEngine plus env pools that live as long as the actor."""

    def __init__(self, policy_factory: Callable[[], Any], tokenizer_factory: Callable[[], Any],
                 config: RolloutConfig) -> None:
        self.config = config
        self.engine = RolloutEngine(policy_factory(), tokenizer_factory(), config)
        self.pools: dict[Any, _EnvPool] = {}
        self.episodes_run = 0
        self._sem: asyncio.Semaphore | None = None
        self.weights_version: int | None = None

    def _pool(self, env: EnvSpec) -> _EnvPool:
        key = env if isinstance(env, str) else id(env)
        if key not in self.pools:
            self.pools[key] = _EnvPool(env, dict(self.config.env_kwargs))
        return self.pools[key]

    async def run_jobs(self, env: EnvSpec, jobs: Sequence[tuple[int, TaskSpec, int]],
                       config: RolloutConfig | None = None) -> list[Trajectory]:
        """Run ``(global_index, task, group_index)`` jobs concurrently on this actor's envs (a Ray async actor).

        Concurrent calls share one limit, ``config.concurrency`` episodes at a time per actor; ``config``
        overrides the sampling settings (seed, temperature, policy version) for this call only.
        """
        pool = self._pool(env)
        engine = self.engine if config is None else RolloutEngine(self.engine.policy, self.engine.chat, config)
        if self._sem is None:   # made on the actor's event loop
            self._sem = asyncio.Semaphore(max(1, self.config.concurrency))
        sem = self._sem

        async def one(index: int, task: TaskSpec, g: int) -> Trajectory:
            async with sem:
                e = pool.get()
                try:
                    traj = await engine.run_episode(e, task, index=index)
                finally:
                    pool.put(e)
            traj.group = str(task)
            traj.metadata["group_index"] = g
            if not traj.env_id and isinstance(env, str):
                traj.env_id = env
            return traj

        out = await asyncio.gather(*(one(i, t, g) for i, t, g in jobs))
        self.episodes_run += len(out)
        return list(out)

    def _model(self) -> Any:
        model = getattr(self.engine.policy, "model", None)
        if model is None or not hasattr(model, "load_state_dict"):
            raise TypeError(f"{type(self.engine.policy).__name__} holds no torch model to load weights into")
        return model

    def set_weights(self, state_dict: dict[str, Any], version: int) -> int:
        """Load new weights into this actor's model (the trainer's push after an update); returns the version."""
        self._model().load_state_dict(state_dict)
        self.weights_version = version
        return version

    def weights_checksum(self) -> float:
        """The sum of every parameter (float64): equal to the trainer's when the push arrived."""
        return float(sum(p.detach().double().sum() for p in self._model().state_dict().values()))

    def stats(self) -> dict[str, Any]:
        """How much this actor has done and holds."""
        return {"episodes_run": self.episodes_run, "envs": sum(len(p.all) for p in self.pools.values()),
                "weights_version": self.weights_version}

    async def close(self) -> None:
        """Close every env this actor holds."""
        for pool in self.pools.values():
            await pool.close()
        self.pools.clear()


class RayRolloutEngine:
    """Spreads a rollout over ``num_actors`` Ray actors, each with its own policy and env pool."""

    def __init__(self, policy_factory: Callable[[], Any], tokenizer_factory: Callable[[], Any],
                 config: RolloutConfig | None = None, *, num_actors: int = 2, address: str | None = "local",
                 num_cpus_per_actor: float = 1.0, num_gpus_per_actor: float = 0.0, num_cpus: int | None = None) -> None:
        self.config = config or RolloutConfig()
        self.ray = init_ray(address, num_cpus=num_cpus)
        actor_cls = self.ray.remote(num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor)(RolloutWorker)
        self.actors = [actor_cls.remote(policy_factory, tokenizer_factory, self.config) for _ in range(num_actors)]

    def _submit(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int,
                config: RolloutConfig | None = None) -> tuple[int, list[tuple[list[int], Any]]]:
        """One actor call per task (its whole group on one actor, where its envs are warm), round-robin."""
        if isinstance(tasks, int):
            tasks = list(range(tasks))
        if not self.actors:
            raise RuntimeError("this RayRolloutEngine was shut down")
        calls = []
        for k, task in enumerate(tasks):
            jobs = [(k * group_size + g, task, g) for g in range(group_size)]
            actor = self.actors[k % len(self.actors)]
            calls.append(([i for i, _, _ in jobs], actor.run_jobs.remote(env, jobs, config)))
        return len(tasks) * group_size, calls

    async def arun(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int = 1,
                   progress: bool | Any = False, on_done: Callable[[Trajectory], Any] | None = None,
                   config: RolloutConfig | None = None) -> list[Trajectory]:
        """Like :meth:`RolloutEngine.run`: ``group_size`` episodes per task, grouped, in input order.

        ``progress`` shows a tqdm bar (or pass one); ``on_done`` is called per episode as its group returns;
        ``config`` replaces the engine's rollout settings for this call (e.g. a new seed each training step).
        """
        from .rollout import _make_bar, report_done

        total, calls = self._submit(env, tasks, group_size, config)
        bar = _make_bar(progress, total)
        by_index: dict[int, Trajectory] = {}

        async def collect(indices: list[int], ref: Any) -> None:
            trajs = await ref
            for i, traj in zip(indices, trajs):
                by_index[i] = traj
                await report_done(traj, bar, on_done)

        try:
            await asyncio.gather(*(collect(ix, ref) for ix, ref in calls))
        finally:
            if bar is not None and progress is True:
                bar.close()
        return [by_index[i] for i in range(total)]

    async def run(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int = 1,
                  **kwargs: Any) -> list[Trajectory]:
        """Async alias of :meth:`arun`, so a RayRolloutEngine can stand where a RolloutEngine is awaited."""
        return await self.arun(env, tasks, group_size, **kwargs)

    def run_sync(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int = 1,
                 **kwargs: Any) -> list[Trajectory]:
        """:meth:`arun` from synchronous code (also works inside a running event loop)."""
        return run_blocking(self.arun(env, tasks, group_size, **kwargs))

    def push_weights(self, state_dict: dict[str, Any], version: int) -> float:
        """Send new weights to every actor (one copy in the object store); returns the seconds it took."""
        import time

        t0 = time.perf_counter()
        ref = self.ray.put(state_dict)
        self.ray.get([a.set_weights.remote(ref, version) for a in self.actors])
        return time.perf_counter() - t0

    def weights_checksums(self) -> list[float]:
        """Each actor's :meth:`RolloutWorker.weights_checksum`."""
        return self.ray.get([a.weights_checksum.remote() for a in self.actors])

    def stats(self) -> list[dict[str, Any]]:
        """Per-actor counters."""
        return self.ray.get([a.stats.remote() for a in self.actors])

    def shutdown(self) -> None:
        """Close the actors' envs and kill the actors (the Ray instance stays up)."""
        try:
            self.ray.get([a.close.remote() for a in self.actors], timeout=60)
        finally:
            for a in self.actors:
                self.ray.kill(a)
            self.actors = []
