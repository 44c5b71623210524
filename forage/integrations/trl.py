"""A Forage env as a TRL ``environment_factory`` class (TRL >= 1.16's ``GRPOTrainer(environment_factory=...)``).

TRL makes one instance per rollout (pooled, reset between rollouts), exposes the instance's public
methods as tools (their JSON schema from the signature and the Google-style docstring), calls
``reset(**row)`` with the dataset row and appends the string it returns to the last user message,
and, when the class has ``get_reward()``, scores each rollout with it.

:func:`environment_class` builds such a class for any Forage env: one method per env tool (its
parameters typed from the tool's JSON schema, its docstring from the tool's descriptions), each
running one env step through :class:`~forage.integrations.session.EnvSession`, so validation,
budgets and error texts are the env's own. ``get_reward`` is the episode's total Forage reward (the
weighted sum of its components); an episode the model left without a final answer is ended then,
as truncated, and scored by the env's ``score`` like one cut at ``max_turns``.
"""

from __future__ import annotations

import inspect
import keyword
from typing import Any, Literal, Mapping

from .session import EnvSession

__all__ = ["environment_class", "task_dataset", "python_annotation"]

_RESERVED = {"reset", "get_reward", "close"}
_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list,
                               "object": dict}


def python_annotation(schema: Mapping[str, Any]) -> Any:
    """The Python type hint for one JSON-schema property (what ``transformers.get_json_schema`` turns back into it)."""
    if "enum" in schema and schema["enum"]:
        return Literal[tuple(schema["enum"])]  # type: ignore[misc]
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind == "array" and isinstance(schema.get("items"), dict) and schema["items"].get("type") in _JSON_TYPES:
        return list[_JSON_TYPES[schema["items"]["type"]]]  # type: ignore[index]
    if kind in _JSON_TYPES:
        return _JSON_TYPES[kind]
    if "anyOf" in schema:
        options = [python_annotation(s) for s in schema["anyOf"] if isinstance(s, dict) and s.get("type") != "null"]
        if len(options) == 1:
            return options[0]
    return Any


def _tool_method(name: str, description: str, parameters: Mapping[str, Any]):
    """A method ``name(self, **arguments) -> str`` whose signature and docstring describe the tool."""
    props: dict[str, Any] = dict(parameters.get("properties") or {})
    required = set(parameters.get("required") or [])
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    arg_docs = []
    for pname in sorted(props, key=lambda p: p not in required):  # required first, as Python wants
        if not pname.isidentifier() or keyword.iskeyword(pname):
            raise ValueError(f"tool {name!r}: parameter {pname!r} is not a Python identifier, so it cannot be a "
                             "method argument")
        hint = python_annotation(props[pname])
        default = inspect.Parameter.empty if pname in required else props[pname].get("default")
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, annotation=hint, default=default))
        annotations[pname] = hint
        text = " ".join(str(props[pname].get("description") or f"the {pname}").split())
        arg_docs.append(f"    {pname}: {text}")
    annotations["return"] = str

    def method(self: Any, **arguments: Any) -> str:
        return self._call(name, arguments)

    method.__name__ = method.__qualname__ = name
    method.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    summary = " ".join((description or name).split())
    method.__doc__ = summary + ("\n\nArgs:\n" + "\n".join(arg_docs) if arg_docs else "") + \
        "\n\nReturns:\n    The tool's result as text."
    return method


class _ForageTRLEnvironment:
    """Base of the generated classes: the episode plumbing (``reset``, ``get_reward``, ``close``)."""

    env_id: str = ""
    env_kwargs: dict[str, Any] = {}

    def __init__(self) -> None:
        self._session = EnvSession(self.env_id, self.env_kwargs)
        self._prompt_seen = False

    def reset(self, **row: Any) -> str:
        """Start the row's episode (``task_id`` or ``seed`` columns pick the task) and return its prompt."""
        seed = row.get("seed")
        task_id = row.get("task_id")
        obs, _ = self._session.reset(seed=int(seed) if seed is not None else None,
                                     task_id=str(task_id) if task_id is not None else None)
        return obs

    def get_reward(self) -> float:
        """The episode's total Forage reward (an unfinished episode is ended and scored first)."""
        if not self._session.started:
            return 0.0
        return self._session.finish()

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        # TRL passes every argument the model wrote; absent optional ones arrive as their defaults
        if not self._session.started:
            return "Error: the episode has not started; call reset() first."
        return self._session.call(name, {k: v for k, v in arguments.items() if v is not None}).text

    @property
    def session(self) -> EnvSession:
        """The underlying :class:`EnvSession` (its episode, reward components and info)."""
        return self._session

    def close(self) -> None:
        """Release the env."""
        self._session.close()

    def __del__(self) -> None:  # the pool's instances go away with the trainer: release their episodes
        try:
            self._session.close()
        except Exception:
            pass


def environment_class(env_id: str, **env_kwargs: Any) -> type:
    """A TRL ``environment_factory`` class for the registered Forage env ``env_id`` (kwargs go to ``gym.make``)."""
    probe = EnvSession(env_id, env_kwargs)
    try:
        members: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs),
                                   "__doc__": f"The Forage env {env_id} as a TRL environment: its tools are the methods."}
        for t in probe.tools:
            if t.name in _RESERVED or t.name.startswith("_") or not t.name.isidentifier():
                raise ValueError(f"the tool {t.name!r} of {env_id} cannot be a TRL environment method "
                                 "(reserved, private or not a Python identifier)")
            members[t.name] = _tool_method(t.name, t.description, t.parameters)
    finally:
        probe.close()
    name = "".join(ch for ch in env_id.split("/")[-1].title() if ch.isalnum()) or "ForageEnv"
    return type(name, (_ForageTRLEnvironment,), members)


def task_dataset(env_id: str, num_tasks: int | None = None, system_prompt: bool = True, **env_kwargs: Any):
    """A ``datasets.Dataset`` for ``environment_factory`` training: ``prompt`` (system + empty user turn) and ``task_id``.

    ``reset`` appends the task's prompt to the empty user turn, so each row is its task.
    """
    from datasets import Dataset

    session = EnvSession(env_id, env_kwargs)
    try:
        tasks = session.env.tasks[:num_tasks] if num_tasks is not None else session.env.tasks
        system = session.env.system_prompt
    finally:
        session.close()
    head = [{"role": "system", "content": system}] if system_prompt else []
    return Dataset.from_dict({"prompt": [head + [{"role": "user", "content": ""}] for _ in tasks],
                              "task_id": [t.id for t in tasks]})
