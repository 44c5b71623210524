"""The async rollout engine: many episodes of any Forage env at once, as exact token trajectories.

Stable API (the trainer builds on it)::

    from forage.agents import RolloutEngine, RolloutConfig, HFPolicy, VLLMServerPolicy, SamplingParams

    policy = VLLMServerPolicy("http://127.0.0.1:8000")        # or HFPolicy(model, tokenizer)
    engine = RolloutEngine(policy, tokenizer, RolloutConfig(concurrency=64, max_context=4096))
    trajs = await engine.run("forage/LookupQA-v0", [0, 1, 2], group_size=4)   # seeds
    trajs = engine.run_sync(env_factory, ["lookup-1hop-00003"], group_size=2)   # task ids
    # -> list[Trajectory], grouped: group_size trajectories per task, in input order

``Policy.generate(prompts: list[list[int]], params: SamplingParams) -> list[Generation]`` where a
``Generation`` has ``token_ids``, ``logprobs`` and ``finish_reason`` (and unpacks as that triple).

How an episode is built: the chat template renders the system prompt (with the env's tool
instructions when the template has no tool support) and the first observation; then each turn
the policy generates from the exact current ids (appended with loss mask 1 and their behaviour
log-probs), the generated text goes to ``env.astep``, and only the new tool-result piece is
tokenized (template closing + message + generation prompt, mask 0). Generation stops at the
end-of-turn token or right after a complete call: the stop strings of the env's tool format
(``env.stop_strings()``: ``</tool_call>`` for Hermes, each tool's closing tag for XML), kept in the
output so the env parses the whole call, and the model never writes the tool results itself.
The env owns the turn limit and ends its episodes; when the engine must stop one first (the
context is full, or ``RolloutConfig.max_turns`` is below the env's own), it ends it through the
env (``env.aend_episode``), so ``score()`` and the teardown run then, not at the next reset; the
episode is truncated (``stop_reason`` ``context_length`` / ``max_turns``). A failing policy call
(server gone, timeout, malformed reply) or env error ends only that episode with
``Trajectory.error`` set.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import gymnasium as gym
import numpy as np

from .chat import ChatTokenizer
from .policy import DEFAULT_STOP, Policy, SamplingParams
from .trajectory import Trajectory

__all__ = ["RolloutConfig", "RolloutEngine", "EnvSpec", "TaskSpec"]

EnvSpec = Union[str, Callable[[], Any]]
TaskSpec = Union[int, str, None]


@dataclass
class RolloutConfig:
    """Knobs of a rollout run."""

    concurrency: int = 64          # episodes in flight at once
    max_context: int = 4096        # tokens (prompt + all turns); beyond it the episode is truncated
    max_new_tokens: int = 256      # per turn
    max_turns: int | None = None   # None: the env's own limit; a smaller one ends episodes through the env
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop: tuple[str, ...] | None = None  # None: the env's tool-format stops (env.stop_strings())
    seed: int | None = None        # base sampling seed (episode i uses seed + i) or None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    generate_timeout: float | None = None  # seconds per generation call (None: the policy's own)
    tool_role: str | None = None   # None: "tool" if the template knows tools, else "user"
    policy_version: int = 0
    reset_options: dict[str, Any] = field(default_factory=dict)  # merged into every reset's options
                                                                 # (e.g. {"train_step": step} for ZeroSearch's curriculum)


class _EnvPool:
    """Reusable env instances (an env runs one episode at a time)."""

    def __init__(self, spec: EnvSpec, kwargs: dict[str, Any]) -> None:
        self.spec = spec
        self.kwargs = kwargs
        self.free: list[Any] = []
        self.all: list[Any] = []
        self.env_id = spec if isinstance(spec, str) else getattr(spec, "env_id", None) or getattr(spec, "__name__", "env")

    def _make(self) -> Any:
        if isinstance(self.spec, str):
            env = gym.make(self.spec, disable_env_checker=True, **self.kwargs).unwrapped
        else:
            env = self.spec()
            env = getattr(env, "unwrapped", env)
        self.all.append(env)
        return env

    def get(self) -> Any:
        return self.free.pop() if self.free else self._make()

    def put(self, env: Any) -> None:
        self.free.append(env)

    async def close(self) -> None:
        for env in self.all:
            try:
                if hasattr(env, "aclose"):
                    await env.aclose()
                else:
                    env.close()
            except Exception:
                pass
        self.all.clear()
        self.free.clear()


class RolloutEngine:
    """Runs episodes concurrently against a :class:`Policy`, recording exact-token trajectories."""

    def __init__(self, policy: Policy, tokenizer: Any, config: RolloutConfig | None = None) -> None:
        self.policy = policy
        self.config = config or RolloutConfig()
        self.chat = tokenizer if isinstance(tokenizer, ChatTokenizer) else ChatTokenizer(tokenizer, self.config.tool_role)

    # -- public API ------------------------------------------------------------------------
    async def run(
        self,
        env: EnvSpec,
        tasks: Sequence[TaskSpec] | int,
        group_size: int = 1,
        progress: bool | Any = False,
        on_done: Callable[[Trajectory], Any] | None = None,
    ) -> list[Trajectory]:
        """Roll out ``group_size`` episodes for each task (an int seed, a task-id string or None).

        ``tasks`` may be an int n, meaning seeds ``0..n-1``. Results come grouped, in input order.
        ``progress`` shows a tqdm bar (or pass a bar to update); ``on_done`` is called per episode.
        """
        if isinstance(tasks, int):
            tasks = list(range(tasks))
        jobs = [(t, g) for t in tasks for g in range(group_size)]
        pool = _EnvPool(env, dict(self.config.env_kwargs))
        sem = asyncio.Semaphore(max(1, self.config.concurrency))
        bar = _make_bar(progress, len(jobs))

        async def one(i: int, task: TaskSpec, g: int) -> Trajectory:
            async with sem:
                e = pool.get()
                try:
                    traj = await self.run_episode(e, task, index=i)
                finally:
                    pool.put(e)
            traj.group = str(task)
            traj.metadata["group_index"] = g
            await report_done(traj, bar, on_done)
            return traj

        try:
            out = await asyncio.gather(*(one(i, t, g) for i, (t, g) in enumerate(jobs)))
        finally:
            await pool.close()
            if bar is not None and progress is True:
                bar.close()
        env_id = pool.env_id if isinstance(pool.env_id, str) else "env"
        for t in out:
            if not t.env_id:
                t.env_id = env_id
        return list(out)

    def run_sync(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int = 1, **kwargs: Any) -> list[Trajectory]:
        """:meth:`run` from synchronous code (also works inside a running event loop)."""
        return run_blocking(self.run(env, tasks, group_size, **kwargs))

    # -- one episode -------------------------------------------------------------------------
    def _params(self, max_tokens: int, index: int, turn: int = 0, stop: tuple[str, ...] = DEFAULT_STOP) -> SamplingParams:
        c = self.config
        seed = None
        if c.seed is not None:  # one stream per (episode, turn): a fixed seed per episode would repeat each turn
            seed = int(np.random.SeedSequence([c.seed, index, turn]).generate_state(1)[0]) & 0x7FFFFFFF
        return SamplingParams(max_tokens=max_tokens, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                              stop=stop, seed=seed)

    async def run_episode(self, env: Any, task: TaskSpec = None, index: int = 0) -> Trajectory:
        """One episode in ``env`` (an unwrapped ToolEnv) for ``task``; never raises."""
        env = getattr(env, "unwrapped", env)
        c = self.config
        spec = getattr(env, "spec", None)
        traj = Trajectory(env_id=getattr(spec, "id", None) or type(env).__name__, task_id="",
                          seed=task if isinstance(task, int) else None, policy_version=c.policy_version)
        t_start = time.perf_counter()
        gen_s = env_s = 0.0
        finish_reasons: list[str] = []
        try:
            t0 = time.perf_counter()
            if isinstance(task, str):
                obs, info = await env.areset(options={**c.reset_options, "task_id": task})
            else:
                obs, info = await env.areset(seed=task, options=dict(c.reset_options) or None)
            env_s += time.perf_counter() - t0
            traj.task_id = str(info.get("task_id", task))
            tools = info.get("tools") or None
            system = env.system_message(with_tools=not self.chat.supports_tools) if hasattr(env, "system_message") \
                else info.get("system_prompt", "")
            traj.messages = [{"role": "system", "content": system}, {"role": "user", "content": obs}]
            ids = self.chat.prompt_ids(traj.messages, tools=tools if self.chat.supports_tools else None)
            traj.token_ids = list(ids)
            traj.loss_mask = [0] * len(ids)
            traj.logprobs = [0.0] * len(ids)
            stop = tuple(c.stop) if c.stop is not None else env_stop_strings(env, info)
            max_turns = c.max_turns
            while True:
                if max_turns is not None and traj.num_turns >= max_turns:
                    await end_through_env(env, traj, "max_turns")
                    break
                budget = c.max_context - len(traj.token_ids)
                if budget <= 0:
                    await end_through_env(env, traj, "context_length")
                    break
                params = self._params(min(c.max_new_tokens, budget), index, traj.num_turns, stop)
                t0 = time.perf_counter()
                coro = self.policy.generate([traj.token_ids], params)
                gens = await (asyncio.wait_for(coro, c.generate_timeout) if c.generate_timeout else coro)
                gen_s += time.perf_counter() - t0
                if len(gens) != 1:
                    raise RuntimeError(f"policy returned {len(gens)} generations for 1 prompt")
                gen = gens[0]
                if not gen.token_ids:
                    raise RuntimeError("policy returned an empty completion")
                start = len(traj.token_ids)
                traj.token_ids.extend(int(t) for t in gen.token_ids)
                traj.loss_mask.extend([1] * len(gen.token_ids))
                traj.logprobs.extend(float(x) for x in gen.logprobs)
                traj.turn_spans.append((start, len(traj.token_ids)))
                finish_reasons.append(gen.finish_reason)
                text = self.chat.assistant_text(gen.token_ids)
                traj.messages.append({"role": "assistant", "content": text})
                traj.num_turns += 1
                t0 = time.perf_counter()
                obs, reward, terminated, truncated, info = await env.astep(text)
                env_s += time.perf_counter() - t0
                traj.step_rewards.append(float(reward))
                for k, v in (info.get("rewards") or {}).items():
                    traj.reward_components[k] = traj.reward_components.get(k, 0.0) + float(v)
                calls = info.get("tool_calls") or []
                traj.num_tool_calls = int(info.get("num_tool_calls", traj.num_tool_calls + len(calls)))
                traj.messages.append({"role": "tool", "content": obs, "tool_calls": calls,
                                      "rewards": info.get("rewards") or {}, "errors": info.get("tool_errors") or []})
                if info.get("answer") is not None:
                    traj.answer = str(info["answer"])
                if terminated or truncated:
                    traj.terminated, traj.truncated = bool(terminated), bool(truncated)
                    traj.stop_reason = info.get("stop_reason") or ("answer" if terminated else "truncated")
                    break
                piece = self.chat.continuation_ids(gen.token_ids, obs)
                if len(traj.token_ids) + len(piece) >= c.max_context:
                    await end_through_env(env, traj, "context_length")
                    break
                traj.token_ids.extend(piece)
                traj.loss_mask.extend([0] * len(piece))
                traj.logprobs.extend([0.0] * len(piece))
        except Exception as e:  # one episode's failure never stops the run
            traj.error = f"{type(e).__name__}: {e}"
            traj.stop_reason = "error"
            traj.metadata["traceback"] = traceback.format_exc(limit=4)
            await release_env(env)
        traj.reward = float(sum(traj.step_rewards))
        traj.timings = {"generate_s": round(gen_s, 4), "env_s": round(env_s, 4),
                        "total_s": round(time.perf_counter() - t_start, 4)}
        traj.metadata["finish_reasons"] = finish_reasons
        return traj


def env_stop_strings(env: Any, info: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The stop strings of ``env``'s tool format: ``env.stop_strings()``, else its reset info's ``stop``."""
    fn = getattr(env, "stop_strings", None)
    if callable(fn):
        return tuple(fn())
    if info and isinstance(info.get("stop"), (list, tuple)):
        return tuple(str(s) for s in info["stop"])
    return DEFAULT_STOP


async def end_through_env(env: Any, traj: Trajectory, reason: str) -> None:
    """Truncate ``traj`` for ``reason`` and end the env's episode now (scored, torn down), adding its reward."""
    traj.truncated, traj.stop_reason = True, reason
    end = getattr(env, "aend_episode", None)
    if end is None:
        return
    reward, info = await end(reason)
    for k, v in (info.get("rewards") or {}).items():
        traj.reward_components[k] = traj.reward_components.get(k, 0.0) + float(v)
    if traj.step_rewards:   # the terminal reward belongs to the last turn
        traj.step_rewards[-1] += float(reward)
    if info.get("answer") is not None:
        traj.answer = str(info["answer"])


async def release_env(env: Any) -> None:
    """After an episode failed: end the env's episode so its resources go now (best effort, never raises)."""
    end = getattr(env, "aend_episode", None)
    if end is not None:
        try:
            await end("error")
        except Exception:  # noqa: BLE001 - the episode already records its error
            pass


def run_blocking(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


async def report_done(traj: Trajectory, bar: Any, on_done: Callable[[Trajectory], Any] | None) -> None:
    """Tick the progress bar (showing errors) and call ``on_done`` (sync or async) for a finished episode."""
    if bar is not None:
        bar.update(1)
        if traj.error:
            bar.set_postfix_str(f"error: {traj.error[:40]}")
    if on_done is not None:
        res = on_done(traj)
        if inspect.isawaitable(res):
            await res


def _make_bar(progress: bool | Any, total: int) -> Any:
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="episodes", unit="ep", dynamic_ncols=True)
    if progress:
        return progress
    return None
