"""A Forage env as a ``verifiers`` environment (multi-turn, tools as OpenAI tool calls, rubric = reward components).

:func:`load_environment` is what verifiers' ``vf-eval`` looks for, so the module path is an env id::

    vf-eval forage.integrations.verifiers -a '{"forage_env": "forage/LookupQA-1hop-v0"}' \\
        -m MODEL -b http://127.0.0.1:8000/v1 -n 8 -r 2

(the server must parse tool calls: ``forage serve policy`` does). The dataset is the env's tasks
(``question`` = the task prompt, ``info.task_id``), the system prompt is the env's, and the tools are
the env's own schemas, passed as OpenAI ``tools``. Each rollout owns one
:class:`~forage.integrations.session.EnvSession`: every tool call in an assistant message is one env
step (a message with several calls runs them as consecutive steps, where the native env would run
them in one turn), and an assistant message without tool calls is stepped as text, so the env decides
as it does natively (a format error, or the answer with ``on_no_tool_call="answer"``). The rollout
ends when the episode does; one that stops early is ended and scored as truncated.

Rubric: ``forage_reward`` (weight 1) is the episode's total Forage reward; every reward component is
also reported as a zero-weight metric ``forage_<name>``.
"""

from __future__ import annotations

import json
from typing import Any

from .session import EnvSession

__all__ = ["ForageVerifiersEnv", "load_environment"]

SESSION_KEY = "forage_session"
RESULT_KEY = "forage_result"


def _vf():
    try:
        import verifiers as vf
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("verifiers support needs the verifiers package: pip install 'forage-gym[verifiers]'") from e
    return vf


def _make_class():
    vf = _vf()

    class ForageVerifiersEnv(vf.MultiTurnEnv):
        """One Forage env; one episode per rollout."""

        def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.forage_env_id = env_id
            self.forage_env_kwargs = dict(env_kwargs or {})
            probe = EnvSession(env_id, self.forage_env_kwargs)
            try:
                max_turns = kwargs.pop("max_turns", probe.env.max_turns + 1)
                super().__init__(oai_tools=probe.tool_schemas(), system_prompt=probe.env.system_prompt,
                                 max_turns=max_turns, **kwargs)
            finally:
                probe.close()

        async def setup_state(self, state: Any) -> Any:
            info = state.get("info") or {}
            if isinstance(info, str):
                info = json.loads(info or "{}")
            session = EnvSession(self.forage_env_id, self.forage_env_kwargs)
            state[SESSION_KEY] = session
            try:
                await session.areset(seed=info.get("seed"), task_id=info.get("task_id"))
            except KeyError as e:
                raise vf.Error(f"cannot start the episode: {e}") from None
            return state

        async def env_response(self, messages: Any, state: Any, **kwargs: Any) -> Any:
            session: EnvSession = state[SESSION_KEY]
            last = messages[-1] if messages else {}
            calls = last.get("tool_calls") or []
            replies: list[dict[str, Any]] = []
            out = None
            if not calls:   # plain text: a turn like any other, the env decides what it means
                out = await session.astep_text(str(last.get("content") or ""))
                replies.append({"role": "user", "content": out.text})
            for call in calls:
                if isinstance(call, str):    # verifiers may hand tool calls back as JSON strings
                    try:
                        call = json.loads(call)
                    except json.JSONDecodeError:
                        call = {"function": {"name": "", "arguments": call}}
                fn = (call.get("function") if isinstance(call, dict) else getattr(call, "function", None)) or {}
                if not isinstance(fn, dict):
                    fn = {"name": getattr(fn, "name", ""), "arguments": getattr(fn, "arguments", "")}
                call_id = call.get("id", "") if isinstance(call, dict) else getattr(call, "id", "")
                raw = fn.get("arguments")
                try:
                    arguments = json.loads(raw) if isinstance(raw, str) else (raw or {})
                except json.JSONDecodeError:
                    arguments = raw        # the env says the arguments are not valid JSON
                if session.done:
                    break
                out = await session.acall(str(fn.get("name") or ""), arguments)
                replies.append({"role": "tool", "content": out.text, "tool_call_id": call_id})
            if session.done:
                state["final_env_response"] = replies
            return replies

        @vf.cleanup
        async def close_forage_episode(self, state: Any) -> None:
            """End (and score) the episode, keep its reward in the state, release the env."""
            session: EnvSession | None = state.get(SESSION_KEY)
            if session is None or state.get(RESULT_KEY) is not None:
                return
            try:
                reward = await session.afinish()
                state[RESULT_KEY] = {"reward": reward, "components": dict(session.components),
                                     "stop_reason": session.episode.stop_reason if session.episode else None}
            finally:
                await session.aclose()
                session.close()

    return ForageVerifiersEnv


_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    if name == "ForageVerifiersEnv":
        return _env_class()
    raise AttributeError(name)


def _env_class() -> type:
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class()
    return _CLASS


def _rubric(component_names: list[str]):
    vf = _vf()

    async def forage_reward(state: Any, **kwargs: Any) -> float:
        """The episode's total Forage reward (weighted sum of its components)."""
        return float((state.get(RESULT_KEY) or {}).get("reward", 0.0))

    funcs, weights = [forage_reward], [1.0]
    for name in component_names:
        async def component(state: Any, _name: str = name, **kwargs: Any) -> float:
            return float((state.get(RESULT_KEY) or {}).get("components", {}).get(_name, 0.0))

        component.__name__ = f"forage_{name}"
        funcs.append(component)
        weights.append(0.0)
    return vf.Rubric(funcs=funcs, weights=weights)


def load_environment(forage_env: str = "forage/LookupQA-1hop-v0", num_tasks: int | None = None,
                     env_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """The verifiers environment for the Forage env ``forage_env`` (its first ``num_tasks`` tasks as the dataset).

    (Not ``env_id``: verifiers' own loader takes that name for the module path.)
    """
    from datasets import Dataset

    env_id = forage_env
    probe = EnvSession(env_id, env_kwargs)
    try:
        tasks = probe.env.tasks if num_tasks is None else probe.env.tasks[: int(num_tasks)]
        components = sorted(probe.env.reward_weights)
    finally:
        probe.close()
    dataset = Dataset.from_dict({"question": [t.prompt for t in tasks],
                                 "answer": ["" if t.answer is None else str(t.answer) for t in tasks],
                                 "info": [{"task_id": t.id} for t in tasks],
                                 "task": [env_id] * len(tasks)})
    return _env_class()(env_id, env_kwargs, dataset=dataset, eval_dataset=dataset, rubric=_rubric(components),
                        **kwargs)
