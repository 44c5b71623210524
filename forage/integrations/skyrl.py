"""A Forage env as a SkyRL-gym env (``skyrl-gym``'s ``BaseTextEnv``: ``init(prompt)``, ``step(action) -> BaseTextEnvStepOutput``).

SkyRL makes an env per trajectory with ``skyrl_gym.make(id, env_config=..., extras=row)``, where
``extras`` is the dataset row; Forage reads ``extras["task_id"]`` (or ``extras["seed"]``) to pick
the task and ``env_config["env_kwargs"]`` for ``gym.make``. ``init`` returns the conversation the
model starts from: the env's system message (with its tool-call instructions, as Forage's rollout
engine renders it) and the task prompt; the prompt SkyRL passes in is not used. ``step`` is the
env's own text step: the action in the env's tool-call format, the tool results (wrapped as the
env wraps them) as one ``user`` message, the step's reward, ``done`` when the episode ended, and
the env's ``info`` as ``metadata``. ``get_metrics`` reports the reward components and tool calls.

:func:`register_skyrl_envs` registers every Forage env id with ``skyrl_gym`` (entry point
``ForageSkyRLEnv`` with that id).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from .session import make_tool_env

__all__ = ["ForageSkyRLEnv", "register_skyrl_envs", "skyrl_env"]


def _base():
    try:
        from skyrl_gym.envs.base_text_env import BaseTextEnv
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("SkyRL-gym support needs skyrl-gym: pip install 'forage-gym[skyrl]'") from e
    return BaseTextEnv


def _config_get(config: Any, key: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)   # a dataclass or omegaconf DictConfig


def _make_class():
    BaseTextEnv = _base()

    class ForageSkyRLEnv(BaseTextEnv):
        """One Forage episode as a SkyRL-gym text env."""

        def __init__(self, env_config: Any = None, extras: Mapping[str, Any] | None = None, env_id: str | None = None):
            super().__init__()
            extras = dict(extras or {})
            env_id = env_id or _config_get(env_config, "env_id") or extras.get("env_id")
            if not env_id:
                raise ValueError("ForageSkyRLEnv needs an env id (register_skyrl_envs(), env_config.env_id or "
                                 "extras['env_id'])")
            kwargs = dict(_config_get(env_config, "env_kwargs", None) or {})
            self.env = make_tool_env(env_id, kwargs)
            self.env_id = env_id
            self.extras = extras
            self.max_turns = self.env.max_turns
            self.reward_components: dict[str, float] = {}
            self.num_tool_calls = 0
            self.done = False

        def init(self, prompt: Any = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
            """Reset to the row's task; the system message (with tool instructions) and the task prompt."""
            options = {}
            if self.extras.get("task_id") is not None:
                options["task_id"] = str(self.extras["task_id"])
            seed = self.extras.get("seed")
            obs, info = self.env.reset(seed=int(seed) if seed is not None else None, options=options)
            self.turns, self.done, self.reward_components, self.num_tool_calls = 0, False, {}, 0
            conversation = [{"role": "system", "content": self.env.system_message(with_tools=True)},
                            {"role": "user", "content": obs}]
            return conversation, {"task_id": info.get("task_id"), "tools": info.get("tools")}

        def step(self, action: str) -> dict[str, Any]:
            """One env step with the model's text; a ``BaseTextEnvStepOutput``."""
            from skyrl_gym.envs.base_text_env import BaseTextEnvStepOutput

            if self.env.episode is None:
                raise RuntimeError("call init() before step()")
            self.turns += 1
            obs, reward, terminated, truncated, info = self.env.step(action if isinstance(action, str) else str(action))
            for k, v in (info.get("rewards") or {}).items():
                self.reward_components[k] = self.reward_components.get(k, 0.0) + float(v)
            self.num_tool_calls = int(info.get("num_tool_calls", self.num_tool_calls))
            self.done = bool(terminated or truncated)
            observations = [] if self.done else [{"role": "user", "content": obs}]
            metadata = dict(info)
            if self.done:
                metadata["final_observation"] = obs
            return BaseTextEnvStepOutput(observations=observations, reward=float(reward), done=self.done,
                                         metadata=metadata, postprocessed_action=None)

        def get_metrics(self) -> dict[str, Any]:
            """The episode's reward components, tool calls and turns (numbers, for SkyRL's averaging)."""
            return {**{f"reward/{k}": v for k, v in self.reward_components.items()},
                    "num_tool_calls": self.num_tool_calls, "turns": self.turns}

        def close(self) -> None:
            """Release the episode's resources."""
            self.env.close()

    return ForageSkyRLEnv


@functools.lru_cache(maxsize=1)
def _cls() -> type:
    return _make_class()


def __getattr__(name: str) -> Any:
    if name == "ForageSkyRLEnv":
        return _cls()
    raise AttributeError(name)


def skyrl_env(env_id: str, env_config: Any = None, extras: Mapping[str, Any] | None = None) -> Any:
    """A ``ForageSkyRLEnv`` for ``env_id`` (what ``skyrl_gym.make`` builds after :func:`register_skyrl_envs`)."""
    return _cls()(env_config=env_config, extras=extras, env_id=env_id)


def register_skyrl_envs(env_ids: list[str] | None = None) -> list[str]:
    """Register Forage envs with ``skyrl_gym`` under their own ids (default: every registered ``forage/...`` env)."""
    import gymnasium as gym
    import skyrl_gym

    import forage  # noqa: F401

    ids = env_ids if env_ids is not None else [i for i in gym.registry if i.startswith("forage/")]
    for env_id in ids:
        if env_id in skyrl_gym.registry:
            continue
        skyrl_gym.register(id=env_id, entry_point=functools.partial(skyrl_env, env_id))
    return ids
