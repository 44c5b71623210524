"""Plot Go-Explore and plain-exploration curves (cells found and best score over env steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .run import ExploreResult

__all__ = ["plot_curves", "curves_table"]


def curves_table(results: Sequence[ExploreResult], points: int = 8) -> list[dict]:
    """Rows ``{step, <method> cells, <method> best}`` at up to ``points`` evenly spaced steps."""
    if not results:
        return []
    last = max(r.steps for r in results)
    marks = sorted({round(last * (i + 1) / points) for i in range(points)})
    rows = []
    for m in marks:
        row: dict = {"step": m}
        for r in results:
            upto = [p for p in r.curve if p[0] <= m] or r.curve[:1]
            row[f"{r.method} cells"] = upto[-1][1]
            row[f"{r.method} best"] = round(upto[-1][2], 3)
        rows.append(row)
    return rows


def plot_curves(results: Sequence[ExploreResult], path: str | Path, title: str = "") -> Path:
    """Two panels (cells discovered, best score) against env steps, one line per result; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        xs = [p[0] for p in r.curve]
        ax1.plot(xs, [p[1] for p in r.curve], label=r.method)
        ax2.plot(xs, [p[2] for p in r.curve], label=r.method)
    ax1.set_xlabel("env steps")
    ax1.set_ylabel("cells discovered")
    ax2.set_xlabel("env steps")
    ax2.set_ylabel("best score")
    ax1.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
