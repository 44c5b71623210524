"""TextGameEnv: the shared base of the text games (TextWorld, BabyAI as text): a ``command`` tool over a game backend.

A backend plays one game: ``reset``/``step`` return a :class:`GameView`; ``get_state``/``set_state``
snapshot and restore it exactly (Go-Explore's "return"); ``cell`` is its default state abstraction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Protocol, Sequence

import gymnasium as gym

from ...tools import Tool, ToolCall, ToolError, ToolResult
from ..base import Episode, Task, ToolEnv

__all__ = ["GameView", "GameBackend", "GameSnapshot", "TextGameEnv", "clean_command"]

MAX_COMMAND_CHARS = 190  # jericho cuts commands at 198 bytes; cleaned commands are ASCII
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass
class GameView:
    """What the game shows after a reset or a command."""

    feedback: str
    score: float = 0.0
    max_score: float = 1.0
    won: bool = False
    lost: bool = False
    moves: int = 0
    admissible: list[str] | None = None

    @property
    def done(self) -> bool:
        """True when the game is over (won or lost)."""
        return self.won or self.lost


class GameBackend(Protocol):
    """One running game."""

    def reset(self) -> GameView: ...
    def step(self, command: str) -> GameView: ...
    def get_state(self) -> Any: ...
    def set_state(self, state: Any) -> GameView: ...
    def cell(self) -> Hashable: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class GameSnapshot:
    """A game state to start an episode from: ``reset(options={"start_state": snapshot})``.

    ``actions`` are the commands that led there from the task's reset (for replay, and the record).
    """

    task_id: str
    state: Any
    view: GameView
    actions: tuple[str, ...] = ()
    cell: Hashable = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def clean_command(command: Any) -> str:
    """A game command as plain printable ASCII on one line, or a ``ToolError`` saying why not."""
    if not isinstance(command, str):
        raise ToolError("command must be a string")
    text = _PRINTABLE.sub(" ", command).strip()
    text = re.sub(r"\s+", " ", text)
    if not text:
        raise ToolError("empty command; type what you want to do, e.g. 'look' or 'go north'")
    if len(text) > MAX_COMMAND_CHARS:
        raise ToolError(f"the command is {len(text)} characters long; the limit is {MAX_COMMAND_CHARS}")
    return text


class TextGameEnv(ToolEnv):
    """Base of the text-game envs: one ``command`` tool, score gains and the win as reward components.

    Subclasses give the tasks and ``make_backend(task)``. Reset options: ``task_id``/``task_index``
    as in every ToolEnv, ``start_state`` (a :class:`GameSnapshot` from :meth:`get_state`) to start
    from an archived state, ``replay_actions`` (commands played before the episode starts, for
    backends without snapshots), or ``start_sampler`` (a callable ``task_id -> StartState | None``,
    e.g. :class:`forage.explore.ArchiveStartSampler`: a trainer passes it in every reset's options
    and a fraction of its episodes start from archived states; ``info["archive_start"]`` says which).
    """

    supports_snapshots = True  # get_state/set_state work (Go-Explore returns by restoring)
    default_reward_weights = {"format": 0.1, "score": 1.0, "won": 1.0}
    default_system_prompt = ("You play a text game. Call the command tool with what you want to do "
                             "(for example 'look', 'go north', 'take key'); the game answers.")

    def __init__(self, *, admissible_commands: bool = True, show_admissible: bool = False,
                 plain_text: bool = True, max_turns: int = 50, **kwargs: Any) -> None:
        self.admissible_commands = admissible_commands
        self.show_admissible = show_admissible
        self.plain_text = plain_text
        self._backend: Any = None
        self._backend_task: str | None = None
        self._pending_options: dict[str, Any] = {}
        super().__init__(max_turns=max_turns, **kwargs)

    # -- subclass hooks --------------------------------------------------------------------
    def make_backend(self, task: Task) -> GameBackend:
        """Start the game of ``task``."""
        raise NotImplementedError

    def backend_for(self, task: Task) -> GameBackend:
        """The running game of ``task`` (the current one is reused when the task is the same)."""
        if self._backend is None or self._backend_task != task.id:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
            self._backend = self.make_backend(task)
            self._backend_task = task.id
        return self._backend

    # -- tools -------------------------------------------------------------------------------
    def make_tools(self) -> Iterable[Tool]:
        def command(command: str, episode: Episode | None = None) -> str:
            if episode is None or episode.state.get("view") is None:
                raise ToolError("no game is running")
            if episode.state["view"].done:
                raise ToolError("the game is over")
            text = self.check_command(clean_command(command))
            before = episode.state["view"].score
            view = self._backend.step(text)
            episode.state["view"] = view
            episode.state["actions"].append(text)
            max_score = view.max_score or 1.0
            episode.state["score_gain"] = episode.state.get("score_gain", 0.0) + (view.score - before) / max_score
            return self.render_view(view)

        return [Tool("command", "Type a command into the game (e.g. 'look', 'go north', 'open door').",
                     {"type": "object", "properties": {"command": {"type": "string", "description": "the command"}},
                      "required": ["command"], "additionalProperties": False},
                     command, episode_arg="episode", concurrent=False, timeout=None)]

    def check_command(self, command: str) -> str:
        """The command to send, or a ``ToolError`` for one the game must not get (override per game)."""
        return command

    def render_view(self, view: GameView) -> str:
        """The text the agent reads for ``view``."""
        text = view.feedback.strip()
        if self.show_admissible and view.admissible is not None and not view.done:
            text += "\n\nValid commands: " + ", ".join(view.admissible)
        return text

    # -- episodes ------------------------------------------------------------------------------
    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        archive_start = None
        sampler = options.pop("start_sampler", None)
        if sampler is not None and "start_state" not in options and "replay_actions" not in options:
            gym.Env.reset(self, seed=seed)  # seed first, so the task drawn here is the one the seed gives
            seed = None
            options["task_id"] = self._pick_task(options).id
            archive_start = sampler(options["task_id"])
            if archive_start is not None:
                options.update(archive_start.options)
                if archive_start.prefix:
                    options["replay_actions"] = self.turns_to_commands(archive_start.prefix)
        start = options.get("start_state")
        if start is not None:
            if not isinstance(start, GameSnapshot):
                raise TypeError(f"start_state must be a GameSnapshot (from env.get_state()), got {type(start).__name__}")
            if start.view.done:
                raise ValueError("start_state is a finished game; archive only running games as starts")
            options["task_id"] = start.task_id
        self._pending_options = options
        obs, info = await super().areset(seed=seed, options=options)
        info.update(self._view_info(self.episode))
        if sampler is not None:
            info["archive_start"] = None if archive_start is None else {"cell": archive_start.cell_key,
                                                                        "score": archive_start.score}
        return obs, info

    def turns_to_commands(self, turns: Sequence[str]) -> list[str]:
        """The game commands in recorded env turns (``command`` tool calls, or plain text when allowed)."""
        out = []
        for turn in turns:
            parsed = self.tool_format.parse(turn[: self.max_action_chars], self.tools)
            calls = [c for c in parsed.calls if c.name == "command" and isinstance(c.arguments.get("command"), str)]
            if calls:
                out.extend(c.arguments["command"] for c in calls)
            elif self.plain_text and not parsed.calls and parsed.text.strip():
                out.append(parsed.text.strip()[:MAX_COMMAND_CHARS])
        return out

    async def setup_episode(self, episode: Episode) -> None:
        options, self._pending_options = self._pending_options, {}
        backend = self.backend_for(episode.task)
        start: GameSnapshot | None = options.get("start_state")
        if start is not None:
            view = backend.set_state(start.state)
            actions = list(start.actions)
        else:
            view = backend.reset()
            actions = []
            for cmd in options.get("replay_actions") or ():
                view = backend.step(clean_command(cmd))
                actions.append(clean_command(cmd))
                if view.done:
                    raise ValueError("replay_actions end the game before the episode starts")
        episode.state.update(view=view, actions=actions, start_score=view.score, start_actions=len(actions))

    def format_prompt(self, task: Task) -> str:
        ep = self.episode
        if ep is not None and ep.task is task and ep.state.get("view") is not None:
            return f"{task.prompt}\n\n{self.render_view(ep.state['view'])}"
        return task.prompt

    async def astep(self, action: str):
        if self.plain_text and isinstance(action, str) and self.episode is not None and not self.episode.done:
            parsed = self.tool_format.parse(action[: self.max_action_chars], self.tools)
            if not parsed.calls and not parsed.errors and parsed.text.strip():
                # one character over the limit is enough for the command tool to refuse it as too long
                action = self.format_call("command", command=parsed.text.strip()[: MAX_COMMAND_CHARS + 1])
        ep = self.episode
        obs, reward, terminated, truncated, info = await super().astep(action)
        if ep is not None and "score_gain" in ep.state:
            gain = float(ep.state.pop("score_gain"))
            info["rewards"]["score"] = gain
            ep.reward_totals["score"] = ep.reward_totals.get("score", 0.0) + gain
            reward += self.reward_weights.get("score", 1.0) * gain
        if ep is not None and ep.state.get("view") is not None:
            info.update(self._view_info(ep))
        return obs, float(reward), terminated, truncated, info

    async def _run_calls(self, ep: Episode, calls: list[ToolCall], errors: list[str]) -> tuple[list[ToolResult], bool]:
        results, terminal = await super()._run_calls(ep, calls, errors)
        view = ep.state.get("view")
        return results, terminal or (view is not None and view.done)

    def score(self, episode: Episode) -> dict[str, float]:
        view = episode.state.get("view")
        return {"won": float(view is not None and view.won)}

    def _view_info(self, ep: Episode | None) -> dict[str, Any]:
        if ep is None or ep.state.get("view") is None:
            return {}
        view: GameView = ep.state["view"]
        out: dict[str, Any] = {"game_score": view.score, "max_score": view.max_score, "won": view.won,
                               "lost": view.lost, "moves": view.moves}
        if self.admissible_commands and view.admissible is not None:
            out["admissible_commands"] = list(view.admissible)
        return out

    # -- snapshots (Go-Explore's return) -------------------------------------------------------
    def get_state(self) -> GameSnapshot:
        """A snapshot of the running game, to pass back as ``reset(options={"start_state": ...})``."""
        ep = self.episode
        if ep is None or ep.state.get("view") is None or self._backend is None:
            raise RuntimeError("no game is running; call reset() first")
        return GameSnapshot(ep.task.id, self._backend.get_state(), ep.state["view"], tuple(ep.state["actions"]),
                            self._backend.cell())

    def set_state(self, snapshot: GameSnapshot) -> str:
        """Start a new episode at ``snapshot``; returns its first observation."""
        obs, _ = self.reset(options={"start_state": snapshot})
        return obs

    def cell(self) -> Hashable:
        """The default Go-Explore cell of the running game (the backend's state abstraction)."""
        if self._backend is None:
            raise RuntimeError("no game is running; call reset() first")
        return self._backend.cell()

    def close(self) -> None:
        """End the episode and stop the game."""
        super().close()
        if self._backend is not None:
            self._backend.close()
            self._backend = None
