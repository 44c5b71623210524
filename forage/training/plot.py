"""``forage plot RUN``: reward, success, entropy, tool calls, replay size and loss as one PNG.

The x axis counts updates done: step s's rollouts come from the policy after s updates, and the
held-out panel (``RUN/eval.json``, written by ``forage train`` with ``eval_tasks``) is drawn at the
number of updates behind it, its cold-start score at 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .metrics import read_metrics

__all__ = ["plot_run", "PANELS"]

PANELS: list[tuple[str, Sequence[str]]] = [
    ("reward", ("reward/mean", "reward/shaped_mean")),
    ("success rate", ("success/rate", "eval/success")),
    ("token entropy", ("entropy/token",)),
    ("tool calls / episode", ("tools/calls_mean",)),
    ("replay buffer size", ("replay/size",)),
    ("loss", ("loss/pg", "loss/sil")),
]


def held_out_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(updates done, greedy held-out success) from ``RUN/eval.json``: the cold-start score at 0, then each eval."""
    path = run_dir / "eval.json"
    if not path.exists():
        return []
    ev = json.loads(path.read_text())
    pts = [(0, float(ev["before_rl"]["success"]))] if ev.get("before_rl") else []
    pts += [(int(e["step"]), float(e["success"])) for e in ev.get("during_rl") or []]
    return pts


def plot_run(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Draw the panels for one or more runs (overlaid); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(r) for r in run_dirs]
    data = [(r.name, read_metrics(r)) for r in runs]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        drawn = False
        for (name, rows), run in zip(data, runs):
            held = held_out_curve(run) if "eval/success" in keys else []
            if held:
                xs, ys = zip(*held)
                ax.plot(xs, ys, marker="s", markersize=4, label="held-out (greedy)" if len(data) == 1
                        else f"{name}: held-out (greedy)")
                drawn = True
            for key in keys:
                if held and key == "eval/success":
                    continue
                pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
                if pts:
                    xs, ys = zip(*pts)
                    label = key if len(data) == 1 else f"{name}: {key}"
                    ax.plot(xs, ys, marker="o", markersize=3, label=label)
                    drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(", ".join(n for n, _ in data))
    fig.tight_layout()
    out = Path(out) if out else runs[0] / "plots" / "training.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
