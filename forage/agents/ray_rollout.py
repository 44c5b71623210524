"""Rollouts in Ray actors: each actor holds a RolloutEngine (its policy) and a pool of envs.

Same answers as the single-process :class:`~forage.agents.RolloutEngine`, spread over a Ray cluster::

    from forage.agents.ray_rollout import RayRolloutEngine

    engine = RayRolloutEngine(policy_factory, tokenizer_factory, RolloutConfig(seed=0),
                              num_actors=4, address="local")   # or "auto", "ray://head:10001"
    trajs = engine.run("forage/LookupQA-v0", [0, 1, 2, 3], group_size=8)   # grouped, in input order
    engine.shutdown()

``policy_factory()`` and ``tokenizer_factory()`` run inside each actor (so each actor builds its own
model or vLLM engine, or a client of a shared vLLM server); give ``num_gpus_per_actor`` on GPU
clusters. Every episode keeps its global index, and its sampling seeds derive from ``RolloutConfig.seed``, the index and the turn,
and therefore the trajectories do not depend on how many actors there are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .rollout import EnvSpec, RolloutConfig, RolloutEngine, TaskSpec, _EnvPool
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

    def _pool(self, env: EnvSpec) -> _EnvPool:
        key = env if isinstance(env, str) else id(env)
        if key not in self.pools:
            self.pools[key] = _EnvPool(env, dict(self.config.env_kwargs))
        return self.pools[key]

    async def run_jobs(self, env: EnvSpec, jobs: Sequence[tuple[int, TaskSpec, int]]) -> list[Trajectory]:
        """Run ``(global_index, task, group_index)`` jobs concurrently on this actor's envs (a Ray async actor)."""
        pool = self._pool(env)
        sem = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(index: int, task: TaskSpec, g: int) -> Trajectory:
            async with sem:
                e = pool.get()
                try:
                    traj = await self.engine.run_episode(e, task, index=index)
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

    def stats(self) -> dict[str, Any]:
        """How much this actor has done and holds."""
        return {"episodes_run": self.episodes_run, "envs": sum(len(p.all) for p in self.pools.values())}

    async def close(self) -> None:
        """Close every env this actor holds."""
        for pool in self.pools.values():
            await pool.close()
        self.pools.clear()


@dataclass
class _Shard:
    actor: Any
    jobs: list[tuple[int, TaskSpec, int]]


class RayRolloutEngine:
    """Spreads a rollout over ``num_actors`` Ray actors, each with its own policy and env pool."""

    def __init__(self, policy_factory: Callable[[], Any], tokenizer_factory: Callable[[], Any],
                 config: RolloutConfig | None = None, *, num_actors: int = 2, address: str | None = "local",
                 num_cpus_per_actor: float = 1.0, num_gpus_per_actor: float = 0.0, num_cpus: int | None = None) -> None:
        self.config = config or RolloutConfig()
        self.ray = init_ray(address, num_cpus=num_cpus)
        actor_cls = self.ray.remote(num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor)(RolloutWorker)
        self.actors = [actor_cls.remote(policy_factory, tokenizer_factory, self.config) for _ in range(num_actors)]

    def run(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int = 1) -> list[Trajectory]:
        """Like :meth:`RolloutEngine.run`: ``group_size`` episodes per task, grouped, in input order."""
        if isinstance(tasks, int):
            tasks = list(range(tasks))
        jobs = [(i, t, g) for i, (t, g) in enumerate((t, g) for t in tasks for g in range(group_size))]
        n = len(self.actors)
        # contiguous shards keep a task's group on one actor (its envs are warm for that task)
        size = -(-len(jobs) // n) if jobs else 0
        shards = [_Shard(a, jobs[k * size:(k + 1) * size]) for k, a in enumerate(self.actors)]
        refs = [s.actor.run_jobs.remote(env, s.jobs) for s in shards if s.jobs]
        results = self.ray.get(refs)
        by_index: dict[int, Trajectory] = {}
        for shard, trajs in zip([s for s in shards if s.jobs], results):
            for (i, _, _), traj in zip(shard.jobs, trajs):
                by_index[i] = traj
        return [by_index[i] for i in range(len(jobs))]

    run_sync = run  # same call shape as RolloutEngine.run_sync, so callers can swap engines

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
