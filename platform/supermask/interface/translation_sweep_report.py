"""A translation sweep's outputs: sweep.json, best.yaml and report.md with its learning curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask.config.sweep import Sweep  # noqa: E402
from supermask.core.translation.evaluation import MISS_DISTANCE  # noqa: E402
from supermask.interface.sweep_report import _fmt, best_trial, sweep_dict  # noqa: E402
from supermask.interface.translation_cli import translation_spec_yaml  # noqa: E402
from supermask.recipes.results import SweepOutcome, TrialRecord  # noqa: E402


def plot_curves(sweep: Sweep, trials: list[TrialRecord], path: Path) -> None:
    """Validation Hausdorff score after every measurement, one line per trial (dashed: stopped early)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for t in trials:
        points = [(h["epoch"], h["val_hausdorff"]) for h in t.history if h.get("val_hausdorff") is not None]
        if points:
            ax.plot(*zip(*points, strict=True), ls="--" if t.status == "stopped_early" else "-", marker=".")
    ax.set_xlabel(f"measurement (every {sweep.base['translation']['eval_every'] or 'all'} steps)")
    ax.set_ylabel("validation Hausdorff score (lower is better)")
    ax.set_title(f"{sweep.name}: learning curves (dashed: stopped early)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_translation_sweep_report(sweep: Sweep, outcome: SweepOutcome, out_dir: Path) -> dict:
    """Write sweep.json, best.yaml, report.md and curves.png into out_dir; returns sweep.json's content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = outcome.trials
    plot_curves(sweep, trials, out_dir / "curves.png")
    record = sweep_dict(sweep, outcome, [])
    (out_dir / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    best = best_trial(trials)
    keys = list(sweep.space)
    counts = record["status_counts"]
    lines = [
        f"# Sweep {sweep.name}",
        "",
        f"Base spec `{Path(sweep.base_path).name}`: {sweep.spec.num_tasks} translation task(s) of "
        f"{sweep.base['stream']['name']} per trial, scored on held-out validation pairs (never the test pairs) by "
        f"the mean symmetric Hausdorff distance over both directions, a missing polygon counting {MISS_DISTANCE}.",
        "",
        f"- search: {sweep.spec.algorithm}, {len(trials)} of {outcome.expected_trials} trials; scheduler "
        f"{sweep.spec.scheduler.name}; trials: {counts['completed']} completed, {counts['stopped_early']} stopped "
        f"early, {counts['error']} failed, {counts['unfinished']} unfinished; {outcome.seconds:.1f} s wall",
    ]
    if best is not None:
        settings = ", ".join(f"`{k}={_fmt(v)}`" for k, v in best.config.items())
        lines.append(
            f"- best: {best.trial_id} ({settings}): validation Hausdorff score "
            f"**{best.metrics['val_hausdorff']:.4f}**; ready to run: `supermask run best.yaml`"
        )
        spec = sweep.best_spec(best.config)
        header = f"# Best trial of sweep {sweep.name!r}: {best.trial_id} ({settings.replace('`', '')})\n"
        (out_dir / "best.yaml").write_text(header + translation_spec_yaml(spec))
    lines += [
        "",
        "![learning curves](curves.png)",
        "",
        "| trial | "
        + " | ".join(f"`{k}`" for k in keys)
        + " | status | measurements | val Hausdorff | X->Y | Y->X |",
        "| --- | " + " | ".join("---" for _ in keys) + " | --- | --- | --- | --- | --- |",
    ]
    for t in sorted(trials, key=lambda t: -t.metrics.get("objective", float("-inf"))):
        m = t.metrics
        status = t.status.replace("_", " ") + (f": {t.error.splitlines()[0][:80]}" if t.error else "")
        lines.append(
            f"| {t.trial_id} | "
            + " | ".join(_fmt(t.config.get(k)) for k in keys)
            + f" | {status} | {t.epochs}/{t.planned_epochs or '?'} | {_fmt(m.get('val_hausdorff'))} | "
            f"{_fmt(m.get('val_x_to_y'))} | {_fmt(m.get('val_y_to_x'))} |"
        )
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return record
