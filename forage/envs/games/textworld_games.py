"""TextWorld games: generated with ``tw-make`` on first use, cached under FORAGE_CACHE, played as text."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

from ...assets import cache_dir
from ...tools import ToolError
from ..base import Task
from .textgame import GameBackend, GameView, TextGameEnv

__all__ = ["TextWorldEnv", "TextWorldBackend", "GameSpec", "game_spec", "generate_game", "textworld_unavailable",
           "CHALLENGES"]

CHALLENGES = ("simple", "coin", "treasure", "cooking")
EVAL_SEED_OFFSET = 1_000_000
META_COMMANDS = frozenset({"restart", "quit", "q", "save", "restore", "undo", "script", "unscript", "noscript",
                           "transcript", "notify", "version"})
_BANNER = re.compile(r"[\s$|\\/_<>]*")
_STATUS = re.compile(r"^>\s{8,}\S")  # the interpreter's prompt followed by its status line


def textworld_unavailable() -> str | None:
    """Why TextWorld games cannot be made or played here (the ``textworld`` package is missing), or None."""
    try:
        import textworld  # noqa: F401
    except Exception as e:
        return f"the textworld package is not importable ({type(e).__name__}: {e}); pip install 'forage-gym[games]'"
    return None


def _tw_make_args(challenge: str, level: int, split: str) -> list[str]:
    """The ``tw-make`` arguments of a challenge at a difficulty level, for the train or eval distribution."""
    if challenge == "simple":
        rewards, goal = {1: ("dense", "detailed"), 2: ("balanced", "brief"), 3: ("sparse", "none")}[level]
        return ["tw-simple", "--rewards", rewards, "--goal", goal] + (["--test"] if split == "eval" else [])
    if challenge == "coin":
        return ["tw-coin_collector", "--level", str(level)]
    if challenge == "treasure":
        return ["tw-treasure_hunter", "--level", str(level)]
    if challenge == "cooking":
        extra = {1: ["--recipe", "1", "--take", "1", "--go", "1"],
                 2: ["--recipe", "2", "--take", "1", "--go", "6", "--open", "--cut"],
                 3: ["--recipe", "3", "--take", "2", "--go", "9", "--open", "--cook", "--cut"]}[level]
        return ["tw-cooking", *extra, "--split", "test" if split == "eval" else "train"]
    raise ValueError(f"unknown challenge {challenge!r}; one of {CHALLENGES}")


_LEVELS = {"simple": range(1, 4), "coin": range(1, 301), "treasure": range(1, 31), "cooking": range(1, 4)}


@dataclass(frozen=True)
class GameSpec:
    """One game to generate: challenge, level, split and seed, and the ``tw-make`` arguments they give."""

    challenge: str
    level: int
    split: str
    seed: int

    def __post_init__(self) -> None:
        if self.challenge not in CHALLENGES:
            raise ValueError(f"challenge must be one of {CHALLENGES}, got {self.challenge!r}")
        if self.level not in _LEVELS[self.challenge]:
            r = _LEVELS[self.challenge]
            raise ValueError(f"{self.challenge} levels are {r.start}..{r.stop - 1}, got {self.level}")
        if self.split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {self.split!r}")

    @property
    def args(self) -> list[str]:
        """The full ``tw-make`` command line after ``tw-make``."""
        return _tw_make_args(self.challenge, self.level, self.split) + ["--seed", str(self.seed)]

    @property
    def key(self) -> str:
        """The cache key: a hash of the arguments and the TextWorld version."""
        from importlib.metadata import version

        text = json.dumps({"args": self.args, "textworld": version("textworld")})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def game_spec(challenge: str, level: int, split: str, index: int) -> GameSpec:
    """The ``index``-th game of a set: train seeds count from 0, eval seeds from 1,000,000."""
    return GameSpec(challenge, level, split, index + (EVAL_SEED_OFFSET if split == "eval" else 0))


_GENERATE_LOCK = threading.Lock()


def _make_in_process(spec: GameSpec, output: Path) -> None:
    """Make and compile one game as ``tw-make`` does (same challenge ``make``, options and compiler)."""
    import argparse

    import textworld
    import textworld.challenges
    from textworld.generator import compile_game

    name, *challenge_args = _tw_make_args(spec.challenge, spec.level, spec.split)
    _, make, add_arguments = textworld.challenges.CHALLENGES[name]
    parser = argparse.ArgumentParser(prog=f"tw-make {name}")
    add_arguments(parser)
    settings = vars(parser.parse_args(challenge_args))
    options = textworld.GameOptions()
    options.seeds = spec.seed
    options.path = str(output)
    options.file_ext = ".z8"
    options.force_recompile = True
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jericho's "not fully supported" while the maker checks the walkthrough
        compile_game(make(settings=settings, options=options), options)


def generate_game(spec: GameSpec) -> Path:
    """The ``.z8`` file of ``spec``, made the first time and cached (written aside, then renamed into place).

    The game is made in this process by the code ``tw-make`` runs (the challenge's ``make`` and
    ``compile_game`` with the same options), so TextWorld's import and knowledge base load once per
    process instead of once per game.
    """
    root = cache_dir("textworld", f"{spec.challenge}-L{spec.level}-{spec.split}")
    final = root / f"seed{spec.seed}-{spec.key}"
    game = final / "game.z8"
    if game.exists() and (final / "game.json").exists():
        return game
    reason = textworld_unavailable()
    if reason:
        raise RuntimeError(f"cannot make TextWorld games: {reason}")
    with _GENERATE_LOCK:
        if game.exists() and (final / "game.json").exists():
            return game
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=root))
        try:
            try:
                _make_in_process(spec, tmp / "game.z8")
            except Exception as e:
                raise RuntimeError(f"tw-make {' '.join(spec.args)} failed: {type(e).__name__}: {e}") from e
            if not (tmp / "game.z8").exists() or not (tmp / "game.json").exists():
                raise RuntimeError(f"tw-make {' '.join(spec.args)} wrote no game")
            try:
                os.replace(tmp, final)
            except OSError:  # another process made it first
                if not game.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return game


def game_metadata(game_file: Path) -> dict[str, Any]:
    """The walkthrough, objective and a content hash of a generated game (from its ``.json``)."""
    data = json.loads(Path(game_file).with_suffix(".json").read_text())
    content = json.dumps({"world": data.get("world"), "quests": data.get("quests"), "infos": data.get("infos")},
                         sort_keys=True)
    return {"walkthrough": list(data.get("metadata", {}).get("walkthrough") or []),
            "objective": data.get("objective", ""),
            "content_hash": hashlib.sha256(content.encode()).hexdigest()[:16]}


def clean_feedback(text: str) -> str:
    """The game's text without TextWorld's ASCII-art banner and runs of blank lines."""
    lines = [ln.rstrip() for ln in (text or "").splitlines()]
    lines = [ln for ln in lines if not (_BANNER.fullmatch(ln) and len(ln.strip()) >= 3) and not _STATUS.match(ln)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class TextWorldBackend:
    """One TextWorld game in jericho, with light exact snapshots (interpreter RAM + quest progression)."""

    def __init__(self, game_file: str | Path) -> None:
        import textworld

        infos = textworld.EnvInfos(admissible_commands=True, max_score=True, won=True, lost=True, score=True,
                                   moves=True, feedback=True)
        self.game_file = str(game_file)
        with warnings.catch_warnings():
            # jericho cannot read TextWorld's score from RAM ("not fully supported"); TextWorld reports it itself.
            warnings.simplefilter("ignore")
            self._env = textworld.start(self.game_file, request_infos=infos)
        self._layers = self._unwrap()
        self._state: Any = None

    def _unwrap(self) -> dict[str, Any]:
        layers, e = {}, self._env
        while e is not None:
            layers[type(e).__name__] = e
            e = getattr(e, "_wrapped_env", None)
        missing = {"StateTracking", "Inform7Data", "JerichoEnv"} - set(layers)
        if missing:
            raise RuntimeError(f"unexpected TextWorld wrapper stack (missing {sorted(missing)})")
        return layers

    def _view(self, gs: Any) -> GameView:
        self._state = gs
        return GameView(feedback=clean_feedback(gs.feedback), score=float(gs.score or 0),
                        max_score=float(gs.max_score or 1), won=bool(gs.won), lost=bool(gs.lost),
                        moves=int(gs.moves or 0), admissible=list(gs.admissible_commands or []))

    def reset(self) -> GameView:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jericho's "not fully supported" again, when it reloads the story
            return self._view(self._env.reset())

    def step(self, command: str) -> GameView:
        gs, _, _ = self._env.step(command)
        return self._view(gs)

    def get_state(self) -> Any:
        """Everything the next steps depend on; the Game object and the compiled story are shared."""
        tracker, i7data = self._layers["StateTracking"], self._layers["Inform7Data"]
        frotz = self._layers["JerichoEnv"]._jericho
        return {
            "jericho": frotz.get_state(),
            "progression": tracker._game_progression.copy(),
            "last_action": tracker._last_action,
            "moves": tracker._moves,
            "previous_policy": list(tracker._previous_winning_policy or []) or None,
            "current_policy": list(tracker._current_winning_policy or []) or None,
            "tracked": {k: i7data.state.get(k) for k in ("inventory", "description", "moves", "score")},
            "gamestate": {k: v for k, v in self._state.items() if k not in ("game", "_game_progression")},
        }

    def set_state(self, state: Any) -> GameView:
        import textworld

        tracker, i7data = self._layers["StateTracking"], self._layers["Inform7Data"]
        frotz = self._layers["JerichoEnv"]._jericho
        if tracker._game_progression is None:  # never reset: start the interpreter and tracking first
            self.reset()
        frotz.set_state(state["jericho"])
        tracker._game_progression = state["progression"].copy()
        tracker._last_action = state["last_action"]
        tracker._moves = state["moves"]
        tracker._previous_winning_policy = list(state["previous_policy"]) if state["previous_policy"] else None
        tracker._current_winning_policy = list(state["current_policy"]) if state["current_policy"] else None
        restored = textworld.core.GameState(state["gamestate"])
        i7data.state = textworld.core.GameState({**restored, **state["tracked"]})
        i7data._prev_state = None
        restored["_game_progression"] = tracker._game_progression
        tracker.state = restored
        return self._view(restored)

    def cell(self) -> Hashable:
        """The world's facts (where everything and the player are, what is open): TextWorld's exact state."""
        facts = sorted(str(f) for f in self._layers["StateTracking"]._game_progression.state.facts)
        return hashlib.blake2b("\n".join(facts).encode(), digest_size=8).hexdigest()

    def close(self) -> None:
        self._env.close()


class TextWorldEnv(TextGameEnv):
    """TextWorld text adventures made by ``tw-make`` (simple, coin collector, treasure hunter, cooking).

    ## Description
    Games are generated on first use with the challenge types TextWorld ships, at a difficulty
    ``level``, and cached under ``$FORAGE_CACHE/textworld`` keyed by the ``tw-make`` arguments,
    the seed and the TextWorld version. Train games use seeds 0.. and eval games seeds
    1,000,000..; the simple and cooking challenges also draw eval games from their own test
    distributions (``tw-simple --test``, ``tw-cooking --split test``), so the sets share no
    game. The walkthrough ``tw-make`` records is the oracle.

    ## Action Space
    Text with a ``command(command)`` tool call; with ``plain_text`` (default) a turn without a
    tool call is taken as the command itself.

    ## Observation Space
    Text: the game's id and its opening text on reset, then the game's reply to each command
    (``show_admissible`` appends the admissible commands). ``info`` carries
    ``admissible_commands``, ``game_score``, ``max_score``, ``won``, ``lost`` and ``moves``.

    ## Rewards
    ``score``: the game's score gain of the step divided by its maximum score (dense in
    ``simple`` level 1, sparse at level 3); ``won``: 1 when the game is won (at the end);
    ``format``: -1 on a malformed turn. Weights: score 1, won 1, format 0.1.

    ## Starting State
    A game drawn with the reset seed (``options["task_id"]`` picks one); ``options["start_state"]``
    (a snapshot from ``get_state()``) starts from an archived state, ``options["replay_actions"]``
    after replaying commands.

    ## Episode End
    Terminated when the game is won or lost; truncated after ``max_turns`` (default 50).

    ## Arguments
    ``challenge`` (``simple``, ``coin``, ``treasure``, ``cooking``), ``level`` (simple/cooking
    1-3, coin 1-300, treasure 1-30), ``split`` (``train`` or ``eval``), ``num_games`` (default
    20), ``admissible_commands``, ``show_admissible``, ``plain_text``, plus the ToolEnv options.
    """

    def __init__(self, challenge: str = "simple", level: int = 1, split: str = "train", num_games: int = 20,
                 **kwargs: Any) -> None:
        if num_games < 1:
            raise ValueError("num_games must be at least 1")
        self.specs = [game_spec(challenge, level, split, i) for i in range(num_games)]
        self.challenge, self.level, self.split = challenge, level, split
        super().__init__(**kwargs)

    @staticmethod
    def unavailable() -> str | None:
        """Why this env cannot run here, or None."""
        return textworld_unavailable()

    def load_tasks(self) -> list[Task]:
        tasks = []
        for i, spec in enumerate(self.specs):
            tid = f"tw-{spec.challenge}-L{spec.level}-{spec.split}-{i:04d}"
            tasks.append(Task(tid, f"TextWorld game {tid}.", None,
                              {"spec": spec, "challenge": spec.challenge, "level": spec.level, "split": spec.split}))
        return tasks

    def check_command(self, command: str) -> str:
        """Refuse the interpreter's meta-commands: ``restart`` or ``restore`` would put the game out of step
        with TextWorld's state tracking (score, admissible commands, cells)."""
        if command.lower().split()[0] in META_COMMANDS:
            raise ToolError(f"{command.split()[0]!r} is a meta-command of the interpreter and is not allowed here")
        return command

    def game_file(self, task: Task) -> Path:
        """The task's game file (generated on first use)."""
        return generate_game(task.metadata["spec"])

    def make_backend(self, task: Task) -> GameBackend:
        return TextWorldBackend(self.game_file(task))

    def walkthrough(self, task: Task) -> list[str]:
        """The winning commands ``tw-make`` recorded for the task's game."""
        if "walkthrough" not in task.metadata:
            task.metadata.update(game_metadata(self.game_file(task)))
        return list(task.metadata["walkthrough"])

    def oracle_actions(self, task: Task) -> list[str]:
        """The walkthrough as ``command`` tool calls."""
        return [self.format_call("command", command=c) for c in self.walkthrough(task)]
