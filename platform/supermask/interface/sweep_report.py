"""A sweep's outputs: sweep.json (every trial), best.yaml (a ready-to-run task spec) and report.md
with PNG plots (accuracy against density with the Pareto front, per-layer density, learning curves)."""

from __future__ import annotations

import json
import platform as _platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask import __version__  # noqa: E402
from supermask.config.spec import dump_spec  # noqa: E402
from supermask.config.sweep import Sweep  # noqa: E402
from supermask.recipes.results import TRIAL_STATUSES, SweepOutcome, TrialRecord  # noqa: E402

_STATUS_STYLE = {
    "completed": ("#4477aa", "o"),
    "stopped_early": ("#ccbb44", "v"),
    "unfinished": ("#bbbbbb", "x"),
}


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


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


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


def _learns_thresholds(sweep: Sweep) -> bool:
    if sweep.base.get("learn") == "weights":
        return sweep.base["weights"]["method"] == "str"  # STR on weights learns its budgets too
    methods = {sweep.base["mask"]["method"]}
    if "mask.method" in sweep.space:
        methods |= set(sweep.space["mask.method"].points())
    return "learned_threshold" in methods


def plot_layer_density(sweep: Sweep, trials: list[TrialRecord], path: Path) -> str:
    """Per-layer density: every full trial's for STR sweeps (learned budgets), else the best trial's."""
    best = best_trial(trials)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if _learns_thresholds(sweep):
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


def plot_curves(sweep: Sweep, trials: list[TrialRecord], path: Path) -> None:
    """Validation accuracy after every epoch, one line per trial; dashed where the scheduler stopped it."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for t in trials:
        if t.history:
            ax.plot(
                [h["epoch"] for h in t.history],
                [h["val_accuracy"] for h in t.history],
                ls="--" if t.status == "stopped_early" else "-",
                marker=".",
                alpha=0.8,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{sweep.name}: learning curves (dashed: stopped early)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_dict(sweep: Sweep, outcome: SweepOutcome, front: list[str]) -> dict:
    """The machine-readable record of a sweep."""
    best = best_trial(outcome.trials)
    counts = {s: sum(t.status == s for t in outcome.trials) for s in TRIAL_STATUSES}
    return {
        "name": sweep.name,
        "fingerprint": sweep.fingerprint(),
        "metric": {
            "name": sweep.spec.metric,
            "density_budget": sweep.spec.density_budget,
            "mode": "max",
            "objective": "objective",
        },
        "finished": outcome.finished,
        "resumed": outcome.resumed,
        "expected_trials": outcome.expected_trials,
        "num_trials": len(outcome.trials),
        "status_counts": counts,
        "seconds": outcome.seconds,  # this command's wall time
        "trial_seconds": sum(t.metrics.get("time_total_s", 0.0) for t in outcome.trials),
        "experiment_path": outcome.experiment_path,
        "best": None
        if best is None
        else {"trial_id": best.trial_id, "config": best.config, "metrics": best.metrics},
        "pareto_front": front,
        "trials": [t.__dict__ for t in outcome.trials],
        "sweep": sweep.to_dict(),
        "versions": {"supermask": __version__, "python": _platform.python_version()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_best_spec(sweep: Sweep, best: TrialRecord, path: Path) -> None:
    """best.yaml: the base spec with the best trial's settings, its own stream size and data split."""
    spec = sweep.best_spec(best.config)
    settings = ", ".join(f"{k}={_fmt(v)}" for k, v in best.config.items())
    header = [
        f"# Best trial of sweep {sweep.name!r}: {best.trial_id} ({settings}),",
        f"# validation accuracy {best.metrics['val_accuracy']:.4f} at density {best.metrics['density']:.4f} "
        f"on {sweep.spec.num_tasks} tasks.",
        f"# The base spec {Path(sweep.base_path).name} with those settings: all {spec.stream.num_tasks} tasks, and "
        f"data.validation_fraction {spec.data.validation_fraction} as in the base spec (the sweep's",
        "# validation split was for choosing only). Run it with: supermask run " + str(path),
    ]
    path.write_text("\n".join(header) + "\n" + dump_spec(spec))


def write_sweep_report(sweep: Sweep, outcome: SweepOutcome, out_dir: Path) -> dict:
    """Write sweep.json, best.yaml, report.md and its PNG plots into out_dir; returns sweep.json's content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = outcome.trials
    front = plot_accuracy_vs_density(sweep, trials, out_dir / "accuracy_vs_density.png")
    layer_title = plot_layer_density(sweep, trials, out_dir / "layer_density.png")
    plot_curves(sweep, trials, out_dir / "curves.png")
    record = sweep_dict(sweep, outcome, front)
    (out_dir / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    best = best_trial(trials)
    if best is not None:
        write_best_spec(sweep, best, out_dir / "best.yaml")
    (out_dir / "report.md").write_text(_report_markdown(sweep, outcome, record, front, best, layer_title))
    return record


def _report_markdown(sweep, outcome, record, front, best, layer_title) -> str:
    s = sweep.spec
    keys = list(sweep.space)
    counts = record["status_counts"]
    metric = s.metric + (f" (density budget {s.density_budget})" if s.density_budget is not None else "")
    lines = [
        f"# Sweep {sweep.name}",
        "",
        f"Base spec `{Path(sweep.base_path).name}`: {sweep.base['stream']['name']} on {sweep.base['base']['arch']}, "
        + (
            f"trained weights {sweep.base['weights']['method']}"
            if sweep.base.get("learn") == "weights"
            else f"mask {sweep.base['mask']['method']}"
        )
        + f". Each trial learns {s.num_tasks} tasks and is scored on a "
        f"validation split of {s.validation_fraction:.0%} of their training data (never the test split).",
        "",
        f"- search: {s.algorithm}, {len(outcome.trials)} of {outcome.expected_trials} trials; scheduler: {s.scheduler.name}; "
        f"metric: {metric}",
        f"- trials: {counts['completed']} completed, {counts['stopped_early']} stopped early, "
        f"{counts['error']} failed, {counts['unfinished']} unfinished; {record['trial_seconds']:.1f} s in trials, "
        f"{outcome.seconds:.1f} s wall" + (" (this run, resumed)" if outcome.resumed else ""),
    ]
    if best is not None:
        settings = ", ".join(f"`{k}={_fmt(v)}`" for k, v in best.config.items())
        lines.append(
            f"- best: {best.trial_id} ({settings}): validation accuracy **{best.metrics['val_accuracy']:.4f}** "
            f"at density {best.metrics['density']:.4f}; ready to run: `supermask run best.yaml`"
        )
    lines += [
        "",
        "![accuracy vs density](accuracy_vs_density.png)",
        "",
        f"![{layer_title}](layer_density.png)",
        "",
        "![learning curves](curves.png)",
        "",
        "| trial | "
        + " | ".join(f"`{k}`" for k in keys)
        + " | status | epochs | val acc | density | objective | Pareto |",
        "| --- | " + " | ".join("---" for _ in keys) + " | --- | --- | --- | --- | --- | --- |",
    ]
    ranked = sorted(outcome.trials, key=lambda t: -t.metrics.get("objective", float("-inf")))
    for t in ranked:
        m = t.metrics
        name = f"**{t.trial_id}**" if best is not None and t.trial_id == best.trial_id else t.trial_id
        status = t.status.replace("_", " ") + (f": {t.error.splitlines()[0][:80]}" if t.error else "")
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(t.config.get(k)) for k in keys)
            + f" | {status} | {t.epochs}/{t.planned_epochs or '?'} | {_fmt(m.get('val_accuracy'))} | "
            f"{_fmt(m.get('density'))} | {_fmt(m.get('objective'))} | {'yes' if t.trial_id in front else ''} |"
        )
    return "\n".join(lines) + "\n"
