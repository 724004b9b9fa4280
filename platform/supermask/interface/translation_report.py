"""The report sections of the translation learner: a run's results.json keys, report.md with its Hausdorff
curves and sample grids, the command's lines; a sweep's description, curves and table columns."""

from __future__ import annotations

import os
import platform as _platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask.config.kinds.translation import resolved_settings  # noqa: E402
from supermask.config.spec import Spec  # noqa: E402
from supermask.config.sweep import Sweep  # noqa: E402
from supermask.core.translation.evaluation import DIRECTIONS, MISS_DISTANCE  # noqa: E402
from supermask.data import stream_of  # noqa: E402
from supermask.interface.sections import RunSection, SweepSection, register_section  # noqa: E402
from supermask.interface.trials import plot_curves  # noqa: E402
from supermask.recipes.learners import Learner, TranslationLearner  # noqa: E402
from supermask.recipes.results import JobResult, TrialRecord  # noqa: E402

ARROWS = {"x_to_y": "X -> Y", "y_to_x": "Y -> X"}
STATS = ("symmetric_mean", "truth_to_output_mean", "output_to_truth_mean", "detected_fraction")


def _direction_summary(scores: dict | None) -> dict:
    return {k: (scores or {}).get(k) for k in STATS}


def task_summary(meta: dict, record_bytes: int) -> dict:
    """One task's numbers at the end of training, beside the identity and truth references."""
    metrics = meta.get("metrics") or {}
    final, refs = metrics.get("final") or {}, metrics.get("references") or {}
    out = {
        "task": meta["task_id"],
        "index": metrics.get("task_index"),
        "method": meta["method"],
        "steps": metrics.get("steps"),
        "train_seconds": metrics.get("seconds"),
        "probe_seconds": metrics.get("probe_seconds"),
        "array_bytes": meta.get("array_bytes"),
        "record_bytes": record_bytes,
        "hausdorff_score": final.get("hausdorff_score"),
        "cycle_l1_x": final.get("cycle_l1_x"),
        "cycle_l1_y": final.get("cycle_l1_y"),
        "density": metrics.get("density"),
    }
    for d in DIRECTIONS:
        out[d] = _direction_summary(final.get(d))
        for ref in ("identity", "truth"):
            out[f"{ref}_{d}"] = _direction_summary((refs.get(ref) or {}).get(d))
    out["evals"] = [
        {"step": e["step"], "hausdorff_score": e.get("hausdorff_score")}
        | {d: (e.get(d) or {}).get("symmetric_mean") for d in DIRECTIONS}
        for e in metrics.get("evals", [])
    ]
    return out


def plot_hausdorff(tasks: list[dict], path: Path) -> None:
    """Symmetric Hausdorff distance against step, both directions, with each task's identity level."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, d in zip(axes, DIRECTIONS, strict=True):
        for i, t in enumerate(tasks):
            colour = f"C{i % 10}"
            points = [(e["step"], e[d]) for e in t["evals"] if e.get(d) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", color=colour, label=t["task"])
            identity = t[f"identity_{d}"]["symmetric_mean"]
            if identity is not None:
                ax.axhline(identity, color=colour, ls="--", lw=1)
        ax.set_title(f"{ARROWS[d]} (dashed: returning the input)")
        ax.set_xlabel("generator step")
    axes[0].set_ylabel("symmetric Hausdorff (unit square)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@register_section
class TranslationRunSection(RunSection):
    learner = TranslationLearner

    def headline(self, spec: Spec) -> str:
        t = spec.translation
        resolution = stream_of(spec.stream, spec.data).input_shape[-1]  # reads no data
        return (
            f"{spec.stream.num_tasks} translation task(s) of {spec.stream.name} at {resolution} px, {t.method} "
            f"({t.discriminator} discriminator, {t.steps} steps)"
        )

    def results(self, spec: Spec, result: JobResult) -> dict:
        tasks = [task_summary(t.meta, t.meta["record_bytes"]) for t in result.tasks]
        mask = spec.mask if spec.translation.method == "supermask" else None
        settings = resolved_settings(spec, stream_of(spec.stream, spec.data))  # reads no data
        return {
            "kind": "translation",
            "stream": {
                "name": spec.stream.name,
                "num_tasks": spec.stream.num_tasks,
                "options": spec.stream.options,
            },
            "data_source": result.data_source,
            "translation": settings.to_dict(),
            "mask": None if mask is None else {"method": mask.method, "density": mask.target_density},
            "base_fingerprint": result.base_fingerprint,
            "provenance": result.provenance,
            "generator_weights": result.num_weights,
            "tasks": tasks,
            "skipped": [t.task_id for t in result.tasks if t.skipped],
            "workers": result.workers,
            "strategy": result.strategy,
            "seconds": result.seconds,
            "learn_seconds": result.learn_seconds,
            "timing": result.timing,
            "fid_kid": "not computed: no pretrained feature network (Inception) is available offline",
            "miss_distance": MISS_DISTANCE,
            "machine": {"platform": _platform.platform(), "cpus": os.cpu_count()},
        }

    def probe_timing(self, results: dict, result: JobResult) -> dict:
        metrics = [t.meta.get("metrics") or {} for t in result.tasks]
        return {
            "probe_seconds": sum(m.get("probe_seconds") or 0.0 for m in metrics),
            "search_seconds": sum(m.get("train_seconds") or 0.0 for m in metrics),
        }

    def markdown(self, spec: Spec, results: dict, result: JobResult, out_dir: Path) -> list[str]:
        if any(t["evals"] for t in results["tasks"]):
            plot_hausdorff(results["tasks"], out_dir / "hausdorff.png")
        s = results["translation"]
        how = (
            f"trained generators and discriminators (width {s['width']}, disc width {s['disc_width']}, "
            f"{s['blocks']} block(s) per group)"
            if s["method"] == "trained"
            else f"supermasks ({results['mask']['method']}, density {results['mask']['density']}) over frozen random "
            f"networks (base seed {s['base_seed']}, fingerprint `{results['base_fingerprint']}`), free parameters: "
            f"{s['free_params']}"
        )
        lines = [
            f"# {spec.name}",
            "",
            f"Stream `{spec.stream.name}` at {s['resolution']} px, {len(results['tasks'])} task(s); {how}; "
            f"{s['discriminator']} discriminator, cycle loss {s['cycle_loss']}, {s['steps']} generator steps at lr "
            f"{s['lr']}, batch {s['batch_size']}.",
            "",
            f"- data: {results['data_source']}",
            f"- Ray Train: {results['strategy']}, {results['workers']} worker(s); {results['seconds']:.1f} s in all",
            f"- FID/KID: {results['fid_kid']}",
            "- Hausdorff distances are in unit-square coordinates, read from the images' polygon colour; 'identity' "
            "returns the input unchanged (what drawing no shape change scores), 'truth' is the true target (the "
            "outline extraction's own error). Lower is better; a translation needs shape change to beat identity.",
            "",
            "| task | direction | symmetric | truth -> output | output -> truth | polygon found | identity symmetric "
            "| truth symmetric |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in results["tasks"]:
            for d in DIRECTIONS:
                r, i, tr = t[d], t[f"identity_{d}"], t[f"truth_{d}"]
                lines.append(
                    f"| {t['task']} | {ARROWS[d]} | {_fmt(r['symmetric_mean'])} | {_fmt(r['truth_to_output_mean'])} | "
                    f"{_fmt(r['output_to_truth_mean'])} | {_fmt(r['detected_fraction'], 2)} | "
                    f"{_fmt(i['symmetric_mean'])} | {_fmt(tr['symmetric_mean'])} |"
                )
        lines += [
            "",
            "| task | steps | train s | stored bytes (arrays) | cycle L1 X | cycle L1 Y | note |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in results["tasks"]:
            note = "from store" if t["task"] in results["skipped"] else ""
            lines.append(
                f"| {t['task']} | {t['steps']} | {_fmt(t['train_seconds'], 1)} | {t['array_bytes']:,} | "
                f"{_fmt(t['cycle_l1_x'])} | {_fmt(t['cycle_l1_y'])} | {note} |"
            )
        if (out_dir / "hausdorff.png").exists():
            lines += ["", "![Hausdorff distance during training](hausdorff.png)"]
        return lines

    def probe_note(self) -> list[str]:
        return [
            "Each network of a task is probed on its own (rows `<task>/<network>`): what it trains "
            "(weights, or scores and masks for supermasks), and for saturation its conv weights scaled by c "
            "on a fixed batch of training images of its input domain (README, Image translation).",
            "",
        ]

    def appendix(self, spec: Spec, results: dict, out_dir: Path) -> list[str]:
        lines = []
        for t in results["tasks"]:
            grids = sorted((out_dir / "samples" / t["task"]).glob("step-*.png"))
            if not grids:
                continue
            lines += [
                "",
                f"## {t['task']}: samples",
                "",
                "Each row: X -> Y on the left (input, translation, cycle back, truth), Y -> X on the right (the same).",
            ]
            for g in grids:
                step = int(g.stem.split("-")[1])
                lines += ["", f"Step {step}:", "", f"![{t['task']} step {step}]({g.relative_to(out_dir)})"]
        return lines

    def console(self, spec: Spec, learner: Learner, results: dict, out_dir: Path) -> list[str]:
        lines = []
        for t in results["tasks"]:
            for d, arrow in (("x_to_y", "X->Y"), ("y_to_x", "Y->X")):
                r, i = t[d], t[f"identity_{d}"]
                if r["detected_fraction"] is None:
                    continue
                sym = "n/a" if r["symmetric_mean"] is None else f"{r['symmetric_mean']:.3f}"
                one = "n/a" if r["truth_to_output_mean"] is None else f"{r['truth_to_output_mean']:.3f}"
                lines.append(
                    f"  {t['task']:<20} {arrow} Hausdorff {sym} (one-sided truth->output {one}), polygon found in "
                    f"{r['detected_fraction']:.0%}; identity {i['symmetric_mean']:.3f}"
                )
            lines.append(
                f"  {t['task']:<20} cycle L1 X {t['cycle_l1_x']:.4f}, Y {t['cycle_l1_y']:.4f}; stored "
                f"{t['array_bytes']:,} bytes"
            )
        probes = results.get("probes")
        if probes:
            share = "n/a" if probes["overhead"] is None else f"{100 * probes['overhead']:.1f}% of training"
            lines.append(f"probes: {len(probes['tasks'])} networks in {out_dir / probes['file']} ({share})")
        seconds = results["timing"].get("command_seconds", results["seconds"])
        lines.append(f"time: {seconds:.1f} s in all (training {results['learn_seconds']:.1f} s)")
        return lines


@register_section
class TranslationSweepSection(SweepSection):
    learner = TranslationLearner

    def describe(self, sweep: Sweep) -> str:
        return (
            f"{sweep.spec.num_tasks} translation task(s) of {sweep.base['stream']['name']} per trial, scored on "
            "held-out validation pairs (never the test pairs) by the mean symmetric Hausdorff distance over both "
            f"directions, a missing polygon counting {MISS_DISTANCE}."
        )

    def score(self, best: TrialRecord, bold: bool = False) -> str:
        score = f"{best.metrics['val_hausdorff']:.4f}"
        return f"validation Hausdorff score {f'**{score}**' if bold else score}"

    def plots(self, sweep: Sweep, trials: list[TrialRecord], out_dir: Path) -> tuple[list[str], list[str]]:
        every = sweep.base["translation"]["eval_every"] or "all"
        plot_curves(
            sweep,
            trials,
            out_dir / "curves.png",
            "val_hausdorff",
            "validation Hausdorff score (lower is better)",
            f"measurement (every {every} steps)",
        )
        return [], ["![learning curves](curves.png)", ""]

    def columns(self) -> list[tuple[str, str]]:
        return [
            ("measurements", "epochs"),
            ("val Hausdorff", "val_hausdorff"),
            ("X->Y", "val_x_to_y"),
            ("Y->X", "val_y_to_x"),
        ]
