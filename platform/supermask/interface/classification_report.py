"""The report sections of the learners of labelled tasks: supermasks (every scenario, and the Hopfield
reservoir), trained weights per task, and fine-tuning: results.json's keys, report.md with
accuracy.png, and the command's lines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from supermask.config.kinds import spec_kind  # noqa: E402
from supermask.config.spec import Spec  # noqa: E402
from supermask.interface.memory_report import forgetting_line, memory_line, memory_summary, weights_table  # noqa: E402
from supermask.interface.reservoir_report import reservoir_report, reservoir_summary  # noqa: E402
from supermask.interface.sections import RunSection, fmt, register_section, timing_line  # noqa: E402
from supermask.recipes.learners import FineTuneLearner, Learner, SupermaskLearner, WeightsLearner  # noqa: E402
from supermask.recipes.results import JobResult  # noqa: E402

LONG_STREAM = 30  # tasks beyond which accuracy is plotted against tasks learned, not as one bar per task


class ClassificationSection(RunSection):
    """What a run of labelled tasks reports: accuracy per task and on average, memory, timing."""

    learn = "masks"  # results.json's `learn`: masks, or weights for every kind that trains weights

    def weights_fields(self, spec: Spec) -> dict | None:
        """results.json's `weights`: the weights section and how each task's network was trained."""
        return spec_kind(spec.learn).record_fields(spec).get("weights")

    def headline(self, spec: Spec) -> str:
        kind = spec_kind(spec.learn)
        return f"{spec.stream.num_tasks} tasks of {spec.stream.name} on {spec.base.arch}, {kind.method_name(spec)}"

    def memory(self, spec: Spec, result: JobResult) -> dict | None:
        return memory_summary(
            result,
            "masks",
            None,
            "one packed mask per task (1 bit per weight); the base is rebuilt from its seed",
        )

    def results(self, spec: Spec, result: JobResult) -> dict:
        accs = [t.accuracy for t in result.tasks if t.accuracy is not None]
        every = [t.accuracy_all_outputs for t in result.tasks if t.accuracy_all_outputs is not None]
        memory = self.memory(spec, result)
        return {
            "scenario": spec.run.scenario,
            "learn": self.learn,  # masks, or weights (then see "weights")
            "weights": self.weights_fields(spec),
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
            "forgetting": result.forgetting,  # fine-tuning: accuracy matrix and average forgetting
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
        }

    def method_text(self, spec: Spec) -> str:
        """What learned each task, for report.md's first paragraph."""
        density = spec.mask.target_density
        return f"mask `{spec.mask.method}`" + (f" at density {density}" if density is not None else "")

    def size_line(self, result: JobResult) -> str:
        per_mask = next((t.mask_bytes for t in result.tasks if t.mask_bytes), 0)
        return f"- weights per mask: {result.num_weights:,}; bytes per stored mask: {per_mask:,}"

    def table(self, spec: Spec, result: JobResult) -> list[str]:
        """report.md's per-task table."""
        if spec.run.scenario != "GG":
            return _inference_table(result)
        rows = [
            "| task | accuracy | density | mask bytes | train acc | search s | note |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in result.tasks:
            note = f"failed: {t.error}" if t.error else ("from store" if t.skipped else "")
            rows.append(
                f"| {t.task_id} | {fmt(t.accuracy)} | {fmt(t.density)} | {t.mask_bytes or ''} | "
                f"{fmt(t.train_accuracy)} | {fmt(t.search_seconds, 1)} | {note} |"
            )
        return rows

    def markdown(self, spec: Spec, results: dict, result: JobResult, out_dir: Path) -> list[str]:
        plot_task_accuracy(results, out_dir / "accuracy.png")
        avg, every = results["avg_accuracy"], results["avg_accuracy_all_outputs"]
        return [
            f"# {spec.name}",
            "",
            f"Stream `{spec.stream.name}`, {results['num_tasks']} tasks, scenario {spec.run.scenario}; base "
            f"`{spec.base.arch}` ({spec.base.init}, seed {spec.base.seed}, fingerprint `{result.base_fingerprint}`); "
            f"{self.method_text(spec)}.",
            "",
            f"- average accuracy: **{avg:.4f}**"
            + (
                f" (argmax over all {spec.base.num_outputs} outputs, as SupSup's code scores it: {every:.4f})"
                if every is not None and every != avg
                else ""
            )
            if avg is not None
            else "- average accuracy: n/a (no task evaluated)",
            f"- data: {result.data_source}",
            f"- Ray Train: {result.strategy}, {result.workers} worker(s), up to {result.stack_size} task(s) searched "
            f"as one stack; mask store: {result.shards} shard(s)",
            f"- time: {timing_line(result.timing, result.seconds)}",
            self.size_line(result),
            *([f"- {memory_line(results['memory'])}"] if results["memory"] else []),
            *([f"- {forgetting_line(result.forgetting)}"] if result.forgetting else []),
            "",
            *_scenario_lines(spec, results),
            "![per-task accuracy](accuracy.png)",
            "",
            *self.table(spec, result),
            *reservoir_report(results, out_dir),
        ]

    def console(self, spec: Spec, learner: Learner, results: dict, out_dir: Path) -> list[str]:
        lines = []
        for t in results["tasks"]:
            acc = "failed: " + t["error"] if t["error"] else f"{t['accuracy']:.4f}"
            extra = f"  sparsity {t['sparsity']:.4f}" if t.get("sparsity") is not None else ""
            if t.get("forgetting") is not None:
                extra += f"  right after own task {t['accuracy_after_own_task']:.4f}  forgetting {t['forgetting']:+.4f}"
            lines.append(f"  {t['task']:<24} accuracy {acc}{extra}")
        avg = results["avg_accuracy"]
        lines.append(
            f"average accuracy ({spec.run.scenario}): {avg:.4f}"
            if avg is not None
            else "no task was evaluated"
        )
        outputs = learner.recipe.base.num_outputs
        if results.get("avg_accuracy_all_outputs") is not None and outputs > learner.recipe.num_classes:
            lines.append(
                f"average accuracy, argmax over all {outputs} outputs (as SupSup's code scores it): "
                f"{results['avg_accuracy_all_outputs']:.4f}"
            )
        lines += inference_lines(results) + reservoir_summary(results)
        if results[
            "memory"
        ]:  # None where the run's records give no size (the reservoir's bytes line says it)
            lines.append(memory_line(results["memory"]))
        if results.get("forgetting"):
            lines.append(forgetting_line(results["forgetting"]))
        lines.append(f"data: {results['data_source']}")
        lines.append(f"time: {timing_line(results['timing'], results['seconds'])}")
        return lines

    def infer_console(self, spec: Spec, results: dict) -> list[str]:
        """What `supermask infer` prints once done."""
        lines = [
            f"  {t['task']:<24} accuracy {t['accuracy']:.4f}  task inference {t['task_inference_accuracy']:.4f}"
            for t in results["tasks"]
        ]
        lines.append(f"average accuracy ({spec.run.scenario}): {results['avg_accuracy']:.4f}")
        return lines + inference_lines(results)


@register_section
class SupermaskSection(ClassificationSection):
    learner = SupermaskLearner


@register_section
class WeightsSection(ClassificationSection):
    learner = WeightsLearner
    learn = "weights"

    def memory(self, spec: Spec, result: JobResult) -> dict | None:
        kept = f"one trained network per task ({spec.weights.dtype}, sparse formats where they pay)"
        return memory_summary(result, "weights", self.weights_fields(spec)["mode"], kept)

    def method_text(self, spec: Spec) -> str:
        w = spec.weights
        options = "".join(f", {k} {v}" for k, v in w.options.items())
        return f"trained weights `{w.method}` ({self.weights_fields(spec)['mode']}, {w.dtype}{options})"

    def size_line(self, result: JobResult) -> str:
        return f"- weights per network: {result.num_weights:,}"

    def table(self, spec: Spec, result: JobResult) -> list[str]:
        return weights_table(result, forgetting=False)


@register_section
class FineTuneSection(WeightsSection):
    learner = FineTuneLearner

    def memory(self, spec: Spec, result: JobResult) -> dict | None:
        kept = "one fine-tuned network for every task (the last task's)"
        return memory_summary(result, "weights", self.weights_fields(spec)["mode"], kept, shared=True)

    def table(self, spec: Spec, result: JobResult) -> list[str]:
        return weights_table(result, forgetting=True)


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


def _inference_table(result: JobResult) -> list[str]:
    """Per-task rows for the scenarios that infer masks: accuracy, task inference, the masks chosen."""
    rows = [
        "| task | accuracy | task inference | GG accuracy | inferred masks (test samples) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in result.tasks:
        picks = ", ".join(f"{k} ({v})" for k, v in list((t.inferred or {}).items())[:3])
        rows.append(
            f"| {t.task_id} | {fmt(t.accuracy)} | {fmt(t.task_inference_accuracy)} | {fmt(t.gg_accuracy)} | {picks} |"
        )
    return rows


def inference_lines(results: dict) -> list[str]:
    """The command's task-inference lines of a GNs/GNu/NNs result."""
    lines = []
    if results.get("task_inference_accuracy") is not None:
        inf = results["inference"]
        lines.append(
            f"task-inference accuracy: {results['task_inference_accuracy']:.4f} ({inf['inferences']} inferences "
            f"among {inf['among_masks']} masks, {inf['method']} {inf['objective']} {inf['mode']}; {inf['seconds']:.1f} s)"
        )
    if results.get("nns"):
        nns = results["nns"]
        lines.append(f"masks allocated without task ids: {nns['num_masks']} for {nns['num_tasks']} tasks")
    return lines
