"""The report of a translation run: results.json, report.md, a Hausdorff-curve PNG and the sample grids."""

from __future__ import annotations

import json
import os
import platform as _platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask import __version__  # noqa: E402
from supermask.config.spec import Spec  # noqa: E402
from supermask.core.translation.evaluation import DIRECTIONS, MISS_DISTANCE  # noqa: E402
from supermask.interface.probe_report import plot_probes, probe_lines, probe_summary  # noqa: E402
from supermask.recipes.translation import TranslationRecipe  # noqa: E402
from supermask.runtime.translation_job import TranslationJobResult  # noqa: E402

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


def plot_curves(tasks: list[dict], path: Path) -> None:
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


def write_translation_report(
    spec: Spec, recipe: TranslationRecipe, result: TranslationJobResult, out_dir: Path
) -> dict:
    """Write results.json, report.md and hausdorff.png into out_dir; returns the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [task_summary(meta, result.record_bytes[meta["task_id"]]) for meta in result.tasks]
    s = recipe.settings
    results = {
        "name": spec.name,
        "kind": "translation",
        "stream": {
            "name": spec.stream.name,
            "num_tasks": spec.stream.num_tasks,
            "options": spec.stream.options,
        },
        "data_source": recipe.data_source,
        "translation": s.to_dict(),
        "mask": None
        if recipe.mask is None
        else {"method": recipe.mask.method, "density": recipe.mask.target_density},
        "base_fingerprint": recipe.base_fingerprint,
        "provenance": recipe.provenance["hash"],
        "generator_weights": recipe.num_weights,
        "tasks": tasks,
        "skipped": result.skipped,
        "workers": result.workers,
        "strategy": result.strategy,
        "seconds": result.seconds,
        "learn_seconds": result.learn_seconds,
        "fid_kid": "not computed: no pretrained feature network (Inception) is available offline",
        "miss_distance": MISS_DISTANCE,
        "machine": {"platform": _platform.platform(), "cpus": os.cpu_count()},
        "versions": {"supermask": __version__, "python": _platform.python_version()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    timing = {
        "probe_seconds": sum((m.get("metrics") or {}).get("probe_seconds") or 0.0 for m in result.tasks),
        "search_seconds": sum((m.get("metrics") or {}).get("train_seconds") or 0.0 for m in result.tasks),
    }
    results["probes"] = probe_summary(out_dir, timing)  # None when the run recorded no probes
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    if any(t["evals"] for t in tasks):
        plot_curves(tasks, out_dir / "hausdorff.png")
    (out_dir / "report.md").write_text(_markdown(spec, recipe, results, out_dir))
    return results


def _markdown(spec: Spec, recipe: TranslationRecipe, results: dict, out_dir: Path) -> str:
    s = recipe.settings
    how = (
        f"trained generators and discriminators (width {s.width}, disc width {s.disc_width}, {s.blocks} block(s) per group)"
        if s.method == "trained"
        else f"supermasks ({results['mask']['method']}, density {results['mask']['density']}) over frozen random "
        f"networks (base seed {s.base_seed}, fingerprint `{recipe.base_fingerprint}`), free parameters: {s.free_params}"
    )
    lines = [
        f"# {spec.name}",
        "",
        f"Stream `{spec.stream.name}` at {s.resolution} px, {len(results['tasks'])} task(s); {how}; "
        f"{s.discriminator} discriminator, cycle loss {s.cycle_loss}, {s.steps} generator steps at lr {s.lr}, batch {s.batch_size}.",
        "",
        f"- data: {results['data_source']}",
        f"- Ray Train: {results['strategy']}, {results['workers']} worker(s); {results['seconds']:.1f} s in all",
        f"- FID/KID: {results['fid_kid']}",
        "- Hausdorff distances are in unit-square coordinates, read from the images' polygon colour; 'identity' "
        "returns the input unchanged (what drawing no shape change scores), 'truth' is the true target (the "
        "outline extraction's own error). Lower is better; a translation needs shape change to beat identity.",
        "",
        "| task | direction | symmetric | truth -> output | output -> truth | polygon found | identity symmetric | truth symmetric |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in results["tasks"]:
        for d in DIRECTIONS:
            r, i, tr = t[d], t[f"identity_{d}"], t[f"truth_{d}"]
            lines.append(
                f"| {t['task']} | {ARROWS[d]} | {_fmt(r['symmetric_mean'])} | {_fmt(r['truth_to_output_mean'])} | "
                f"{_fmt(r['output_to_truth_mean'])} | {_fmt(r['detected_fraction'], 2)} | {_fmt(i['symmetric_mean'])} | "
                f"{_fmt(tr['symmetric_mean'])} |"
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
    probes = probe_lines(results["probes"], plot_probes(out_dir), spec.probes.every, spec.probes.scale)
    if probes:
        probes[3:3] = [
            "Each network of a task is probed on its own (rows `<task>/<network>`): what it trains "
            "(weights, or scores and masks for supermasks), and for saturation its conv weights scaled by c "
            "on a fixed batch of training images of its input domain (README, Image translation).",
            "",
        ]
    lines += probes
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
    return "\n".join(lines) + "\n"
