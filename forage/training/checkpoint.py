"""Checkpoints: model, optimizer, scheduler, replay buffer, trainer state, RNG states and step.

One format whatever wrote it: full (unsharded) tensors, the optimizer state keyed by parameter index as
``torch.optim.Optimizer.state_dict`` keys it. A run on several ranks adds each rank's own random streams
(``ranks``, ``world_size``); see :meth:`forage.training.trainer.Trainer.load_state_dict` for a resume on a
different rank count.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "checkpoint_path", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "prune_checkpoints", "optimizer_by_name", "optimizer_by_index"]


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """The folder of a run's checkpoint at ``step``."""
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoints/step-NNNNNN/state.pt`` atomically (tmp dir, then rename)."""
    final = checkpoint_path(run_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / "state.pt").exists())
    return done[-1] if done else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint folder (or its state.pt) onto the CPU."""
    p = Path(path)
    if p.is_dir():
        p = p / "state.pt"
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(p, map_location="cpu", weights_only=False)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (0 or less: keep all)."""
    if keep <= 0:
        return
    root = Path(run_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / "state.pt").exists())
    for p in done[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def optimizer_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter index turned into one keyed by parameter name (``names`` in
    the optimizer's parameter order), the form ``torch.distributed.checkpoint.state_dict`` reads and writes."""
    return {"state": {names[int(i)]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}


def optimizer_by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of :func:`optimizer_by_name`."""
    index = {n: i for i, n in enumerate(names)}
    return {"state": {index[n]: v for n, v in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}
