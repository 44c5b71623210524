"""The Go-Explore archive: one entry per cell with the best way found to reach it, and count-based selection."""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable

import numpy as np

__all__ = ["Cell", "SelectionWeights", "Archive", "StartState", "ArchiveStartSampler"]


@dataclass
class SelectionWeights:
    """Cell selection as in Go-Explore: weight = sum of w / (count + 1) ** p over three counts, plus ``eps``.

    The default (seen 1, power 0.5, the others 0) is "First return, then explore"'s
    1 / sqrt(1 + times seen); the other two counts are the Go-Explore code's ``chosen`` and
    ``chosen_since_new`` attributes.
    """

    seen: float = 1.0
    seen_power: float = 0.5
    chosen: float = 0.0
    chosen_power: float = 0.5
    chosen_since_new: float = 0.0
    chosen_since_new_power: float = 0.5
    eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("seen", "chosen", "chosen_since_new", "seen_power", "chosen_power", "chosen_since_new_power"):
            if getattr(self, name) < 0:
                raise ValueError(f"SelectionWeights.{name} must be >= 0")
        if self.seen + self.chosen + self.chosen_since_new <= 0:
            raise ValueError("at least one of the selection weights must be positive")
        if self.eps < 0:
            raise ValueError("SelectionWeights.eps must be >= 0")

    def weight(self, cell: "Cell") -> float:
        """The unnormalised selection weight of ``cell`` (0 for a terminal cell)."""
        if cell.terminal:
            return 0.0
        return (self.seen / (cell.times_seen + 1) ** self.seen_power
                + self.chosen / (cell.times_chosen + 1) ** self.chosen_power
                + self.chosen_since_new / (cell.times_chosen_since_new + 1) ** self.chosen_since_new_power
                + self.eps)


@dataclass
class Cell:
    """An archived cell: how to get back to it (a snapshot, or the actions from the task's reset) and its counts."""

    key: Hashable
    task_id: str
    actions: tuple[str, ...]
    score: float
    snapshot: Any = None
    observation: str = ""
    terminal: bool = False
    found_at_step: int = 0
    times_seen: int = 0
    times_chosen: int = 0
    times_chosen_since_new: int = 0


@dataclass(frozen=True)
class StartState:
    """Where a rollout starts: the ``reset`` options, then ``prefix`` turns to step before the agent acts.

    With a snapshot the prefix is empty (``options["start_state"]`` restores the game); otherwise
    the options name the task and the prefix replays the archived actions (deterministic envs).
    """

    options: dict[str, Any]
    prefix: tuple[str, ...] = ()
    cell_key: Hashable = None
    score: float = 0.0


@dataclass
class Archive:
    """Cells by ``(task_id, key)``; a cell keeps its best trajectory (higher score, then fewer actions)."""

    weights: SelectionWeights = field(default_factory=SelectionWeights)
    reset_counts_on_update: bool = False
    cells: dict[tuple[str, Hashable], Cell] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cells)

    def __contains__(self, item: tuple[str, Hashable]) -> bool:
        return item in self.cells

    def get(self, task_id: str, key: Hashable) -> Cell | None:
        """The archived cell, or None."""
        return self.cells.get((task_id, key))

    def visit(self, cell: Cell) -> tuple[bool, bool]:
        """Record that ``cell`` was reached: add it, or replace its trajectory if this one is better.

        Returns ``(new, improved)``. Every visit counts as one "seen".
        """
        k = (cell.task_id, cell.key)
        old = self.cells.get(k)
        if old is None:
            cell.times_seen = 1
            self.cells[k] = cell
            return True, False
        old.times_seen += 1
        better = cell.score > old.score or (cell.score == old.score and len(cell.actions) < len(old.actions))
        if better:
            old.actions, old.score, old.snapshot, old.observation = cell.actions, cell.score, cell.snapshot, \
                cell.observation
            old.terminal = cell.terminal
            if self.reset_counts_on_update:
                old.times_seen = old.times_chosen = old.times_chosen_since_new = 0
        return False, better

    def candidates(self, task_id: str | None = None) -> list[Cell]:
        """The cells one can return to (not terminal), optionally of one task."""
        return [c for c in self.cells.values() if not c.terminal and (task_id is None or c.task_id == task_id)]

    def select(self, rng: np.random.Generator, task_id: str | None = None) -> Cell:
        """Draw a cell with probability proportional to its weight, and count the choice."""
        cands = self.candidates(task_id)
        if not cands:
            raise LookupError("the archive has no cell to return to")
        w = np.array([self.weights.weight(c) for c in cands], dtype=float)
        cell = cands[int(rng.choice(len(cands), p=w / w.sum()))]
        cell.times_chosen += 1
        cell.times_chosen_since_new += 1
        return cell

    def best(self) -> Cell | None:
        """The highest-scoring cell (terminal ones included), fewest actions first on ties."""
        if not self.cells:
            return None
        return max(self.cells.values(), key=lambda c: (c.score, -len(c.actions)))

    def sample_starts(self, n: int, rng: np.random.Generator | None = None,
                      task_ids: Iterable[str] | None = None) -> list[StartState]:
        """``n`` start states for a trainer's rollouts (return-then-explore), drawn by the selection weights.

        Drawing counts as choosing, so later draws favour other cells, as in Go-Explore.
        """
        rng = rng if rng is not None else np.random.default_rng()
        allowed = set(task_ids) if task_ids is not None else None
        out = []
        for _ in range(n):
            cands = [c for c in self.candidates() if allowed is None or c.task_id in allowed]
            if not cands:
                break
            w = np.array([self.weights.weight(c) for c in cands], dtype=float)
            cell = cands[int(rng.choice(len(cands), p=w / w.sum()))]
            cell.times_chosen += 1
            cell.times_chosen_since_new += 1
            out.append(self.start_state(cell))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the archive (cells, counts, snapshots) with pickle, atomically. Load only archives you wrote."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"format": "forage-archive-1", "archive": self}, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Archive":
        """An archive written by :meth:`save` (pickle: never load a file from someone you do not trust)."""
        with open(path, "rb") as f:
            data = pickle.load(f)
        if not isinstance(data, dict) or data.get("format") != "forage-archive-1" or not isinstance(
                data.get("archive"), cls):
            raise ValueError(f"{path} is not a Forage archive")
        return data["archive"]

    @staticmethod
    def start_state(cell: Cell) -> StartState:
        """How to start a rollout at ``cell``."""
        if cell.snapshot is not None:
            return StartState({"task_id": cell.task_id, "start_state": cell.snapshot}, (), cell.key, cell.score)
        return StartState({"task_id": cell.task_id}, tuple(cell.actions), cell.key, cell.score)


class ArchiveStartSampler:
    """For a trainer: ``sampler(task_id)`` is an archived start of that task with probability ``fraction``, else None.

    Pass it in the reset options (``{"start_sampler": sampler}``, e.g. through
    ``RolloutConfig.reset_options``); the text games then start that fraction of their episodes
    from archived states (return-then-explore). ``calls``, ``starts`` and ``fraction_started``
    are for the trainer's log.
    """

    def __init__(self, archive: Archive, fraction: float, seed: int | None = None) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.archive, self.fraction = archive, fraction
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.calls = 0
        self.starts = 0

    def __call__(self, task_id: str) -> StartState | None:
        with self._lock:
            self.calls += 1
            if self.fraction <= 0 or self.rng.random() >= self.fraction:
                return None
            found = self.archive.sample_starts(1, self.rng, task_ids=[task_id])
            if not found:
                return None
            self.starts += 1
            return found[0]

    @property
    def fraction_started(self) -> float:
        """The fraction of resets so far that started from the archive."""
        return self.starts / self.calls if self.calls else 0.0
