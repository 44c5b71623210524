"""Registration of Forage envs under the ``forage/`` namespace, and of third-party plugins."""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from importlib.metadata import entry_points
from typing import Any, Callable, Sequence

import gymnasium as gym

__all__ = ["register_env", "register_builtin_envs", "load_plugins", "forage_env_ids", "describe_env", "PLUGIN_GROUP"]

PLUGIN_GROUP = "forage.envs"
_DESCRIPTIONS: dict[str, str] = {}

# id -> (entry point, one-line description, default kwargs). Later layers add their envs here.
BUILTIN_ENVS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "forage/LookupQA-v0": (
        "forage.envs.lookup:LookupQAEnv",
        "Multi-hop questions over a generated knowledge base of fictional entities (lookup/search/answer).",
        {},
    ),
    "forage/LookupQA-1hop-v0": (
        "forage.envs.lookup:LookupQAEnv",
        "LookupQA with 1-hop questions only (the first rung of the curriculum).",
        {"hops": 1},
    ),
    "forage/SearchQA-v0": (
        "forage.envs.search:SearchQAEnv",
        "Single-hop and bridge questions over 10k Wikipedia summaries; search (FAISS/BM25/service) then answer.",
        {},
    ),
    "forage/FanOutQA-v0": (
        "forage.envs.search:FanOutQAEnv",
        "FanOutQA's 310 fan-out multi-hop dev questions with a search tool (any corpus or retrieval service).",
        {},
    ),
    "forage/HumanEval-v0": (
        "forage.envs.code:HumanEvalEnv",
        "HumanEval's 164 Python functions: test code in a sandbox (python tool), submit; hidden tests grade it.",
        {},
    ),
    "forage/MathPython-v0": (
        "forage.envs.math:MathPythonEnv",
        "CHAMP's 270 competition math problems with a Python sandbox; answers checked via sympy normalisation.",
        {},
    ),
    "forage/WikiNav-v0": (
        "forage.envs.web:WikiNavEnv",
        "Reach a target article of the local wiki site by clicking links; difficulty = shortest click-path length.",
        {},
    ),
    "forage/WebQA-v0": (
        "forage.envs.web:WebQAEnv",
        "SearchQA's questions answered by browsing the local wiki site (search page, articles, links) with a text browser.",
        {},
    ),
    "forage/MiniWoB-v0": (
        "forage.envs.miniwob:MiniWoBEnv",
        "16 MiniWoB++ click/type tasks in headless chromium as text DOMs with click(id)/type(id, text) tools.",
        {},
    ),
    **{f"forage/MiniWoB-{name}-v0": ("forage.envs.miniwob:MiniWoBEnv", f"MiniWoB++ {name} only (see MiniWoB-v0).",
                                     {"miniwob_tasks": [name]})
       for name in ("click-button", "enter-text", "login-user")},
    "forage/Game24-v0": (
        "forage.envs.games.game24:Game24Env",
        "Game of 24: make 24 from four numbers (all 1362 solvable sets) with a calculator; exact rational grading.",
        {},
    ),
    "forage/TextWorld-v0": (
        "forage.envs.games.textworld_games:TextWorldEnv",
        "TextWorld simple games (tw-make, level 1 of 3, generated and cached on first use); command tool, walkthrough oracle.",
        {},
    ),
    **{f"forage/TextWorld-{name.capitalize()}-v0": (
        "forage.envs.games.textworld_games:TextWorldEnv",
        f"TextWorld {desc} games (see TextWorld-v0).", {"challenge": name, "level": level})
       for name, desc, level in (("coin", "coin collector (level 15 of 300)", 15),
                                 ("treasure", "treasure hunter (level 5 of 30)", 5),
                                 ("cooking", "cooking (FTWP-style, level 1 of 3)", 1))},
    "forage/BabyAI-v0": (
        "forage.envs.games.babyai:BabyAIEnv",
        "BabyAI single-room levels (go to, pick up, put next to, open) described in text as BabyAI-Text; bot oracle.",
        {},
    ),
    **{f"forage/BabyAI-{level}-v0": ("forage.envs.games.babyai:BabyAIEnv", f"BabyAI {level} only (see BabyAI-v0).",
                                     {"levels": [level]})
       for level in ("GoToLocal", "PutNextLocal")},
    "forage/ScienceWorld-v0": (
        "forage.envs.games.scienceworld_games:ScienceWorldEnv",
        "ScienceWorld's 30 science task types (train variations; dev/test splits) in its JVM simulator; gold-path oracle.",
        {},
    ),
}


def register_env(
    env_id: str,
    entry_point: str | Callable[..., gym.Env] | None = None,
    *,
    description: str | None = None,
    tasks: Sequence[Any] | None = None,
    tools: Sequence[Any] | None = None,
    score_fn: Callable[..., Any] | None = None,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> None:
    """Register an env with Gymnasium (and ``forage envs``).

    Either give an ``entry_point`` (a ``"module:Class"`` string or a callable), or build a plain
    :class:`~forage.envs.ToolEnv` from ``tasks``, ``tools`` and ``score_fn``. Extra keyword
    arguments become the env's default kwargs (``gymnasium.make`` can override them).
    """
    if entry_point is None:
        if tasks is None or tools is None:
            raise ValueError("give an entry_point, or tasks= and tools= to build a ToolEnv")
        from .base import ToolEnv

        entry_point = functools.partial(ToolEnv, list(tasks), list(tools), score_fn=score_fn)
    if env_id in gym.registry:
        del gym.registry[env_id]
    gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs, max_episode_steps=max_episode_steps,
                 disable_env_checker=True)
    if description:
        _DESCRIPTIONS[env_id] = description


def register_builtin_envs() -> None:
    """Register every built-in ``forage/...`` env (idempotent)."""
    for env_id, (entry, desc, kwargs) in BUILTIN_ENVS.items():
        if env_id not in gym.registry:
            register_env(env_id, entry, description=desc, **kwargs)


def load_plugins() -> list[str]:
    """Load third-party envs declared under the ``forage.envs`` entry-point group.

    A plugin's entry point names a function that registers its envs (or a module that does so
    on import). Failures become warnings, never a broken ``import forage``.
    """
    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not inspect.ismodule(obj):
                obj()
            loaded.append(ep.name)
        except Exception as e:  # a broken plugin must not break forage
            warnings.warn(f"forage plugin {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2)
    return loaded


def forage_env_ids() -> list[str]:
    """Ids of the Forage envs and plugin envs known to Gymnasium's registry."""
    ids = [i for i in gym.registry if i.startswith("forage/") or i in _DESCRIPTIONS]
    return sorted(set(ids))


def describe_env(env_id: str) -> str:
    """The one-line description of an env (from its registration, else its class docstring)."""
    if env_id in _DESCRIPTIONS:
        return _DESCRIPTIONS[env_id]
    entry = gym.registry[env_id].entry_point
    try:
        if isinstance(entry, str):
            mod, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(mod), attr)
        doc = inspect.getdoc(entry) or ""
    except Exception as e:
        return f"(could not import: {e})"
    return doc.strip().splitlines()[0] if doc.strip() else ""
