"""OpenEnv both ways (``openenv-core``): a Forage env behind OpenEnv's own server, and an OpenEnv server as a Gymnasium env.

Serving: :func:`create_openenv_app` hands OpenEnv's ``create_fastapi_app`` an OpenEnv
``Environment`` built around :class:`~forage.integrations.session.EnvSession`, so the HTTP and
WebSocket protocol (``/ws`` sessions, ``/reset``, ``/step``, ``/state``, ``/schema``, ``/health``) is
OpenEnv's and OpenEnv's ``EnvClient`` talks to it unchanged. One env per WebSocket session; OpenEnv
closes it when the socket goes away (and after ``session_timeout`` of idleness). An action is either
a structured tool call ``{"tool": NAME, "arguments": {...}}`` or the raw text ``{"message": "..."}``
in the env's tool-call format; the observation carries the text, the tools (at reset), the reward
components and the env's error lines. ``reset`` takes ``seed`` and ``task_id``.

Consuming: :class:`OpenEnvGymEnv` is a text-in/text-out ``gymnasium.Env`` over any OpenEnv server
(through OpenEnv's ``GenericEnvClient``): a text action is sent as ``{action_key: text}`` (or as is
when it is a JSON object), and the observation's ``observation_key`` field is the text observation.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import gymnasium as gym

from .session import EnvSession

__all__ = ["create_openenv_app", "environment_class", "OpenEnvGymEnv", "ForageAction", "ForageObservation",
           "ForageState"]


def _models():
    """The pydantic Action/Observation/State types (built on first use: openenv-core is an optional extra)."""
    global _MODELS
    if _MODELS is not None:
        return _MODELS
    try:
        from openenv.core.env_server.types import Action, Observation, State
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("OpenEnv support needs openenv-core: pip install 'forage-gym[openenv]'") from e
    from pydantic import Field

    class ForageAction(Action):
        """One Forage step: a structured tool call (``tool`` + ``arguments``) or a raw text ``message``."""

        tool: str | None = Field(default=None, description="the tool to call")
        arguments: dict[str, Any] = Field(default_factory=dict, description="the tool's arguments")
        message: str | None = Field(default=None, description="a raw assistant message in the env's tool-call format")
        # (that exactly one of tool/message is given is checked in step, not by a validator: OpenEnv 0.2.1 cannot
        # serialize a validator's ValueError and drops the session)

    class ForageObservation(Observation):
        """The env's text, and the structure Forage keeps in ``info``."""

        text: str = Field(default="", description="the observation text (task prompt or tool results)")
        task_id: str | None = None
        tools: list[dict[str, Any]] | None = Field(default=None, description="OpenAI tool schemas (at reset)")
        system_prompt: str | None = None
        rewards: dict[str, float] = Field(default_factory=dict, description="this step's reward components")
        tool_errors: list[str] = Field(default_factory=list)
        truncated: bool = False
        stop_reason: str | None = None

    class ForageState(State):
        """Episode bookkeeping."""

        task_id: str | None = None
        reward_total: float = 0.0
        reward_components: dict[str, float] = Field(default_factory=dict)

    _MODELS = (ForageAction, ForageObservation, ForageState)
    return _MODELS


_MODELS: tuple | None = None


def __getattr__(name: str) -> Any:
    if name in ("ForageAction", "ForageObservation", "ForageState"):
        return dict(zip(("ForageAction", "ForageObservation", "ForageState"), _models()))[name]
    raise AttributeError(name)


def environment_class(env_id: str, **env_kwargs: Any) -> type:
    """An OpenEnv ``Environment`` subclass serving the Forage env ``env_id`` (one instance per session)."""
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import EnvironmentMetadata

    ForageAction, ForageObservation, ForageState = _models()

    class ForageOpenEnv(Environment):
        """A Forage env as an OpenEnv environment."""

        SUPPORTS_CONCURRENT_SESSIONS = True   # every instance owns its env (and its sandbox, if any)

        def __init__(self) -> None:
            super().__init__()
            self.session = EnvSession(env_id, env_kwargs)
            self.episode_id: str | None = None
            self.steps = 0

        def reset(self, seed: int | None = None, episode_id: str | None = None, task_id: str | None = None,
                  **kwargs: Any) -> Any:
            if kwargs:
                raise ValueError(f"unknown reset arguments {sorted(kwargs)}; Forage takes seed and task_id")
            obs, info = self.session.reset(seed=seed, task_id=task_id)
            self.episode_id, self.steps = episode_id, 0
            return ForageObservation(text=obs, task_id=info.get("task_id"), tools=info.get("tools"),
                                     system_prompt=info.get("system_prompt"), done=False, reward=0.0)

        def step(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
            if not self.session.started:   # e.g. OpenEnv's stateless POST /step, which runs on a fresh env
                problem = ("Error: no episode is running; call reset first (OpenEnv's HTTP /step runs each request "
                           "on a fresh env: play episodes over the WebSocket session, /ws, as EnvClient does)")
                return ForageObservation(text=problem, tool_errors=[problem], done=True, reward=0.0)
            if (action.tool is None) == (action.message is None):
                problem = "Error: give either 'tool' (with 'arguments') or 'message', not both and not neither"
                return ForageObservation(text=problem, tool_errors=[problem], done=self.session.done, reward=0.0)
            out = (self.session.call(action.tool, action.arguments) if action.tool is not None
                   else self.session.step_text(action.message))
            self.steps += 1
            info = out.info
            return ForageObservation(text=out.text, task_id=info.get("task_id"), done=out.done, reward=out.reward,
                                     rewards=dict(info.get("rewards") or {}),
                                     tool_errors=[str(e) for e in info.get("tool_errors") or []],
                                     truncated=out.truncated, stop_reason=info.get("stop_reason"))

        @property
        def state(self) -> Any:
            ep = self.session.episode
            return ForageState(episode_id=self.episode_id, step_count=self.steps,
                               task_id=ep.task.id if ep is not None else None, reward_total=self.session.reward,
                               reward_components=dict(self.session.components))

        def get_metadata(self) -> Any:
            return EnvironmentMetadata(name=env_id, description=(self.session.env.__doc__ or env_id).strip().split("\n")[0],
                                       version="forage")

        def close(self) -> None:
            self.session.close()

    ForageOpenEnv.__name__ = ForageOpenEnv.__qualname__ = "ForageOpenEnv_" + "".join(c for c in env_id if c.isalnum())
    return ForageOpenEnv


def create_openenv_app(env_id: str, env_kwargs: Mapping[str, Any] | None = None, *, max_concurrent_envs: int = 64,
                       session_timeout: float | None = 600.0):
    """OpenEnv's FastAPI app (its ``/ws``, ``/reset``, ``/step``, ``/state``, ``/schema``, ``/health``) for a Forage env."""
    from openenv.core.env_server.http_server import create_fastapi_app
    from openenv.core.env_server.types import ConcurrencyConfig

    cls = environment_class(env_id, **dict(env_kwargs or {}))
    cls().close()   # fail now, clearly, for an unknown env id or bad kwargs
    ForageAction, ForageObservation, _ = _models()
    return create_fastapi_app(cls, ForageAction, ForageObservation,
                              concurrency_config=ConcurrencyConfig(max_concurrent_envs=max_concurrent_envs,
                                                                   session_timeout=session_timeout))


def _default_action(action_key: str) -> Callable[[str], dict[str, Any]]:
    def encode(text: str) -> dict[str, Any]:
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
                if isinstance(obj, dict):
                    return obj
            except json.JSONDecodeError:
                pass
        return {action_key: text}

    return encode


class OpenEnvGymEnv(gym.Env):
    """Any OpenEnv server (its ``/ws`` protocol) as a text-in/text-out Gymnasium env.

    ``action_fn`` turns the text action into the server's action dict (default: a JSON object as
    is, else ``{action_key: text}``); ``observation_fn`` turns the observation dict into text
    (default: its ``observation_key`` field, else the JSON of the whole dict). Reset keyword
    arguments come from ``options``; ``info`` holds the raw observation.
    """

    metadata = {"render_modes": []}

    def __init__(self, base_url: str, action_key: str = "message", observation_key: str = "text",
                 action_fn: Callable[[str], dict[str, Any]] | None = None,
                 observation_fn: Callable[[dict[str, Any]], str] | None = None,
                 message_timeout_s: float = 60.0) -> None:
        from openenv.core.generic_client import GenericEnvClient

        from ..envs.spaces import UnicodeText

        self.observation_space = UnicodeText()
        self.action_space = UnicodeText()
        self.action_fn = action_fn or _default_action(action_key)
        self.observation_key = observation_key
        self.observation_fn = observation_fn
        self._client = GenericEnvClient(base_url=base_url, message_timeout_s=message_timeout_s)
        self._done = True

    def _text(self, observation: dict[str, Any]) -> str:
        if self.observation_fn is not None:
            return self.observation_fn(observation)
        value = observation.get(self.observation_key)
        return value if isinstance(value, str) else json.dumps(observation, ensure_ascii=False, default=str)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Reset the remote env (``seed`` and ``options`` become its reset arguments)."""
        super().reset(seed=seed)
        kwargs = dict(options or {})
        if seed is not None:
            kwargs["seed"] = seed
        result = self._client.reset(**kwargs)
        self._done = bool(result.done)
        obs = result.observation if isinstance(result.observation, dict) else {"value": result.observation}
        return self._text(obs), {"observation": obs}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Send one action; ``terminated`` is the server's ``done``."""
        if self._done:
            raise gym.error.ResetNeeded("the episode is over (or never started); call reset()")
        result = self._client.step(self.action_fn(action if isinstance(action, str) else str(action)))
        obs = result.observation if isinstance(result.observation, dict) else {"value": result.observation}
        self._done = bool(result.done)
        truncated = bool(obs.get("truncated", False)) if isinstance(obs, dict) else False
        terminated = self._done and not truncated
        return self._text(obs), float(result.reward or 0.0), terminated, truncated, {"observation": obs}

    def close(self) -> None:
        """Close the WebSocket session (the server releases its env)."""
        self._client.close()
        super().close()
