"""MiniWoB++ web tasks (clicking, typing, forms) as text environments with click/type tools."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..tools import Tool, ToolCall, ToolError, ToolResult
from .base import Episode, Task, ToolEnv

__all__ = ["MiniWoBEnv", "MINIWOB_DEFAULT_TASKS"]

# Tasks solvable with element clicks and typing alone (no drag, no coordinates, no key chords).
MINIWOB_DEFAULT_TASKS = (
    "click-test", "click-test-2", "click-button", "click-button-sequence", "click-link", "click-dialog",
    "click-dialog-2", "click-checkboxes", "click-option", "click-tab", "click-collapsible", "enter-text",
    "enter-password", "focus-text", "focus-text-2", "login-user",
)


class MiniWoBEnv(ToolEnv):
    """MiniWoB++ tasks in headless chromium, seen as a compact text DOM and acted on with tool calls.

    Description:
        Each episode is one MiniWoB++ task instance ("Click the button labelled OK", "Enter the
        username and password and press login") from the ``miniwob`` package, run in Debian's
        headless chromium through chromedriver (one browser per env, reused across episodes and
        tasks). The task's 10-second timer is raised to ``episode_seconds`` so a language model
        has time to think; the reward is the task's own.

    Action Space:
        Text with tool calls: ``click(element_id)`` and ``type(element_id, text)`` (focuses the
        element by clicking it, then types).

    Observation Space:
        Text: the task instruction and the page's elements as indented lines
        ``[ref] tag #id .class "text" value="..."``; after each action the new page, or the end
        of the task with its reward.

    Rewards:
        ``task``: MiniWoB's raw reward when the task ends (1 success, negative or partial for
        failures; 0 if the episode is truncated first); ``format`` -1 for a malformed turn.
        Default weights: task 1, format 0.1.

    Starting State:
        A task sampled with the reset seed from ``miniwob_tasks`` (or ``options["task_id"]``), its
        instance generated from the episode's seed.

    Episode End:
        Terminated when the MiniWoB task ends (success or failure); truncated after ``max_turns``
        (default 10) turns or a budget.

    Arguments:
        miniwob_tasks: MiniWoB task names (default: 16 click/type tasks, see ``MINIWOB_DEFAULT_TASKS``).
        episode_seconds: the task timer in chromium (default 600).
        max_elements: most DOM elements listed per observation.
        and the :class:`ToolEnv` arguments.
    """

    default_reward_weights = {"format": 0.1, "task": 1.0}
    default_system_prompt = ("You operate a web page to complete a task. The page is shown as a list of elements with "
                             "numbers; click(element_id) clicks one, type(element_id, text) types into one.")

    def __init__(self, *, miniwob_tasks: Sequence[str] | str = MINIWOB_DEFAULT_TASKS, episode_seconds: float = 600.0,
                 max_elements: int = 150, max_turns: int = 10, **kwargs: Any) -> None:
        from ..sandboxes.web.miniwob import MiniWoBConfig

        self.miniwob_tasks = (miniwob_tasks,) if isinstance(miniwob_tasks, str) else tuple(miniwob_tasks)
        self.session_config = MiniWoBConfig(episode_seconds=episode_seconds, max_elements=max_elements)
        self._session: Any = None
        super().__init__(max_turns=max_turns, **kwargs)

    @staticmethod
    def unavailable() -> str | None:
        """Why this env cannot run on this machine (no chromium, chromedriver or miniwob), or None."""
        from ..sandboxes.web.miniwob import miniwob_unavailable

        return miniwob_unavailable()

    def load_tasks(self) -> Iterable[Task]:
        return [Task(name, f"MiniWoB++ task {name}", None, {"miniwob_task": name}) for name in self.miniwob_tasks]

    @property
    def session(self) -> Any:
        """The chromium session (started on first reset)."""
        if self._session is None:
            from ..sandboxes.web.miniwob import MiniWoBSession

            self._session = MiniWoBSession(self.session_config)
        return self._session

    def make_tools(self) -> Iterable[Tool]:
        def act(episode: Episode | None, method: str, *args: Any) -> str:
            if episode is None or episode.state.get("done"):
                raise ToolError("the task is over")
            try:
                outcome = getattr(self.session, method)(*args)
            except LookupError as e:
                raise ToolError(str(e)) from None
            except Exception as e:  # a browser hiccup is an observation, not a crash
                raise ToolError(f"{method} failed in the browser: {type(e).__name__}: {str(e)[:200]}") from None
            if outcome.done:
                episode.state.update(done=True, task_reward=outcome.reward, reason=outcome.reason)
            return outcome.view

        def click(element_id: int, episode: Episode | None = None) -> str:
            return act(episode, "click", element_id)

        def type_(element_id: int, text: str, episode: Episode | None = None) -> str:
            return act(episode, "type", element_id, text)

        el = {"type": "integer", "minimum": 0, "description": "the element's number, shown as [n]"}
        return [
            Tool("click", "Click a page element.", {"type": "object", "properties": {"element_id": el},
                                                     "required": ["element_id"], "additionalProperties": False},
                 click, episode_arg="episode", concurrent=False),
            Tool("type", "Click a page element (a text field) and type text into it.",
                 {"type": "object", "properties": {"element_id": el, "text": {"type": "string"}},
                  "required": ["element_id", "text"], "additionalProperties": False},
                 type_, episode_arg="episode", concurrent=False),
        ]

    async def setup_episode(self, episode: Episode) -> None:
        seed = int(episode.rng.integers(1 << 31))
        episode.state["view"] = self.session.reset(episode.task.metadata["miniwob_task"], seed=seed)

    def format_prompt(self, task: Task) -> str:
        return self.episode.state.get("view", task.prompt) if self.episode is not None else task.prompt

    async def _run_calls(self, ep: Episode, calls: list[ToolCall], errors: list[str]) -> tuple[list[ToolResult], bool]:
        results, terminal = await super()._run_calls(ep, calls, errors)
        return results, terminal or bool(ep.state.get("done"))

    def score(self, episode: Episode) -> dict[str, float]:
        return {"task": float(episode.state.get("task_reward", 0.0)) if episode.state.get("done") else 0.0}

    def close(self) -> None:
        """Quit chromium and release the episode."""
        super().close()
        if self._session is not None:
            self._session.close()
            self._session = None
