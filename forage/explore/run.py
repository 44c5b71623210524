"""Go-Explore's loop (select a cell, return to it, explore from it) and the plain-exploration baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

from .archive import Archive, Cell, SelectionWeights
from .cells import cell_of
from .judge import InterestJudge
from .policies import ExplorePolicy

__all__ = ["GoExploreConfig", "ExploreResult", "go_explore", "plain_explore"]


@dataclass
class GoExploreConfig:
    """Knobs of one Go-Explore run. ``budget`` counts env steps, replayed return steps included."""

    budget: int = 1000
    explore_steps: int = 20
    seed: int = 0
    weights: SelectionWeights = field(default_factory=SelectionWeights)
    reset_counts_on_update: bool = False
    return_by: str = "auto"   # "auto": snapshot when the env has get_state, else replay; or "snapshot"/"replay"
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.budget < 1 or self.explore_steps < 1 or self.log_every < 1:
            raise ValueError("budget, explore_steps and log_every must be >= 1")
        if self.return_by not in ("auto", "snapshot", "replay"):
            raise ValueError("return_by must be 'auto', 'snapshot' or 'replay'")


@dataclass
class ExploreResult:
    """What a run found: the archive (Go-Explore) or the set of cells seen, and curves over env steps."""

    method: str
    task_id: str
    steps: int
    cells: int
    best_score: float
    won: bool
    curve: list[tuple[int, int, float]]       # (env steps, cells discovered, best score)
    archive: Archive | None = None
    best_actions: tuple[str, ...] = ()
    return_steps: int = 0
    judge_rejected: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The scalar results as a dict."""
        return {"method": self.method, "task_id": self.task_id, "steps": self.steps, "cells": self.cells,
                "best_score": round(self.best_score, 4), "won": self.won, "return_steps": self.return_steps,
                "judge_rejected": self.judge_rejected, "seconds": round(self.seconds, 2)}


def _snapshot(env: Any) -> Any:
    return env.get_state()


def go_explore(env: Any, policy: ExplorePolicy, config: GoExploreConfig | None = None, task_id: str | None = None,
               judge: InterestJudge | None = None) -> ExploreResult:
    """Go-Explore's exploration phase on one task of ``env`` (a Gymnasium env, usually a Forage ToolEnv).

    Each iteration draws a cell by its selection weight, returns to it (restoring its snapshot, or
    replaying its actions from the task's reset), then lets ``policy`` act for ``explore_steps``
    steps; every state reached is offered to the archive, which keeps the best trajectory per cell.
    With a ``judge`` (Intelligent Go-Explore), a new cell is archived only if the judge finds it
    interesting.
    """
    c = config or GoExploreConfig()
    base = getattr(env, "unwrapped", env)
    rng = np.random.default_rng(c.seed)
    started = time.perf_counter()
    obs, info = env.reset(seed=c.seed, options={"task_id": task_id} if task_id else None)
    task_id = str(info.get("task_id", task_id))
    snapshots = callable(getattr(base, "get_state", None)) and getattr(base, "supports_snapshots", True)
    use_snapshot = c.return_by == "snapshot" or (c.return_by == "auto" and snapshots)
    archive = Archive(c.weights, c.reset_counts_on_update)
    archive.visit(Cell(cell_of(base, obs), task_id, (), 0.0, _snapshot(base) if use_snapshot else None, obs))
    steps = return_steps = rejected = 0
    best, best_actions, won = 0.0, (), False
    curve = [(0, 1, 0.0)]
    while steps < c.budget:
        try:
            cell = archive.select(rng, task_id)
        except LookupError:
            break
        if use_snapshot:
            obs, info = env.reset(options={"task_id": task_id, "start_state": cell.snapshot})
        else:
            obs, info = env.reset(options={"task_id": task_id})
            for a in cell.actions:
                obs, _, _, _, info = env.step(a)
                steps += 1
                return_steps += 1
        score, actions, found_new = cell.score, list(cell.actions), False
        for _ in range(c.explore_steps):
            if steps >= c.budget:
                break
            action = policy.act(env, obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            score += float(reward)
            actions.append(action)
            if score > best:
                best, best_actions = score, tuple(actions)
            won = won or bool(info.get("won"))
            key = cell_of(base, obs)
            if archive.get(task_id, key) is None and judge is not None and not terminated:
                examples = [x.observation for x in archive.candidates(task_id)]
                if not judge.interesting(obs, examples):
                    rejected += 1
                    if terminated or truncated:
                        break
                    continue
            snap = _snapshot(base) if use_snapshot and not terminated else None
            new, _ = archive.visit(Cell(key, task_id, tuple(actions), score, snap, obs, terminal=bool(terminated),
                                        found_at_step=steps))
            found_new = found_new or new
            if steps % c.log_every == 0:
                curve.append((steps, len(archive), best))
            if terminated or truncated:
                break
        if found_new:
            cell.times_chosen_since_new = 0
    curve.append((steps, len(archive), best))
    return ExploreResult("go-explore" if judge is None else "intelligent-go-explore", task_id, steps, len(archive),
                         best, won, curve, archive, best_actions, return_steps, rejected,
                         time.perf_counter() - started)


def plain_explore(env: Any, policy: ExplorePolicy, budget: int, seed: int = 0, task_id: str | None = None,
                  log_every: int = 50) -> ExploreResult:
    """The baseline: episodes from the task's reset with the same policy, cells counted the same way."""
    base = getattr(env, "unwrapped", env)
    started = time.perf_counter()
    seen: set[Hashable] = set()
    steps, best, best_actions, won = 0, 0.0, (), False
    curve = [(0, 1, 0.0)]
    first = True
    while steps < budget:
        obs, info = env.reset(seed=seed if first else None, options={"task_id": task_id} if task_id else None)
        task_id = str(info.get("task_id", task_id))
        first = False
        seen.add(cell_of(base, obs))
        score, actions = 0.0, []
        while steps < budget:
            action = policy.act(env, obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            score += float(reward)
            actions.append(action)
            if score > best:
                best, best_actions = score, tuple(actions)
            won = won or bool(info.get("won"))
            seen.add(cell_of(base, obs))
            if steps % log_every == 0:
                curve.append((steps, len(seen), best))
            if terminated or truncated:
                break
    curve.append((steps, len(seen), best))
    return ExploreResult("plain", str(task_id), steps, len(seen), best, won, curve, None, best_actions,
                         seconds=time.perf_counter() - started)
