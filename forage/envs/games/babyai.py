"""BabyAI levels from ``minigrid`` as text games: what the agent sees described in words, the level's bot as oracle."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
from typing import Any, Hashable, Sequence

from ...tools import ToolError
from ..base import Task
from .textgame import GameBackend, GameView, TextGameEnv

__all__ = ["BabyAIEnv", "BabyAIBackend", "describe_view", "babyai_unavailable", "COMMANDS", "DEFAULT_LEVELS"]

# The six BabyAI-Text actions (minigrid's "done" is left out, as BabyAI-Text does).
COMMANDS = {"turn left": 0, "turn right": 1, "go forward": 2, "pick up": 3, "drop": 4, "toggle": 5}
_ALIASES = {"left": "turn left", "right": "turn right", "forward": "go forward", "move forward": "go forward",
            "pickup": "pick up", "pick": "pick up", "take": "pick up", "open": "toggle"}
# Single-room levels that BabyAI-Text's "MixedTrainLocal" mixes (go to, pick up, put next to, open).
DEFAULT_LEVELS = ("GoToLocal", "PickupLoc", "PutNextLocal", "OpenDoor")
EVAL_SEED_OFFSET = 1_000_000


def babyai_unavailable() -> str | None:
    """Why BabyAI levels cannot run here (``minigrid`` missing), or None."""
    try:
        import minigrid  # noqa: F401
        from minigrid.utils.baby_ai_bot import BabyAIBot  # noqa: F401
    except Exception as e:
        return f"the minigrid package is not importable ({type(e).__name__}: {e}); pip install 'forage-gym[games]'"
    return None


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def _where(lateral: int, forward: int) -> str:
    parts = []
    if lateral:
        parts.append(_steps(abs(lateral), "right" if lateral > 0 else "left"))
    if forward:
        parts.append(_steps(forward, "forward"))
    return " and ".join(parts) if parts else "right here"


def describe_view(image: Any, carrying: Any = None) -> list[str]:
    """Sentences for the agent's egocentric view (minigrid's ``image``, agent at the bottom centre facing up).

    Objects are listed with their colour and offset ("a red ball 2 steps left and 1 step forward");
    for walls only the nearest one straight ahead, to the left and to the right, as BabyAI-Text does.
    """
    from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

    width, height = image.shape[0], image.shape[1]
    ax, ay = width // 2, height - 1
    out: list[str] = []
    walls = {}
    for j in range(height - 1, -1, -1):
        for i in range(width):
            kind = IDX_TO_OBJECT.get(int(image[i, j, 0]), "unseen")
            lateral, forward = i - ax, ay - j
            if kind == "wall":
                if lateral == 0 and forward > 0:
                    walls.setdefault("forward", forward)
                if forward == 0 and lateral < 0:
                    walls["left"] = min(walls.get("left", 99), -lateral)
                if forward == 0 and lateral > 0:
                    walls["right"] = min(walls.get("right", 99), lateral)
                continue
            if kind in ("unseen", "empty", "floor", "agent") or (lateral == 0 and forward == 0):
                continue
            color = IDX_TO_COLOR.get(int(image[i, j, 1]), "")
            name = f"{color} {kind}".strip()
            if kind == "door":
                state = {0: "open", 1: "closed", 2: "locked"}.get(int(image[i, j, 2]), "")
                name = f"{state} {name}".strip()
            out.append(f"You see a {name} {_where(lateral, forward)}")
    for side in ("forward", "left", "right"):
        if side in walls:
            out.append(f"You see a wall {_steps(walls[side], side)}")
    if carrying is not None:
        out.append(f"You carry a {carrying.color} {carrying.type}")
    return out or ["You see nothing special"]


def parse_command(command: str) -> int:
    """The minigrid action of a BabyAI-Text command, or a ``ToolError`` listing the valid ones."""
    text = " ".join(command.lower().replace("_", " ").split()).rstrip(".!")
    text = _ALIASES.get(text, text)
    if text not in COMMANDS:
        raise ToolError(f"unknown command {command[:60]!r}; the commands are: {', '.join(COMMANDS)}")
    return COMMANDS[text]


class BabyAIBackend:
    """One BabyAI level instance (level id and seed); snapshots are copies of the minigrid env."""

    def __init__(self, level: str, seed: int) -> None:
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the BabyAI ids)

        self.level, self.seed = level, int(seed)
        self.env = gym.make(f"BabyAI-{level}-v0").unwrapped
        self._view: GameView | None = None

    def _make_view(self, obs: dict, reward: float = 0.0, terminated: bool = False, truncated: bool = False,
                   feedback_prefix: str = "") -> GameView:
        lines = describe_view(obs["image"], self.env.carrying)
        text = (feedback_prefix + "\n" if feedback_prefix else "") + "\n".join(lines)
        won = bool(terminated and reward > 0)
        lost = bool(truncated or (terminated and reward <= 0))
        if won:
            text += "\nYou completed the mission."
        elif lost:
            text += "\nThe mission is over: you ran out of steps." if truncated else "\nThe mission failed."
        self._view = GameView(feedback=text, score=float(reward), max_score=1.0, won=won, lost=lost,
                              moves=int(self.env.step_count), admissible=list(COMMANDS))
        return self._view

    def reset(self) -> GameView:
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints its rejected samples
            obs, _ = self.env.reset(seed=self.seed)
        return self._make_view(obs)

    def step(self, command: str) -> GameView:
        action = parse_command(command)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return self._make_view(obs, float(reward), bool(terminated), bool(truncated))

    @property
    def mission(self) -> str:
        """The level's instruction, e.g. "go to the red ball"."""
        return str(self.env.mission)

    def get_state(self) -> Any:
        return {"env": copy.deepcopy(self.env), "view": self._view}

    def set_state(self, state: Any) -> GameView:
        self.env = copy.deepcopy(state["env"])
        self._view = state["view"]
        return self._view

    def cell(self) -> Hashable:
        """Where the agent is, what it carries and the grid's objects and door states (direction ignored)."""
        e = self.env
        carried = (e.carrying.type, e.carrying.color) if e.carrying is not None else None
        grid = hashlib.blake2b(e.grid.encode().tobytes(), digest_size=8).hexdigest()
        return (tuple(int(v) for v in e.agent_pos), carried, grid)

    def bot_commands(self, limit: int = 500) -> list[str]:
        """The commands BabyAI's bot plays to solve this instance from its reset (on a copy)."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        names = {v: k for k, v in COMMANDS.items()}
        sim = copy.deepcopy(self.env)
        with contextlib.redirect_stdout(io.StringIO()):
            sim.reset(seed=self.seed)
        bot = BabyAIBot(sim)
        out = []
        for _ in range(limit):
            action = int(bot.replan())
            if action not in names:  # "done": the bot thinks the mission is complete
                break
            out.append(names[action])
            _, reward, terminated, truncated, _ = sim.step(action)
            if terminated or truncated:
                break
        return out

    def close(self) -> None:
        self.env.close()


class BabyAIEnv(TextGameEnv):
    """BabyAI levels as text, as in BabyAI-Text: the mission, then sentences about what the agent sees.

    ## Description
    Each task is a BabyAI level from ``minigrid`` at a fixed seed. The agent sees a 7x7 patch in
    front of it; the env describes it in words ("You see a red ball 2 steps left and 1 step
    forward", the nearest wall ahead, left and right, what it carries). Train tasks use seeds
    0.., eval tasks seeds 1,000,000.. . BabyAI's bot (``minigrid.utils.baby_ai_bot``) is the
    oracle.

    ## Action Space
    Text with a ``command(command)`` tool call (or, with ``plain_text``, the command alone); the
    commands are ``turn left``, ``turn right``, ``go forward``, ``pick up``, ``drop``, ``toggle``.
    Anything else is an error observation.

    ## Observation Space
    Text: the mission and the first view on reset, then the new view after each command.
    ``info`` has ``admissible_commands`` (the six commands), ``game_score``, ``won``, ``moves``.

    ## Rewards
    ``score``: the level's own reward on success, 1 - 0.9 x steps / max steps (0 otherwise);
    ``won``: 1 when the mission is completed; ``format``: -1 on a malformed turn. Weights:
    score 1, won 1, format 0.1.

    ## Starting State
    A level instance drawn with the reset seed, ``options["task_id"]``, or an archived state
    (``options["start_state"]``, a snapshot from ``get_state()``).

    ## Episode End
    Terminated when the mission succeeds or fails; truncated at the level's step limit or after
    ``max_turns`` turns (default 128).

    ## Arguments
    ``levels`` (BabyAI level names without ``BabyAI-``/``-v0``, default GoToLocal, PickupLoc,
    PutNextLocal, OpenDoor), ``split`` (``train`` or ``eval``), ``num_tasks`` per level (default 200),
    ``show_admissible``, ``plain_text``, plus the ToolEnv options.
    """

    default_system_prompt = ("You are an agent in a grid world with a mission. Each turn, call the command tool "
                             "with one of: turn left, turn right, go forward, pick up, drop, toggle.")

    def __init__(self, levels: str | Sequence[str] = DEFAULT_LEVELS, split: str = "train", num_tasks: int = 200,
                 max_turns: int = 128, **kwargs: Any) -> None:
        self.levels = (levels,) if isinstance(levels, str) else tuple(levels)
        if not self.levels:
            raise ValueError("give at least one BabyAI level")
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if num_tasks < 1:
            raise ValueError("num_tasks must be at least 1")
        self.split, self.num_tasks = split, num_tasks
        self._missions: dict[str, str] = {}
        super().__init__(max_turns=max_turns, **kwargs)

    @staticmethod
    def unavailable() -> str | None:
        """Why this env cannot run here, or None."""
        return babyai_unavailable()

    def load_tasks(self) -> list[Task]:
        import gymnasium as gym
        import minigrid  # noqa: F401

        for level in self.levels:
            if f"BabyAI-{level}-v0" not in gym.registry:
                raise ValueError(f"unknown BabyAI level {level!r} (no BabyAI-{level}-v0 in minigrid)")
        offset = EVAL_SEED_OFFSET if self.split == "eval" else 0
        return [Task(f"babyai-{level}-{self.split}-{i:05d}", f"BabyAI level {level}, instance {self.split}-{i:05d}.",
                     None, {"level": level, "seed": offset + i, "split": self.split})
                for level in self.levels for i in range(self.num_tasks)]

    def make_backend(self, task: Task) -> GameBackend:
        return BabyAIBackend(task.metadata["level"], task.metadata["seed"])

    async def setup_episode(self, episode) -> None:
        await super().setup_episode(episode)
        self._missions[episode.task.id] = self._backend.mission

    def format_prompt(self, task: Task) -> str:
        ep = self.episode
        if ep is not None and ep.task is task and ep.state.get("view") is not None:
            return f"{task.prompt}\nMission: {self._missions[task.id]}\n\n{self.render_view(ep.state['view'])}"
        return task.prompt

    def oracle_actions(self, task: Task) -> list[str]:
        """BabyAI's bot's commands for the task, as ``command`` tool calls."""
        backend = BabyAIBackend(task.metadata["level"], task.metadata["seed"])
        try:
            return [self.format_call("command", command=c) for c in backend.bot_commands()]
        finally:
            backend.close()
