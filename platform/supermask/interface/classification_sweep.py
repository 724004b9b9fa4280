"""The sweep sections of the learners of labelled tasks (masks, weights): accuracy against density with the
Pareto front, per-layer density, learning curves, and the table's accuracy and density columns."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask.config.sweep import Sweep  # noqa: E402
from supermask.interface.sections import SweepSection, register_section  # noqa: E402
from supermask.interface.trials import best_trial, pareto_front, plot_curves, scored  # noqa: E402
from supermask.recipes.learners import SupermaskLearner, WeightsLearner  # noqa: E402
from supermask.recipes.results import TrialRecord  # noqa: E402

_STATUS_STYLE = {
    "completed": ("#4477aa", "o"),
    "stopped_early": ("#ccbb44", "v"),
    "unfinished": ("#bbbbbb", "x"),
}


class AccuracySweepSection(SweepSection):
    """Trials scored by validation accuracy, at a density."""

    def what(self, sweep: Sweep) -> str:
        return f"mask {sweep.base['mask']['method']}"

    def learns_thresholds(self, sweep: Sweep) -> bool:
        """Whether trials learn their per-layer budgets (then every trial's layer densities are drawn)."""
        methods = {sweep.base["mask"]["method"]}
        if "mask.method" in sweep.space:
            methods |= set(sweep.space["mask.method"].points())
        return "learned_threshold" in methods

    def describe(self, sweep: Sweep) -> str:
        s = sweep.spec
        return (
            f"{sweep.base['stream']['name']} on {sweep.base['base']['arch']}, {self.what(sweep)}. Each trial learns "
            f"{s.num_tasks} tasks and is scored on a validation split of {s.validation_fraction:.0%} of their "
            "training data (never the test split)."
        )

    def score(self, best: TrialRecord, bold: bool = False) -> str:
        accuracy = f"{best.metrics['val_accuracy']:.4f}"
        accuracy = f"**{accuracy}**" if bold else accuracy
        return f"validation accuracy {accuracy} at density {best.metrics['density']:.4f}"

    def plots(self, sweep: Sweep, trials: list[TrialRecord], out_dir: Path) -> tuple[list[str], list[str]]:
        front = plot_accuracy_vs_density(sweep, trials, out_dir / "accuracy_vs_density.png")
        layer_title = self.plot_layer_density(sweep, trials, out_dir / "layer_density.png")
        plot_curves(sweep, trials, out_dir / "curves.png", "val_accuracy", "validation accuracy", "epoch")
        images = [
            "![accuracy vs density](accuracy_vs_density.png)",
            "",
            f"![{layer_title}](layer_density.png)",
            "",
            "![learning curves](curves.png)",
            "",
        ]
        return front, images

    def columns(self) -> list[tuple[str, str]]:
        return [
            ("epochs", "epochs"),
            ("val acc", "val_accuracy"),
            ("density", "density"),
            ("objective", "objective"),
            ("Pareto", "pareto"),
        ]

    def plot_layer_density(self, sweep: Sweep, trials: list[TrialRecord], path: Path) -> str:
        """Per-layer density: every full trial's when trials learn their budgets, else the best trial's."""
        best = best_trial(trials)
        fig, ax = plt.subplots(figsize=(6, 3.6))
        if self.learns_thresholds(sweep):
            title = "per-layer density STR learned (one line per trial)"
            for t in scored(trials):
                layers = t.metrics.get("layer_density") or {}
                is_best = best is not None and t.trial_id == best.trial_id
                ax.plot(
                    list(layers),
                    list(layers.values()),
                    marker="o",
                    lw=2.5 if is_best else 1,
                    alpha=1.0 if is_best else 0.5,
                    label=f"{t.trial_id} (best)" if is_best else None,
                )
            if best is not None:
                ax.legend(fontsize=8)
        else:
            title = "per-layer density of the best trial"
            layers = (best.metrics.get("layer_density") or {}) if best is not None else {}
            ax.bar(list(layers), list(layers.values()), color="#4477aa")
        ax.set_ylabel("density")
        highest = max((d for line in ax.get_lines() for d in line.get_ydata()), default=0.0)
        highest = max([highest, *(p.get_height() for p in ax.patches)])
        ax.set_ylim(0, min(1.05, max(0.05, highest * 1.25)))
        ax.set_title(f"{sweep.name}: {title}", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return title


@register_section
class MasksSweepSection(AccuracySweepSection):
    learner = SupermaskLearner


@register_section
class WeightsSweepSection(AccuracySweepSection):
    learner = WeightsLearner

    def what(self, sweep: Sweep) -> str:
        return f"trained weights {sweep.base['weights']['method']}"

    def learns_thresholds(self, sweep: Sweep) -> bool:
        return sweep.base["weights"]["method"] == "str"  # STR on weights learns its budgets too


def plot_accuracy_vs_density(sweep: Sweep, trials: list[TrialRecord], path: Path) -> list[str]:
    """Scatter of every trial's validation accuracy against density, Pareto front marked; returns its ids."""
    with_result = [t for t in trials if "val_accuracy" in t.metrics]
    pool = scored(trials)
    front = [pool[i] for i in pareto_front([(t.metrics["density"], t.metrics["val_accuracy"]) for t in pool])]
    fig, ax = plt.subplots(figsize=(6, 4))
    for status, (color, marker) in _STATUS_STYLE.items():
        group = [t for t in with_result if t.status == status]
        if group:
            ax.scatter(
                [t.metrics["density"] for t in group],
                [t.metrics["val_accuracy"] for t in group],
                c=color,
                marker=marker,
                s=36,
                label=status.replace("_", " "),
                zorder=3,
            )
    if front:
        ax.plot(
            [t.metrics["density"] for t in front],
            [t.metrics["val_accuracy"] for t in front],
            color="#cc6677",
            lw=1.5,
            marker="o",
            mfc="none",
            ms=11,
            label="Pareto front",
            zorder=2,
        )
    best = best_trial(trials)
    if best is not None:
        ax.scatter(
            [best.metrics["density"]],
            [best.metrics["val_accuracy"]],
            marker="*",
            s=220,
            c="#228833",
            label="best",
            zorder=4,
        )
    if sweep.spec.density_budget is not None:
        ax.axvline(sweep.spec.density_budget, color="#888888", ls="--", lw=1, label="density budget")
    ax.set_xlabel("density (fraction of weights kept)")
    ax.set_ylabel(f"validation accuracy (mean of {sweep.spec.num_tasks} tasks)")
    ax.set_title(f"{sweep.name}: accuracy vs density")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [t.trial_id for t in front]
