"""Ranking and drawing a sweep's trials: which ran their budget, the best, the Pareto front, the curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask.config.sweep import Sweep  # noqa: E402
from supermask.recipes.results import TrialRecord  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (density, accuracy) points no other point beats: as sparse and at least as accurate."""
    front = []
    for i, (d, a) in enumerate(points):
        dominated = any(
            (d2 <= d and a2 >= a) and (d2 < d or a2 > a) for j, (d2, a2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def scored(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The trials ranked for choosing: those that ran their full budget if any did, else all with a result."""
    full = [t for t in trials if t.status == "completed" and "objective" in t.metrics]
    return full or [t for t in trials if t.status != "error" and "objective" in t.metrics]


def best_trial(trials: list[TrialRecord]) -> TrialRecord | None:
    """The highest objective (ties: lower density, then trial id) among the trials that ran to the end."""
    pool = scored(trials)
    if not pool:
        return None
    return min(pool, key=lambda t: (-t.metrics["objective"], t.metrics["density"], t.trial_id))


def cell(value, digits: int = 4) -> str:
    """A sweep table's cell: small and large numbers in g format, others with `digits` decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def plot_curves(
    sweep: Sweep, trials: list[TrialRecord], path: Path, metric: str, ylabel: str, xlabel: str
) -> None:
    """`metric` after every reported epoch, one line per trial; dashed where the scheduler stopped it."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for t in trials:
        points = [(h["epoch"], h[metric]) for h in t.history if h.get(metric) is not None]
        if points:
            ax.plot(
                *zip(*points, strict=True),
                ls="--" if t.status == "stopped_early" else "-",
                marker=".",
                alpha=0.8,
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{sweep.name}: learning curves (dashed: stopped early)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
