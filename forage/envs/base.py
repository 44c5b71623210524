"""ToolEnv: the Gymnasium base class of every multi-turn, tool-using Forage environment."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Iterable, Mapping, Sequence, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from ..tools import Tool, ToolCall, ToolCallFormat, ToolResult, get_format, tool, truncate_text
from .spaces import UnicodeText

__all__ = ["Task", "Episode", "ToolEnv", "answer_tool", "approx_token_count"]

T = TypeVar("T")


@dataclass
class Task:
    """One problem: an id, the prompt the agent sees, the hidden answer and anything else."""

    id: str
    prompt: str
    answer: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """Per-episode state. Tools receive it as their ``episode`` argument."""

    task: Task
    env: "ToolEnv"
    rng: np.random.Generator
    turn: int = 0
    tool_calls: int = 0
    tokens: int = 0
    answer: str | None = None
    done: bool = False
    stop_reason: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    reward_totals: dict[str, float] = field(default_factory=dict)


def approx_token_count(text: str) -> int:
    """A tokenizer-free token estimate (~4 UTF-8 bytes a token); pass a real counter for exact budgets."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


def answer_tool(
    name: str = "answer",
    param: str = "answer",
    description: str = "Give your final answer. This ends the episode.",
    reply: str = "Answer recorded.",
) -> Tool:
    """A terminal tool that records its one string argument as the episode's final answer."""

    def run(episode: Episode | None = None, **kwargs: Any) -> str:
        if episode is not None:
            episode.answer = str(kwargs[param])
        return reply

    return Tool(
        name,
        description,
        {"type": "object", "properties": {param: {"type": "string", "description": "the final answer"}},
         "required": [param], "additionalProperties": False},
        run,
        terminal=True,
        episode_arg="episode",
    )


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> Any:
    """Finish, inside a Task, a coroutine whose first step ran outside the loop and suspended on ``yielded``."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # thrown in by the Task (cancellation): pass it on
            advance = functools.partial(coro.throw, e)
        else:
            advance = functools.partial(coro.send, sent)
        try:
            yielded = advance()
        except StopIteration as stop:
            return stop.value


class _LoopRunner:
    """Runs coroutines to completion from sync code, even when the caller is inside a running loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coro: Coroutine[Any, Any, T], eager: bool = False) -> T:
        """Run ``coro`` to completion; ``eager``: step it inline first and use the loop only if it suspends."""
        if asyncio.events._get_running_loop() is None:  # no running loop: the common, sync case (no exception raised)
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            if not eager:
                return self._loop.run_until_complete(coro)
            # A step whose tools are plain functions never suspends: running its first (and only)
            # step inline saves the task, the loop start and the selector poll (~15 us a call).
            asyncio.events._set_running_loop(self._loop)
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value
            finally:
                asyncio.events._set_running_loop(None)
            return self._loop.run_until_complete(_resume(coro, yielded))
        # Called from inside a running loop (a notebook, an async trainer): use our own thread.
        if self._thread is None:
            self._thread_loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._thread_loop.run_forever, daemon=True, name="forage-env-loop")
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._thread_loop).result()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        if self._thread is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
            self._thread.join(timeout=5)
            self._thread = None


class ToolEnv(gym.Env[str, str]):
    """Base class of the multi-turn, tool-using, text-in/text-out environments.

    Subclasses give tasks (``load_tasks``), tools (``make_tools``) and the terminal reward
    components (``score``); or pass ``tasks``, ``tools`` and ``score_fn`` directly. The
    episode's observation is the task prompt, then the formatted tool results of each turn.

    Reward is the weighted sum of named components reported in ``info["rewards"]``:
    ``format`` (-1 for a turn with a malformed/unknown call or no call where one was needed)
    on every step, plus whatever ``score`` returns at the end of the episode.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}
    default_reward_weights: dict[str, float] = {"format": 0.1}
    default_system_prompt: str = "You are a helpful assistant that solves tasks by calling tools."

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        tools: Sequence[Tool] | None = None,
        *,
        score_fn: Callable[[Episode], Mapping[str, float]] | None = None,
        tool_format: str | ToolCallFormat = "hermes",
        system_prompt: str | None = None,
        max_turns: int = 8,
        max_tool_calls: int | None = None,
        max_tokens: int | None = None,
        max_calls_per_turn: int = 8,
        max_action_chars: int = 1 << 20,
        max_result_chars: int = 8_192,
        tool_timeout: float | None = None,
        reward_weights: Mapping[str, float] | None = None,
        on_no_tool_call: str = "error",
        token_counter: Callable[[str], int] = approx_token_count,
        render_mode: str | None = None,
    ) -> None:
        if on_no_tool_call not in ("error", "answer"):
            raise ValueError("on_no_tool_call must be 'error' or 'answer'")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self._tasks: list[Task] = list(tasks) if tasks is not None else list(self.load_tasks())
        if not self._tasks:
            raise ValueError(f"{type(self).__name__} has no tasks")
        tool_list = list(tools) if tools is not None else list(self.make_tools())
        self.tools: dict[str, Tool] = {}
        for t in tool_list:
            if t.name in self.tools:
                raise ValueError(f"two tools are named {t.name!r}")
            self.tools[t.name] = t
        self._score_fn = score_fn
        self.tool_format = get_format(tool_format)
        self.system_prompt = system_prompt if system_prompt is not None else self.default_system_prompt
        self.max_turns = max_turns
        self.max_tool_calls = max_tool_calls
        self.max_tokens = max_tokens
        self.max_calls_per_turn = max_calls_per_turn
        self.max_action_chars = max_action_chars
        self.max_result_chars = max_result_chars
        self.tool_timeout = tool_timeout
        self.reward_weights = {**self.default_reward_weights, **(reward_weights or {})}
        self.on_no_tool_call = on_no_tool_call
        self.token_counter = token_counter
        self.render_mode = render_mode
        self.observation_space = UnicodeText()
        self.action_space = UnicodeText()
        self.episode: Episode | None = None
        self._runner = _LoopRunner()
        self._task_index = {t.id: i for i, t in enumerate(self._tasks)}
        # No overridden async hook: reset/step may run inline when the tools are plain functions.
        self._plain_hooks = all(getattr(type(self), h) is getattr(ToolEnv, h)
                                for h in ("areset", "astep", "setup_episode", "teardown_episode"))

    # -- hooks for subclasses --------------------------------------------------------------
    def load_tasks(self) -> Iterable[Task]:
        """The task list (override, or pass ``tasks=``)."""
        return []

    def make_tools(self) -> Iterable[Tool]:
        """The tools (override, or pass ``tools=``)."""
        return []

    def score(self, episode: Episode) -> dict[str, float]:
        """Terminal reward components for a finished episode (override, or pass ``score_fn=``)."""
        if self._score_fn is not None:
            return {k: float(v) for k, v in self._score_fn(episode).items()}
        return {}

    async def setup_episode(self, episode: Episode) -> None:
        """Acquire per-episode resources (a sandbox session, a browser) before the first turn."""

    async def teardown_episode(self, episode: Episode) -> None:
        """Release per-episode resources; called when the episode ends, on reset and on close."""

    def format_prompt(self, task: Task) -> str:
        """The first observation for ``task``."""
        return task.prompt

    # -- public helpers --------------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        """The tasks this env samples from."""
        return self._tasks

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function schemas."""
        return [t.schema() for t in self.tools.values()]

    def system_message(self, with_tools: bool = True) -> str:
        """The system prompt, with the tool-format instructions appended when ``with_tools``."""
        if not with_tools or not self.tools:
            return self.system_prompt
        return f"{self.system_prompt}\n\n{self.tool_format.instructions(list(self.tools.values()))}"

    def format_call(self, tool_name: str, /, **arguments: Any) -> str:
        """Write a tool call in this env's format (handy for scripted agents and tests)."""
        return self.tool_format.format_call(ToolCall(name=tool_name, arguments=arguments))

    def stop_strings(self) -> tuple[str, ...]:
        """Where a policy must stop each turn: right after a complete call in this env's tool format."""
        return self.tool_format.stop_strings(self.tools)

    # -- Gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode: a seeded task, or ``options["task_id"]`` / ``options["task_index"]``."""
        return self._runner.run(self.areset(seed=seed, options=options), eager=self.runs_inline("reset"))

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Parse and run the tool calls in ``action``; return the results as the next observation."""
        return self._runner.run(self.astep(action), eager=self.runs_inline("step"))

    def runs_inline(self, op: str = "step") -> bool:
        """True when ``areset`` (op ``"reset"``) or ``astep`` never suspends: no async hook is overridden and,
        for steps, every tool is a plain function and there is no tool timeout. Such calls need no event loop."""
        if not self._plain_hooks:
            return False
        if op == "reset":
            return True
        if self.tool_timeout is not None:
            return False
        for t in self.tools.values():
            if not t.inline:
                return False
        return True

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Async twin of :meth:`reset`."""
        super().reset(seed=seed)
        if self.episode is not None and not self.episode.done:
            await self._teardown(self.episode)
        task = self._pick_task(options or {})
        ep_rng = np.random.default_rng(self.np_random.integers(1 << 63))
        episode = Episode(task=task, env=self, rng=ep_rng)
        self.episode = episode
        await self.setup_episode(episode)
        obs = self.format_prompt(task)
        episode.tokens = self.token_counter(obs)
        episode.transcript.append({"role": "user", "content": obs})
        info = {
            "task_id": task.id,
            "tools": self.tool_schemas(),
            "role": "user",
            "system_prompt": self.system_prompt,
            "tool_format": self.tool_format.name,
            "stop": list(self.stop_strings()),
            "max_turns": self.max_turns,
            "turn": 0,
        }
        return obs, info

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Async twin of :meth:`step`."""
        ep = self.episode
        if ep is None:
            raise ResetNeeded("call reset() before step()")
        if ep.done:
            info = {"role": "tool", "turn": ep.turn, "rewards": {}, "tool_calls": [], "tool_errors": ["episode is over"],
                    "stop_reason": ep.stop_reason, "answer": ep.answer, "num_tool_calls": ep.tool_calls}
            return "Error: the episode is over; call reset().", 0.0, ep.stop_reason == "answer", ep.stop_reason != "answer", info
        if not isinstance(action, str):
            action = str(action)
        ep.turn += 1
        ep.tokens += self.token_counter(action)
        ep.transcript.append({"role": "assistant", "content": action})
        errors: list[str] = []

        if len(action) > self.max_action_chars:
            errors.append(f"the message is {len(action)} characters long; the limit is {self.max_action_chars}, so it was cut")
            action = action[: self.max_action_chars]
        parsed = self.tool_format.parse(action, self.tools)
        errors.extend(parsed.errors)
        calls = parsed.calls
        if len(calls) > self.max_calls_per_turn:
            errors.append(f"{len(calls)} tool calls in one turn; only the first {self.max_calls_per_turn} were run")
            calls = calls[: self.max_calls_per_turn]

        results, terminal = await self._run_calls(ep, calls, errors)

        no_call = not calls and not parsed.errors
        if no_call and self.on_no_tool_call == "answer":
            ep.answer = parsed.text
            terminal = True
        elif no_call:
            names = ", ".join(self.tools) or "none"
            errors.append(f"no tool call found; call one of the tools ({names}) in the expected format")

        observation = self._observation(results, errors)
        ep.tokens += self.token_counter(observation)
        terminated = bool(terminal)
        truncated = False
        if terminated:
            ep.stop_reason = "answer"
        elif self.max_tool_calls is not None and ep.tool_calls >= self.max_tool_calls and calls:
            truncated, ep.stop_reason = True, "tool_budget"
        elif self.max_tokens is not None and ep.tokens >= self.max_tokens:
            truncated, ep.stop_reason = True, "token_budget"
        elif ep.turn >= self.max_turns:
            truncated, ep.stop_reason = True, "max_turns"

        format_problem = bool(errors)
        tool_errors = errors[:]
        for r in results:
            if r.error is not None:
                tool_errors.append(r.content)
                format_problem = format_problem or r.error in ("unknown_tool", "invalid_arguments")
        rewards = {"format": -1.0 if format_problem else 0.0}
        if terminated or truncated:
            ep.done = True
            rewards.update(self.score(ep))
            await self._teardown(ep)
        reward = 0.0
        totals, weights = ep.reward_totals, self.reward_weights
        for k, v in rewards.items():
            totals[k] = totals.get(k, 0.0) + v
            reward += weights.get(k, 1.0) * v
        ep.transcript.append({"role": "tool", "content": observation})
        info = {
            "role": "tool",
            "turn": ep.turn,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
            "tool_results": [{"name": r.name, "error": r.error, "truncated": r.truncated} for r in results],
            "tool_errors": tool_errors,
            "num_tool_calls": ep.tool_calls,
            "rewards": rewards,
            "answer": ep.answer,
            "stop_reason": ep.stop_reason,
            "task_id": ep.task.id,
        }
        if self.render_mode == "human":
            self.render()
        return observation, reward, terminated, truncated, info

    def end_episode(self, reason: str = "truncated") -> tuple[float, dict[str, Any]]:
        """End the running episode from outside (the agent ran out of context or turns): see :meth:`aend_episode`."""
        return self._runner.run(self.aend_episode(reason))

    async def aend_episode(self, reason: str = "truncated") -> tuple[float, dict[str, Any]]:
        """End the running episode as truncated for ``reason``: score it and tear it down now.

        Returns the terminal reward and an info dict (``rewards``, ``stop_reason``, ``answer``); an episode
        that is already over (or never started) gives ``0.0`` and empty ``rewards``.
        """
        ep = self.episode
        if ep is None or ep.done:
            return 0.0, {"rewards": {}, "stop_reason": None if ep is None else ep.stop_reason,
                         "answer": None if ep is None else ep.answer}
        ep.done, ep.stop_reason = True, reason
        try:
            rewards = self.score(ep)
        finally:
            await self._teardown(ep)
        for k, v in rewards.items():
            ep.reward_totals[k] = ep.reward_totals.get(k, 0.0) + v
        reward = float(sum(self.reward_weights.get(k, 1.0) * v for k, v in rewards.items()))
        return reward, {"rewards": rewards, "stop_reason": reason, "answer": ep.answer, "task_id": ep.task.id,
                        "num_tool_calls": ep.tool_calls, "turn": ep.turn}

    def render(self) -> str | None:
        """The episode transcript as text (``ansi``), printed for ``human``."""
        text = self.transcript_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def transcript_text(self) -> str:
        """The current episode as ``[role] text`` lines."""
        if self.episode is None:
            return ""
        lines = [f"[system] {self.system_prompt}"]
        lines += [f"[{m['role']}] {m['content']}" for m in self.episode.transcript]
        return "\n".join(lines)

    def close(self) -> None:
        """Release the episode's resources and the event loop."""
        if self.episode is not None and not self.episode.done:
            try:
                self._runner.run(self._teardown(self.episode))
            except Exception:
                pass
        self._runner.close()
        super().close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        if self.episode is not None and not self.episode.done:
            await self._teardown(self.episode)

    # -- internals ---------------------------------------------------------------------------
    def _pick_task(self, options: Mapping[str, Any]) -> Task:
        if "task_id" in options:
            tid = str(options["task_id"])
            if tid not in self._task_index:
                raise KeyError(f"unknown task_id {tid!r}")
            return self._tasks[self._task_index[tid]]
        if "task_index" in options:
            return self._tasks[int(options["task_index"]) % len(self._tasks)]
        return self._tasks[int(self.np_random.integers(len(self._tasks)))]

    async def _teardown(self, ep: Episode) -> None:
        if ep.state.get("_torn_down"):
            return
        ep.state["_torn_down"] = True
        await self.teardown_episode(ep)

    async def _call_one(self, ep: Episode, call: ToolCall) -> ToolResult:
        t = self.tools.get(call.name)
        if t is None:
            names = ", ".join(self.tools) or "none"
            return ToolResult(f"Error: unknown tool {call.name!r}; available tools: {names}", error="unknown_tool",
                              name=call.name, call_id=call.id)
        if self.max_tool_calls is not None and ep.tool_calls >= self.max_tool_calls and not t.terminal:
            return ToolResult(f"Error: the tool-call budget of {self.max_tool_calls} calls is used up", error="budget",
                              name=call.name, call_id=call.id)
        ep.tool_calls += 1
        started = time.perf_counter()
        if self.tool_timeout is not None:
            try:
                async with asyncio.timeout(self.tool_timeout):
                    res = await t.acall(call.arguments, ep)
            except asyncio.TimeoutError:
                res = ToolResult(f"Error: {call.name} timed out after {self.tool_timeout:g} s", error="timeout", name=call.name)
        elif t.inline:  # a plain function: no coroutine to await
            res = t.call_inline(call.arguments, ep)
        else:
            res = await t.acall(call.arguments, ep)
        res.call_id = call.id
        res.metadata.setdefault("seconds", time.perf_counter() - started)
        res.content, cut = truncate_text(res.content, self.max_result_chars)
        res.truncated = res.truncated or cut
        return res

    async def _run_calls(self, ep: Episode, calls: list[ToolCall], errors: list[str]) -> tuple[list[ToolResult], bool]:
        if not calls:
            return [], False
        if len(calls) == 1:  # the common turn: no list building, no gather
            t = self.tools.get(calls[0].name)
            res = await self._call_one(ep, calls[0])
            return [res], t is not None and t.terminal and res.ok
        known = [self.tools.get(c.name) for c in calls]
        if all(t is None or t.concurrent for t in known) and len(calls) > 1:
            results = list(await asyncio.gather(*(self._call_one(ep, c) for c in calls)))
        else:
            results = [await self._call_one(ep, c) for c in calls]
        terminal = any(t is not None and t.terminal and r.ok for t, r in zip(known, results))
        return results, terminal

    def _observation(self, results: list[ToolResult], errors: list[str]) -> str:
        parts = []
        if errors:
            parts.append("\n".join(f"Error: {e}" for e in errors))
        if results:
            parts.append(self.tool_format.format_results(results))
        return "\n".join(parts)
