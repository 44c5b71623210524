"""ScienceWorld tasks (the ``scienceworld`` package's simulator in a JVM) as a text game, scored by its own scorer."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from importlib.metadata import version
from typing import Any, Hashable, Sequence

from ...assets import cache_dir
from ..base import Task
from .textgame import GameBackend, GameView, TextGameEnv

__all__ = ["ScienceWorldEnv", "ScienceWorldBackend", "scienceworld_unavailable", "variation_table"]

SPLITS = ("train", "dev", "test")
_TABLE_LOCK = threading.Lock()


def scienceworld_unavailable() -> str | None:
    """Why ScienceWorld cannot run here (no ``scienceworld`` package or no Java runtime), or None."""
    try:
        import scienceworld  # noqa: F401
    except Exception as e:
        return f"the scienceworld package is not importable ({type(e).__name__}: {e}); pip install scienceworld"
    if shutil.which("java") is None:
        return "no Java runtime (java) on PATH; install Debian's default-jre-headless"
    return None


class _JVM:
    """One ScienceWorld simulator (a JVM behind py4j), stopped and reaped by :meth:`close`."""

    def __init__(self, step_limit: int) -> None:
        from scienceworld import ScienceWorldEnv as _SW

        self.sw = _SW("", envStepLimit=step_limit)

    def close(self) -> None:
        proc = getattr(getattr(self.sw, "_gateway", None), "java_process", None)
        try:
            self.sw.close()
        except Exception:
            pass
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def variation_table(task_names: Sequence[str] | None = None) -> dict[str, dict[str, list[int]]]:
    """ScienceWorld's own train/dev/test variation indices per task type, cached per package version."""
    path = cache_dir("scienceworld") / f"variations-{version('scienceworld')}.json"
    with _TABLE_LOCK:
        table: dict[str, dict[str, list[int]]] = json.loads(path.read_text()) if path.exists() else {}
        wanted = list(task_names) if task_names is not None else None
        missing = None if wanted is None and table.get("__all__") else [t for t in (wanted or []) if t not in table]
        if missing is None or missing:
            jvm = _JVM(100)
            try:
                names = list(jvm.sw.get_task_names())
                table["__all__"] = {"names": names}  # type: ignore[assignment]
                for name in (missing if missing else names):
                    if name not in names:
                        raise ValueError(f"unknown ScienceWorld task {name!r}; the tasks are {names}")
                    jvm.sw.load(name, 0, "")
                    table[name] = {"train": list(jvm.sw.get_variations_train()),
                                   "dev": list(jvm.sw.get_variations_dev()),
                                   "test": list(jvm.sw.get_variations_test())}
            finally:
                jvm.close()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table))
            tmp.replace(path)
    names = wanted if wanted is not None else table["__all__"]["names"]  # type: ignore[index]
    return {n: table[n] for n in names}


class ScienceWorldBackend:
    """One task variation in the env's simulator. No snapshots: ScienceWorld has no state save/restore."""

    supports_snapshots = False

    def __init__(self, jvm: _JVM, task: str, variation: int, simplification: str) -> None:
        self.jvm, self.task, self.variation, self.simplification = jvm, task, variation, simplification
        self._last = ""

    def _view(self, obs: str, info: dict[str, Any], done: bool) -> GameView:
        score = float(info.get("score", 0))
        self._last = obs
        return GameView(feedback=str(obs), score=score, max_score=100.0, won=bool(done and score >= 100),
                        lost=bool(done and score < 100), moves=int(info.get("moves", 0)),
                        admissible=list(info.get("valid") or []))

    def reset(self) -> GameView:
        self.jvm.sw.load(self.task, self.variation, self.simplification)
        obs, info = self.jvm.sw.reset()
        return self._view(f"{self.jvm.sw.get_task_description()}\n\n{obs}", info, False)

    def step(self, command: str) -> GameView:
        obs, _, done, info = self.jvm.sw.step(command)
        return self._view(obs, info, bool(done))

    def get_state(self) -> Any:
        raise NotImplementedError("ScienceWorld cannot save its state; return by replaying actions")

    def set_state(self, state: Any) -> GameView:
        raise NotImplementedError("ScienceWorld cannot restore a state; return by replaying actions")

    def cell(self) -> Hashable:
        """What the agent sees around it and carries, and the score (ScienceWorld's look + inventory)."""
        text = f"{self.jvm.sw.look()}\n{self.jvm.sw.inventory()}\n{self.jvm.sw.get_goal_progress()}"
        return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=8).hexdigest()

    def gold_actions(self) -> list[str]:
        """The task's gold action sequence (ScienceWorld's own solver)."""
        self.jvm.sw.load(self.task, self.variation, self.simplification, generateGoldPath=True)
        return list(self.jvm.sw.get_gold_action_sequence())

    def close(self) -> None:
        """Nothing to do: the simulator belongs to the env."""


class ScienceWorldEnv(TextGameEnv):
    """ScienceWorld's elementary-science tasks (boil water, grow a plant, test conductivity...) as text.

    ## Description
    The ``scienceworld`` package's simulator (a JVM started on first reset, one per env,
    stopped on ``close``). Tasks are every variation of the chosen task types in ScienceWorld's own
    ``train``, ``dev`` or ``test`` split; its gold action sequence is the oracle.

    ## Action Space
    Text with a ``command(command)`` tool call, or the command alone (``plain_text``).

    ## Observation Space
    Text: the task description and the first room on reset, then the simulator's replies.
    ``info["admissible_commands"]`` lists ScienceWorld's valid action-object combinations.

    ## Rewards
    ``score``: the step's gain in ScienceWorld's own score (0-100; -100 when a task fails)
    divided by 100; ``won``: 1 when the task is completed (score 100); ``format`` -1 on a malformed
    turn. Weights: score 1, won 1, format 0.1.

    ## Starting State
    A variation drawn with the reset seed, or ``options["task_id"]``
    (``sciworld-boil-train-000``); ``options["replay_actions"]`` replays commands first (there are
    no snapshots).

    ## Episode End
    Terminated when ScienceWorld says the task is done (completed or failed); truncated after
    ``max_turns`` (default 100, ScienceWorld's own step limit).

    ## Arguments
    ``task_names`` (default: all 30 task types), ``split`` (train/dev/test), ``simplification``
    (ScienceWorld's ``simplificationStr``, default ``""``; ``"easy"`` turns on all),
    ``max_variations`` per task (default: all), plus the TextGameEnv/ToolEnv options.
    """

    supports_snapshots = False
    default_system_prompt = ("You do science experiments in a text world. Call the command tool with what you want to "
                             "do (for example 'look around', 'open door to kitchen', 'pick up thermometer').")

    def __init__(self, task_names: Sequence[str] | None = None, split: str = "train", simplification: str = "",
                 max_variations: int | None = None, max_turns: int = 100, **kwargs: Any) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.task_names = list(task_names) if task_names is not None else None
        self.split, self.simplification, self.max_variations = split, simplification, max_variations
        self.step_limit = max_turns
        self._jvm: _JVM | None = None
        super().__init__(max_turns=max_turns, **kwargs)

    @staticmethod
    def unavailable() -> str | None:
        """Why this env cannot run here, or None."""
        return scienceworld_unavailable()

    def load_tasks(self) -> list[Task]:
        tasks = []
        for name, splits in variation_table(self.task_names).items():
            for var in splits[self.split][: self.max_variations]:
                tid = f"sciworld-{name}-{self.split}-{var:03d}"
                tasks.append(Task(tid, f"ScienceWorld task {name}, variation {var} ({self.split}).", None,
                                  {"task": name, "variation": var, "split": self.split}))
        return tasks

    @property
    def jvm(self) -> _JVM:
        """The env's simulator (started on first use)."""
        if self._jvm is None:
            self._jvm = _JVM(self.step_limit)
        return self._jvm

    def make_backend(self, task: Task) -> GameBackend:
        return ScienceWorldBackend(self.jvm, task.metadata["task"], task.metadata["variation"], self.simplification)

    def oracle_actions(self, task: Task) -> list[str]:
        """ScienceWorld's gold action sequence for the task, as ``command`` tool calls (computed once)."""
        if "gold" not in task.metadata:
            task.metadata["gold"] = ScienceWorldBackend(self.jvm, task.metadata["task"], task.metadata["variation"],
                                                        self.simplification).gold_actions()
            ep = self.episode
            if ep is not None and not ep.done and self._backend is not None:
                # the gold path reloaded the simulator: bring the running episode back by replaying it
                self._backend.reset()
                for command in ep.state.get("actions", []):
                    self._backend.step(command)
        return [self.format_call("command", command=c) for c in task.metadata["gold"]]

    def get_state(self):
        raise NotImplementedError("ScienceWorld has no snapshots; Go-Explore returns by replaying actions")

    def close(self) -> None:
        """End the episode and stop the JVM (reaped)."""
        super().close()
        if self._jvm is not None:
            self._jvm.close()
            self._jvm = None
