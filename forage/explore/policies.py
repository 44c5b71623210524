"""Exploration policies: anything with ``act(env, observation, info) -> action text``."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["ExplorePolicy", "RandomCommandPolicy", "ChatExplorePolicy"]


@runtime_checkable
class ExplorePolicy(Protocol):
    """Chooses the next env action (a full turn of text) from the current observation and info."""

    def act(self, env: Any, observation: str, info: dict[str, Any]) -> str: ...


class RandomCommandPolicy:
    """A uniformly random admissible command (``info["admissible_commands"]``), or one of ``commands``.

    The command is written as a ``command`` tool call in the env's format, so any text game takes it.
    """

    def __init__(self, seed: int | None = None, commands: Sequence[str] | None = None, tool: str = "command",
                 arg: str = "command") -> None:
        self.rng = np.random.default_rng(seed)
        self.commands = list(commands) if commands else None
        self.tool, self.arg = tool, arg

    def act(self, env: Any, observation: str, info: dict[str, Any]) -> str:
        options = info.get("admissible_commands") or self.commands
        if not options:
            raise ValueError("no admissible commands in info and no fallback commands given")
        choice = str(options[int(self.rng.integers(len(options)))])
        base = getattr(env, "unwrapped", env)
        return base.format_call(self.tool, **{self.arg: choice})


class ChatExplorePolicy:
    """An OpenAI-compatible chat model (a :class:`forage.agents.OpenAIPolicy`) choosing each turn.

    It sees the env's system prompt, the first observation and the last ``history`` turns. When the model
    writes its calls as text (``OpenAIPolicy(use_tools=False)``), each request carries the env's tool-format
    stop strings (``env.stop_strings()``, e.g. Hermes' ``</tool_call>``), as the rollout engine's do, and the
    stop string the server cut off is put back, so the env sees the whole call and never results the model
    made up; with server-side tool calls (the default) no stops are sent, as :class:`~forage.agents.ChatRunner` does.
    """

    def __init__(self, policy: Any, history: int = 6, temperature: float = 1.0, max_tokens: int = 128) -> None:
        self.policy, self.history = policy, history
        self.temperature, self.max_tokens = temperature, max_tokens
        self._loop = asyncio.new_event_loop()
        self._messages: list[dict[str, Any]] = []

    def act(self, env: Any, observation: str, info: dict[str, Any]) -> str:
        from ..agents.policy import SamplingParams

        base = getattr(env, "unwrapped", env)
        if info.get("role") != "tool" or not self._messages:
            self._messages = [{"role": "system", "content": base.system_message(with_tools=True)},
                              {"role": "user", "content": observation}]
        else:
            self._messages.append({"role": "user", "content": observation})
        window = self._messages[:2] + self._messages[2:][-2 * self.history:]
        stops = self.stops(base, info)
        params = SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, stop=stops)
        coro = self.policy.chat(window, base.tool_schemas(), params, stop=stops) if stops else \
            self.policy.chat(window, base.tool_schemas(), params)
        reply = self._loop.run_until_complete(coro)
        message = reply.get("message", reply) if isinstance(reply, dict) else {"content": str(reply)}
        text = message.get("content") or ""
        if stops and isinstance(message, dict) and "finish_reason" in message:
            from ..agents.openai_api import ChatRunner

            text = ChatRunner._restore_stop(base, {**message, "content": text}, stops)
        for call in message.get("tool_calls") or []:  # the first call, in the env's own format
            fn = call.get("function", {})
            try:
                text = base.format_call(fn.get("name", ""), **json.loads(fn.get("arguments") or "{}"))
            except (ValueError, TypeError):
                pass  # unparsable arguments: the text goes to the env as it is (an error observation)
            break
        self._messages.append({"role": "assistant", "content": text})
        return text

    def stops(self, env: Any, info: dict[str, Any] | None = None) -> tuple[str, ...]:
        """The stop strings a request carries: the env's tool-format ones when calls are written as text, else none."""
        if getattr(self.policy, "use_tools", True):
            return ()   # server-side tool calls: a stop would cut the call before the server's parser sees it
        from ..agents.rollout import env_stop_strings

        return env_stop_strings(env, info)

    def close(self) -> None:
        """Close the model's HTTP client and the event loop."""
        aclose = getattr(self.policy, "aclose", None)
        if callable(aclose) and not self._loop.is_closed():
            self._loop.run_until_complete(aclose())
        self._loop.close()
