"""A sweep's outputs, for every learner kind: sweep.json (every trial), best.yaml (a ready-to-run task spec)
and report.md with its plots; what depends on the kind comes from its SweepSection."""

from __future__ import annotations

import json
import platform as _platform
import time
from pathlib import Path

from supermask import __version__
from supermask.config.spec import dump_spec
from supermask.config.sweep import Sweep
from supermask.interface.learner_sections import sweep_section
from supermask.interface.sections import SweepSection
from supermask.interface.trials import best_trial, cell, pareto_front
from supermask.recipes.results import TRIAL_STATUSES, SweepOutcome, TrialRecord

__all__ = ["best_trial", "pareto_front", "sweep_dict", "write_sweep_report"]


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


def _settings(best: TrialRecord, quote: str = "") -> str:
    return ", ".join(f"{quote}{k}={cell(v)}{quote}" for k, v in best.config.items())


def write_best_spec(sweep: Sweep, best: TrialRecord, section: SweepSection, path: Path) -> None:
    """best.yaml: the base spec with the best trial's settings, its own stream size and data split."""
    spec = sweep.best_spec(best.config)
    header = [
        f"# Best trial of sweep {sweep.name!r}: {best.trial_id} ({_settings(best)}),",
        f"# {section.score(best)} on {sweep.spec.num_tasks} tasks.",
        f"# The base spec {Path(sweep.base_path).name} with those settings: all {spec.stream.num_tasks} tasks, and "
        f"data.validation_fraction {spec.data.validation_fraction} as in the base spec (the sweep's",
        "# validation split was for choosing only). Run it with: supermask run " + str(path),
    ]
    path.write_text("\n".join(header) + "\n" + dump_spec(spec))


def write_sweep_report(sweep: Sweep, outcome: SweepOutcome, out_dir: Path) -> dict:
    """Write sweep.json, best.yaml, report.md and its PNG plots into out_dir; returns sweep.json's content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    section = sweep_section(sweep.learn)
    trials = outcome.trials
    front, images = section.plots(sweep, trials, out_dir)
    record = sweep_dict(sweep, outcome, front)
    (out_dir / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    best = best_trial(trials)
    if best is not None:
        write_best_spec(sweep, best, section, out_dir / "best.yaml")
    (out_dir / "report.md").write_text(_report_markdown(sweep, section, outcome, record, front, best, images))
    return record


def _report_markdown(sweep, section, outcome, record, front, best, images) -> str:
    s = sweep.spec
    keys = list(sweep.space)
    counts = record["status_counts"]
    metric = s.metric + (f" (density budget {s.density_budget})" if s.density_budget is not None else "")
    lines = [
        f"# Sweep {sweep.name}",
        "",
        f"Base spec `{Path(sweep.base_path).name}`: {section.describe(sweep)}",
        "",
        f"- search: {s.algorithm}, {len(outcome.trials)} of {outcome.expected_trials} trials; scheduler: "
        f"{s.scheduler.name}; metric: {metric}",
        f"- trials: {counts['completed']} completed, {counts['stopped_early']} stopped early, "
        f"{counts['error']} failed, {counts['unfinished']} unfinished; {record['trial_seconds']:.1f} s in trials, "
        f"{outcome.seconds:.1f} s wall" + (" (this run, resumed)" if outcome.resumed else ""),
    ]
    if best is not None:
        lines.append(
            f"- best: {best.trial_id} ({_settings(best, '`')}): {section.score(best, bold=True)}; "
            "ready to run: `supermask run best.yaml`"
        )
    columns = section.columns()
    lines += [
        "",
        *images,
        "| trial | "
        + " | ".join(f"`{k}`" for k in keys)
        + " | status | "
        + " | ".join(h for h, _ in columns)
        + " |",
        "| --- | " + " | ".join("---" for _ in [*keys, None, *columns]) + " |",
    ]
    ranked = sorted(outcome.trials, key=lambda t: -t.metrics.get("objective", float("-inf")))
    for t in ranked:
        name = f"**{t.trial_id}**" if best is not None and t.trial_id == best.trial_id else t.trial_id
        status = t.status.replace("_", " ") + (f": {t.error.splitlines()[0][:80]}" if t.error else "")
        cells = (
            [cell(t.config.get(k)) for k in keys] + [status] + [_column(t, key, front) for _, key in columns]
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _column(trial: TrialRecord, key: str, front: list[str]) -> str:
    if key == "epochs":
        return f"{trial.epochs}/{trial.planned_epochs or '?'}"
    if key == "pareto":
        return "yes" if trial.trial_id in front else ""
    return cell(trial.metrics.get(key))
