"""The probes of a run in its report: metrics.jsonl read back, summarised per task, plotted.

Workers append one JSON line per task and probe to OUT/metrics.jsonl (core/probes/search_probe.py). A
block that resumed from a checkpoint probes some steps twice; the last record of a (task, step) wins.
The summary (results.json "probes") has, per task, the norm at the start and end with its fits
against t, sqrt(t) and t^(1/4), and saturation and churn; the report shows the norm and saturation
against step (norm.png with the sqrt(t) fits dashed, saturation.png) and the probes' share of the
search time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from supermask.core.probes.probe import FIT_FORMS, norm_fits

PLOTTED_TASKS = 12  # tasks drawn one by one; more are summarised by their mean


def read_probe_records(path: Path) -> dict[str, list[dict]]:
    """Task id -> its probe records in step order (torn lines skipped, the last record of a step kept)."""
    if not path.exists():
        return {}
    by_task: dict[str, dict[float, dict]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "task" in record and "step" in record:
            by_task.setdefault(record["task"], {})[float(record["step"])] = record
    return {task: [steps[s] for s in sorted(steps)] for task, steps in sorted(by_task.items())}


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return np.array([s for s, _ in rows], dtype=np.float64), np.array([v for _, v in rows], dtype=np.float64)


def _ends(records: list[dict], key: str) -> tuple[float | None, float | None]:
    _, values = _series(records, key)
    return (float(values[0]), float(values[-1])) if len(values) else (None, None)


def task_summary(records: list[dict]) -> dict:
    """One task's probes in numbers: norm start/end and fits, saturation start/end, mean churn."""
    steps, norms = _series(records, "norm")
    out: dict = {"probes": len(records), "first_step": records[0]["step"], "last_step": records[-1]["step"]}
    out["norm_start"], out["norm_end"] = _ends(records, "norm")
    try:
        out["norm_fits"] = norm_fits(steps, norms)
        out["best_fit"] = max(FIT_FORMS, key=lambda k: _finite(out["norm_fits"][k]["r2"], -1.0))
    except ValueError:  # fewer than 3 probes
        out["norm_fits"], out["best_fit"] = None, None
    for key in ("saturation_cosine", "saturation_agreement", "saturation_output_cosine", "density"):
        out[f"{key}_start"], out[f"{key}_end"] = _ends(records, key)
    _, churn = _series(records, "churn")
    out["churn_mean"] = float(churn.mean()) if len(churn) else None
    for key in (
        "saturation_float64",
        "saturation_overflow",
    ):  # scaled passes that overflowed float32 / float64
        out[f"{key}_probes"] = sum(bool(r.get(key)) for r in records)
    return out


def _finite(x, default):
    return x if isinstance(x, int | float) and math.isfinite(x) else default


def probe_summary(out_dir: Path, timing: dict | None = None) -> dict | None:
    """results.json's "probes": per-task summaries, their means and the probes' share of the search time."""
    records = read_probe_records(out_dir / "metrics.jsonl")
    if not records:
        return None
    tasks = {task: task_summary(rs) for task, rs in records.items()}
    mean = {}
    for key in ("norm_start", "norm_end", "saturation_cosine_start", "saturation_cosine_end", "churn_mean"):
        values = [s[key] for s in tasks.values() if s.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
    r2 = {
        form: [s["norm_fits"][form]["r2"] for s in tasks.values() if s["norm_fits"] is not None]
        for form in FIT_FORMS
    }
    mean["norm_fit_r2"] = {k: float(np.nanmean(v)) if v else None for k, v in r2.items()}
    timing = timing or {}
    probe_s, search_s = timing.get("probe_seconds"), timing.get("search_seconds")
    overhead = probe_s / (search_s - probe_s) if probe_s and search_s and search_s > probe_s else None
    return {
        "file": "metrics.jsonl",
        "tasks": tasks,
        "mean": mean,
        "probe_seconds": probe_s,
        "overhead": overhead,  # probe time over the rest of the search time, summed over workers
    }


def plot_probes(out_dir: Path) -> list[str]:
    """norm.png and saturation.png from metrics.jsonl; returns the files written."""
    records = read_probe_records(out_dir / "metrics.jsonl")
    if not records:
        return []
    import matplotlib  # here, so that the summaries do without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(records)[:PLOTTED_TASKS]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, task in enumerate(shown):
        steps, norms = _series(records[task], "norm")
        color = plt.cm.tab20(i % 20)
        ax.plot(steps, norms, color=color, lw=1.2, label=task)
        if len(steps) >= 3:
            fit = norm_fits(steps, norms)["sqrt_t"]
            ax.plot(steps, fit["intercept"] + fit["slope"] * np.sqrt(steps), "--", color=color, lw=0.8)
    ax.set(
        xlabel="step", ylabel="norm of what is trained", title="norm against step (dashed: a + b sqrt(t) fit)"
    )
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "norm.png", dpi=110)
    plt.close(fig)
    written.append("norm.png")
    if any(_series(records[t], "saturation_cosine")[0].size for t in shown):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for i, task in enumerate(shown):
            color = plt.cm.tab20(i % 20)
            for ax, key in zip(axes, ("saturation_cosine", "saturation_agreement"), strict=True):
                ax.plot(*_series(records[task], key), color=color, lw=1.2, label=task)
        axes[0].set(xlabel="step", ylabel="hidden-state cosine, scaled vs unscaled", title="saturation")
        axes[1].set(xlabel="step", ylabel="output argmax agreement", title="saturation")
        axes[1].legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / "saturation.png", dpi=110)
        plt.close(fig)
        written.append("saturation.png")
    return written


def _fmt(x, digits: int = 3) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def probe_lines(summary: dict | None, plots: list[str], every: int, scale: float) -> list[str]:
    """The report's probes section (empty when the run recorded none)."""
    if not summary:
        return []
    overhead = summary["overhead"]
    lines = [
        "",
        "## Probes",
        "",
        f"Every {every} steps, each task's trained tensors (scores for masks) and its network as it computes "
        f"(effective weights scaled by c = {scale:g}), recorded in `{summary['file']}`; "
        + (
            f"they took {summary['probe_seconds']:.1f} s, {100 * overhead:.1f}% on top of the search's other time."
            if overhead is not None
            else "their time was not recorded."
        ),
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        "| task | norm start -> end | best fit | R^2 t / sqrt(t) / t^(1/4) | saturation cosine start -> end "
        "| argmax agreement start -> end | mean churn |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, s in list(summary["tasks"].items())[:50]:
        fits = s["norm_fits"]
        r2 = " / ".join(_fmt(fits[k]["r2"]) for k in FIT_FORMS) if fits else "too few probes"
        lines.append(
            f"| {task} | {_fmt(s['norm_start'], 2)} -> {_fmt(s['norm_end'], 2)} | {s['best_fit'] or ''} | {r2} | "
            f"{_fmt(s['saturation_cosine_start'])} -> {_fmt(s['saturation_cosine_end'])} | "
            f"{_fmt(s['saturation_agreement_start'])} -> {_fmt(s['saturation_agreement_end'])} | "
            f"{_fmt(s['churn_mean'], 4)} |"
        )
    if len(summary["tasks"]) > 50:
        lines.append(f"| ... {len(summary['tasks']) - 50} more tasks in results.json | | | | | | |")
    redone = sum(s.get("saturation_float64_probes", 0) for s in summary["tasks"].values())
    if redone:
        overflowed = sum(s.get("saturation_overflow_probes", 0) for s in summary["tasks"].values())
        lines += [
            "",
            f"The scaled pass overflowed float32 in {redone} probe(s) (summed over tasks); they were computed "
            f"again in float64, where {overflowed} overflowed too (left out of the saturation numbers).",
        ]
    return lines
