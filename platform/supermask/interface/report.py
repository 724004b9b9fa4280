"""Results a program can parse (results.json) and a person can read (report.md with PNG plots)."""

from __future__ import annotations

import dataclasses
import json
import platform as _platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask import __version__  # noqa: E402
from supermask.config.spec import Spec, dump_spec  # noqa: E402
from supermask.interface.memory_report import forgetting_line, memory_line, memory_summary, weights_table  # noqa: E402
from supermask.interface.probe_report import plot_probes, probe_lines, probe_summary  # noqa: E402
from supermask.interface.reservoir_report import reservoir_report  # noqa: E402
from supermask.recipes.results import JobResult  # noqa: E402


def results_dict(spec: Spec, result: JobResult) -> dict:
    """The machine-readable summary of a run."""
    accs = [t.accuracy for t in result.tasks if t.accuracy is not None]
    every = [t.accuracy_all_outputs for t in result.tasks if t.accuracy_all_outputs is not None]
    memory = memory_summary(spec, result)
    return {
        "name": spec.name,
        "scenario": spec.run.scenario,
        "learn": spec.learn,  # masks, or weights (then see "weights")
        "weights": dataclasses.asdict(spec.weights) if spec.learn == "weights" else None,
        "avg_accuracy": sum(accs) / len(accs) if accs else None,
        # GG: argmax over every output (superfluous ones included), as the official SupSup code scores
        "avg_accuracy_all_outputs": sum(every) / len(every) if every else None,
        # GNs/GNu: fraction of test samples whose task was inferred right (None for GG and NNs)
        "task_inference_accuracy": result.task_inference_accuracy,
        "tasks": [
            {
                "task": t.task_id,
                "index": t.index,
                "accuracy": t.accuracy,
                "accuracy_all_outputs": t.accuracy_all_outputs,
                "density": t.density,
                "mask_bytes": t.mask_bytes,
                "train_accuracy": t.train_accuracy,
                "search_seconds": t.search_seconds,
                "resumed_from_store": t.skipped,
                "resumed_at_steps": t.resumed_at_steps,
                "error": t.error,
                "task_inference_accuracy": t.task_inference_accuracy,
                "gg_accuracy": t.gg_accuracy,
                "inferred": t.inferred,
                "stored_bytes": t.stored_bytes,
                "sparsity": t.sparsity,
                "accuracy_after_own_task": t.accuracy_after_own_task,
                "forgetting": t.forgetting,
            }
            for t in result.tasks
        ],
        "bytes_per_task": memory["bytes_per_task"] if memory else None,
        "memory": memory,  # what the method keeps for all tasks and per task (see interface/memory_report.py)
        "forgetting": result.forgetting,  # fine_tune: accuracy matrix and average forgetting
        "num_tasks": len(result.tasks),
        "failed_tasks": [t.task_id for t in result.tasks if t.error],
        "base_fingerprint": result.base_fingerprint,
        "provenance": result.provenance,
        "num_weights": result.num_weights,
        "data_source": result.data_source,
        "seconds": result.seconds,
        "learn_seconds": result.learn_seconds,
        "eval_seconds": result.eval_seconds,
        "timing": result.timing,
        "resources": result.resources,
        "strategy": result.strategy,
        "workers": result.workers,
        "stack_size": result.stack_size,
        "shards": result.shards,
        "inference": _inference_summary(spec, result),
        "nns": result.nns,
        "reservoir": result.reservoir,
        "spec": spec.to_dict(),
        "versions": {"supermask": __version__, "python": _platform.python_version()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def timing_line(timing: dict, total: float = 0.0) -> str:
    """Where a run's time went, in one line (`total`: the wall time when the command's own is not known)."""
    parts = [
        (label, timing.get(key))
        for label, key in (
            ("Ray start", "ray_start_seconds"),
            ("Train start", "train_start_seconds"),
            ("search", "search_seconds"),
            ("evaluation", "evaluate_seconds"),
            ("checkpoints", "checkpoint_seconds"),
            ("store writes", "store_seconds"),
            ("probes", "probe_seconds"),
            ("task inference", "inference_seconds"),
        )
    ]
    inner = ", ".join(f"{label} {value:.1f} s" for label, value in parts if value)
    total = timing.get("command_seconds", total)
    if not inner:
        return f"{total:.1f} s in all"
    return f"{total:.1f} s in all ({inner}; the search and what follows it summed over workers)"


LONG_STREAM = 30  # tasks beyond which accuracy is plotted against tasks learned, not as one bar per task


def plot_task_accuracy(results: dict, path: Path) -> None:
    """Accuracy per task (a bar each), or for a long stream against the number of tasks learned."""
    tasks = [t for t in results["tasks"] if t["accuracy"] is not None]
    if len(tasks) > LONG_STREAM:
        _plot_long_stream(results, tasks, path)
        return
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(tasks) + 2), 3.2))
    ax.bar([t["index"] for t in tasks], [t["accuracy"] for t in tasks], color="#4477aa")
    if results["avg_accuracy"] is not None:
        ax.axhline(
            results["avg_accuracy"], color="#cc6677", lw=1, label=f"mean {results['avg_accuracy']:.3f}"
        )
        ax.legend(loc="lower right")
    ax.set_xlabel("task")
    ax.set_ylabel(f"test accuracy ({results['scenario']})")
    ax.set_ylim(0, 1)
    ax.set_title(results["name"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _running_mean(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for i, v in enumerate(values, 1):
        total += v
        out.append(total / i)
    return out


def _plot_long_stream(results: dict, tasks: list[dict], path: Path) -> None:
    """Mean accuracy (and task-inference accuracy) over the first n tasks, against n, as SupSup plots it.

    Every point uses the final store: task inference chooses among all the run's masks, not among
    the first n.
    """
    n = [t["index"] + 1 for t in tasks]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(n, [t["accuracy"] for t in tasks], ".", ms=2, color="#4477aa", alpha=0.35, label="each task")
    ax.plot(
        n,
        _running_mean([t["accuracy"] for t in tasks]),
        color="#4477aa",
        lw=2,
        label="accuracy, mean of first n",
    )
    inferred = [t["task_inference_accuracy"] for t in tasks]
    if all(v is not None for v in inferred):
        ax.plot(n, _running_mean(inferred), color="#cc6677", lw=2, label="task inference, mean of first n")
    ax.set_xlabel("tasks learned (n)")
    ax.set_ylabel(f"test accuracy ({results['scenario']})")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"{results['name']}: {len(tasks)} tasks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(spec: Spec, result: JobResult, out_dir: Path) -> dict:
    """Write results.json, report.md, accuracy.png and the resolved spec into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results_dict(spec, result)
    results["probes"] = probe_summary(out_dir, result.timing)  # None when the run recorded no probes
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    (out_dir / "spec.yaml").write_text(dump_spec(spec))
    plot_task_accuracy(results, out_dir / "accuracy.png")
    avg = results["avg_accuracy"]
    lines = [
        f"# {spec.name}",
        "",
        f"Stream `{spec.stream.name}`, {results['num_tasks']} tasks, scenario {spec.run.scenario}; base "
        f"`{spec.base.arch}` ({spec.base.init}, seed {spec.base.seed}, fingerprint `{result.base_fingerprint}`); "
        + (
            f"trained weights `{spec.weights.method}` ({spec.weights.mode}, {spec.weights.dtype}"
            + "".join(f", {k} {v}" for k, v in spec.weights.options.items())
            + ")"
            if spec.learn == "weights"
            else f"mask `{spec.mask.method}`"
            + (f" at density {spec.mask.target_density}" if spec.mask.target_density is not None else "")
        )
        + ".",
        "",
        f"- average accuracy: **{avg:.4f}**"
        + (
            f" (argmax over all {spec.base.num_outputs} outputs, as SupSup's code scores it: "
            f"{results['avg_accuracy_all_outputs']:.4f})"
            if results["avg_accuracy_all_outputs"] is not None and results["avg_accuracy_all_outputs"] != avg
            else ""
        )
        if avg is not None
        else "- average accuracy: n/a (no task evaluated)",
        f"- data: {result.data_source}",
        f"- Ray Train: {result.strategy}, {result.workers} worker(s), up to {result.stack_size} task(s) searched as "
        f"one stack; mask store: {result.shards} shard(s)",
        f"- time: {timing_line(result.timing, result.seconds)}",
        f"- weights per mask: {result.num_weights:,}; bytes per stored mask: "
        f"{next((t.mask_bytes for t in result.tasks if t.mask_bytes), 0):,}"
        if spec.learn == "masks"
        else f"- weights per network: {result.num_weights:,}",
        *([f"- {memory_line(results['memory'])}"] if results["memory"] else []),
        *([f"- {forgetting_line(result.forgetting)}"] if result.forgetting else []),
        "",
        "![per-task accuracy](accuracy.png)",
        "",
        "| task | accuracy | density | mask bytes | train acc | search s | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines[lines.index("![per-task accuracy](accuracy.png)") : 0] = _scenario_lines(spec, results)
    if spec.run.scenario != "GG":
        lines[-2:] = _inference_table(spec, result)
    elif spec.learn == "weights":
        lines[-2:] = weights_table(result, fine_tune=spec.weights.mode == "fine_tune")
    else:
        for t in result.tasks:
            note = f"failed: {t.error}" if t.error else ("from store" if t.skipped else "")
            lines.append(
                f"| {t.task_id} | {_fmt(t.accuracy)} | {_fmt(t.density)} | {t.mask_bytes or ''} | "
                f"{_fmt(t.train_accuracy)} | {_fmt(t.search_seconds, 1)} | {note} |"
            )
    lines += reservoir_report(results, out_dir)
    lines += probe_lines(results["probes"], plot_probes(out_dir), spec.probes.every, spec.probes.scale)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return results


def _inference_summary(spec: Spec, result: JobResult) -> dict | None:
    """How tasks were inferred (GNs/GNu/NNs), with counts and time."""
    if spec.run.scenario == "GG":
        return None
    return {
        **dataclasses.asdict(spec.inference),
        "inferences": result.inferences,
        "among_masks": result.stored_masks,
        "seconds": result.inference_seconds,
    }


def _scenario_lines(spec: Spec, results: dict) -> list[str]:
    """Report lines that say what the scenario measured beyond the average accuracy."""
    inf = results["inference"]
    if inf is None:
        return []
    how = f"{inf['method']}, objective {inf['objective']}, " + (
        f"per batch of {inf['batch_size']} inferred from its first {inf['batch_images']} image(s)"
        if inf["mode"] == "per_batch"
        else "per sample"
    )
    if spec.run.scenario == "NNs":
        nns = results["nns"]
        return [
            f"- learned without task ids: **{nns['num_masks']} masks allocated for {nns['num_tasks']} tasks** "
            f"({nns['batches']} batches, a check every {spec.nns.check_every}, epsilon {spec.nns.epsilon})",
            f"- accuracy above: each test batch classified with the mask inferred for it ({how})",
            "",
        ]
    tia = results["task_inference_accuracy"]
    labels = (
        "unshared labels: right only if task and class are" if spec.run.scenario == "GNu" else "shared labels"
    )
    return [
        f"- task-inference accuracy: **{tia:.4f}** ({inf['inferences']} inferences among {inf['among_masks']} "
        f"stored masks: {how}; {inf['seconds']:.1f} s)"
        if tia is not None
        else "- task-inference accuracy: n/a",
        f"- average accuracy above is scenario {spec.run.scenario} ({labels}); the GG column uses each task's own mask",
        "",
    ]


def _inference_table(spec: Spec, result: JobResult) -> list[str]:
    """Per-task rows for the scenarios that infer masks: accuracy, task inference, the masks chosen."""
    rows = [
        "| task | accuracy | task inference | GG accuracy | inferred masks (test samples) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in result.tasks:
        picks = ", ".join(f"{k} ({v})" for k, v in list((t.inferred or {}).items())[:3])
        rows.append(
            f"| {t.task_id} | {_fmt(t.accuracy)} | {_fmt(t.task_inference_accuracy)} | "
            f"{_fmt(t.gg_accuracy)} | {picks} |"
        )
    return rows


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
