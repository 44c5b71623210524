"""EnvSession: one Forage env driven one structured tool call at a time (the core every adapter shares).

Other ecosystems (TRL, MCP, OpenEnv, verifiers, SkyRL-gym) hand us tool calls as a name and a JSON
object, not as text in the env's tool-call format. :class:`EnvSession` writes such a call in the
env's own format (``env.format_call``) and steps the env with it, so every check, budget, error
message and reward component is the native API's, never a second implementation. Tool results
come back as plain text (the env's own result wrapping, e.g. ``<tool_response>``, is left to the
caller's chat template); errors keep the env's ``Error: ...`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import gymnasium as gym

from ..envs.base import Episode, ToolEnv
from ..tools import Tool, ToolCallFormat, ToolResult

__all__ = ["EnvSession", "StepOutcome", "make_tool_env"]


class _PlainResults(ToolCallFormat):
    """The env's own tool-call format, except that results come back as their bare text."""

    def __init__(self, inner: ToolCallFormat) -> None:
        self.inner = inner
        self.name = inner.name

    def parse(self, text, tools):  # type: ignore[no-untyped-def]
        return self.inner.parse(text, tools)

    def format_call(self, call):  # type: ignore[no-untyped-def]
        return self.inner.format_call(call)

    def instructions(self, tools):  # type: ignore[no-untyped-def]
        return self.inner.instructions(tools)

    def stop_strings(self, tools):  # type: ignore[no-untyped-def]
        return self.inner.stop_strings(tools)

    def format_results(self, results: Sequence[ToolResult]) -> str:
        return "\n".join(r.content for r in results)


def make_tool_env(env: str | gym.Env, env_kwargs: Mapping[str, Any] | None = None) -> ToolEnv:
    """A Forage :class:`ToolEnv` from a registered id (``gym.make``) or an env instance; anything else is refused."""
    if isinstance(env, str):
        import forage  # noqa: F401  (registers the built-in envs)

        env = gym.make(env, **dict(env_kwargs or {}))
    inner = getattr(env, "unwrapped", env)
    if not isinstance(inner, ToolEnv):
        raise TypeError(f"{type(inner).__name__} is not a Forage ToolEnv; adapters need its tools")
    return inner


@dataclass
class StepOutcome:
    """What one tool call did: the text for the model, the step's reward and whether the episode ended."""

    text: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """True when the episode has ended."""
        return self.terminated or self.truncated


class EnvSession:
    """One env, its episodes driven by structured tool calls; sync methods and ``a``-prefixed async twins."""

    def __init__(self, env: str | gym.Env, env_kwargs: Mapping[str, Any] | None = None) -> None:
        self.env = make_tool_env(env, env_kwargs)
        self.env.tool_format = _PlainResults(self.env.tool_format)
        self.reward = 0.0                       # this episode's total (weighted) reward so far
        self.components: dict[str, float] = {}  # and its named components, summed over steps
        self.info: dict[str, Any] = {}          # the last reset/step info
        self.started = False

    # -- description --------------------------------------------------------------------------
    @property
    def tools(self) -> list[Tool]:
        """The env's tools (their names, descriptions and JSON-schema parameters)."""
        return list(self.env.tools.values())

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The tools as OpenAI function schemas."""
        return self.env.tool_schemas()

    @property
    def episode(self) -> Episode | None:
        """The current episode's state (None before the first reset)."""
        return self.env.episode

    @property
    def done(self) -> bool:
        """True once the current episode has ended (or before the first reset)."""
        ep = self.env.episode
        return ep is None or ep.done

    # -- episodes -----------------------------------------------------------------------------
    @staticmethod
    def _options(task_id: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
        opts = dict(options or {})
        if task_id is not None:
            opts["task_id"] = str(task_id)
        return opts

    def reset(self, seed: int | None = None, task_id: str | None = None,
              options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode (a seeded task, or ``task_id``); the task prompt and the env's info."""
        return self.env._runner.run(self.areset(seed=seed, task_id=task_id, options=options))

    async def areset(self, seed: int | None = None, task_id: str | None = None,
                     options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Async twin of :meth:`reset`."""
        obs, info = await self.env.areset(seed=seed, options=self._options(task_id, options))
        self.reward, self.components, self.info, self.started = 0.0, {}, info, True
        return obs, info

    def call(self, name: str, arguments: Any = None) -> StepOutcome:
        """Run one tool call as one env step (validated, budgeted and scored by the env)."""
        return self.env._runner.run(self.acall(name, arguments))

    async def acall(self, name: str, arguments: Any = None) -> StepOutcome:
        """Async twin of :meth:`call`."""
        if not self.started:
            raise RuntimeError("call reset() before calling a tool")
        arguments = {} if arguments is None else arguments
        call = _LooseCall(name if isinstance(name, str) else str(name), arguments)
        try:  # the env's own format; a malformed call is written as is, and the env says what is wrong with it
            action = self.env.tool_format.format_call(call)  # type: ignore[arg-type]
        except Exception:
            import json

            action = json.dumps({"name": call.name, "arguments": arguments}, default=str)
        return await self.astep_text(action)

    def step_text(self, action: str) -> StepOutcome:
        """One env step with a raw text action (the env's own format)."""
        return self.env._runner.run(self.astep_text(action))

    async def astep_text(self, action: str) -> StepOutcome:
        """Async twin of :meth:`step_text`."""
        if not self.started:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = await self.env.astep(action)
        self.reward += float(reward)
        for k, v in (info.get("rewards") or {}).items():
            self.components[k] = self.components.get(k, 0.0) + float(v)
        self.info = info
        return StepOutcome(obs, float(reward), bool(terminated), bool(truncated), info)

    def finish(self) -> float:
        """End an unfinished episode as truncated (the policy stopped calling tools) and return its total reward.

        The env's terminal components (``score``) are added exactly as when it truncates an episode
        itself at ``max_turns``; the episode's resources are released. A finished episode is left as is.
        """
        return self.env._runner.run(self.afinish())

    async def afinish(self) -> float:
        """Async twin of :meth:`finish`."""
        ep = self.env.episode
        if ep is None or ep.done:
            return self.reward
        reward, info = await self.env.aend_episode("policy_stopped")
        for k, v in info["rewards"].items():
            self.components[k] = self.components.get(k, 0.0) + float(v)
        self.reward += reward
        return self.reward

    def close(self) -> None:
        """Release the episode's resources and the env."""
        self.env.close()

    async def aclose(self) -> None:
        """Release the current episode's resources (the env object stays usable for another reset)."""
        await self.env.aclose()


class _LooseCall:
    """A tool call as the caller gave it (arguments may not even be an object: the env reports that)."""

    def __init__(self, name: str, arguments: Any) -> None:
        self.name = name
        self.arguments = arguments
        self.id = ""
        self.raw = ""

    def to_openai(self) -> dict[str, Any]:
        """This call as an OpenAI ``tool_calls`` entry."""
        import json

        return {"id": "", "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False, default=str)}}
