"""The reservoir part of a run's outputs: the CLI's summary lines, report.md and recovery.png."""

from __future__ import annotations

from pathlib import Path


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n:,} B"


def reservoir_summary(results: dict) -> list[str]:
    """The CLI's lines about the reservoirs and recovery without task ids."""
    res = results.get("reservoir")
    if not res:
        return []
    rec = res["recovery"]
    nearest = rec["picked_nearest_right"]
    lines = [
        f"reservoir ({res['kind']}): {res['patterns_stored']} patterns in {res['shards']} {res['rule']} {res['dtype']} "
        f"reservoir(s) of {'+'.join(str(d) for d in res['dims'])} neurons; estimated capacity {res['estimated_capacity']}",
        f"recovery without task ids ({rec['batches']} test batches of ~{rec['batch_size']} images, {rec['steps']} "
        f"steps, start {rec['start']}): picked the right attractor {rec['picked_right_attractor']:.4f}"
        + (f", nearest to the right pattern {nearest:.4f}" if nearest is not None else "")
        + f"; accuracy {rec['accuracy']:.4f}; steps to converge mean {rec['converged_step_mean']:.1f}, "
        f"max {rec['converged_step_max']}; {rec['seconds']:.1f} s",
        f"bytes: reservoir {_mb(res['reservoir_bytes'])} (on disk now "
        f"{_mb(res['reservoir_file_bytes'])}: the journal holds patterns until a compaction writes the "
        "matrices); exact store "
        f"{_mb(res['exact_store_bytes'])}"
        + (" as weight masks" if res["exact_store_bytes"] else "")
        + f"; the same patterns as packed neuron bits {_mb(res['neuron_bits_bytes'])}; packed bits hold "
        f"{res['packed_bits_masks_same_bytes']:,} neuron masks in the reservoir's bytes",
    ]
    return lines


def reservoir_report(results: dict, out_dir: Path) -> list[str]:
    """report.md lines (and recovery.png) for a run that kept reservoirs; none for one that did not."""
    res = results.get("reservoir")
    if not res:
        return []
    rec = res["recovery"]
    gg = {t["task"]: t["accuracy"] for t in results["tasks"]}
    _plot(rec, gg, out_dir / "recovery.png")
    nearest = rec["picked_nearest_right"]
    lines = [
        "",
        "## Hopfield reservoir: recovery without task ids",
        "",
        *[f"- {line}" for line in reservoir_summary(results)],
        f"- recovery settings: lr {rec['lr']}, momentum {rec['momentum']}, weight decay {rec['weight_decay']}, "
        f"gamma {rec['gamma']}, start {rec['start']}, {rec['steps']} steps per batch, recall {rec['recall']}, "
        f"one-shot score over the reservoirs' attractors {rec.get('one_shot', False)}"
        + (
            f" ({rec['candidates_mean']:.1f} candidates per batch; the settled annealed end kept for "
            f"{rec['kept_annealed_end']:.3f} of batches)"
            if rec.get("one_shot") and "candidates_mean" in rec
            else ""
        ),
        "- a batch picked the right attractor when the pattern kept for it is exactly its task's stored pattern "
        "(the digest each reservoir keeps)"
        + (
            "; 'nearest' compares Hamming distances to every exact stored pattern"
            if nearest is not None
            else ""
        ),
        "",
        "![GG accuracy and recovery without task ids](recovery.png)",
        "",
        "| task | GG accuracy | recovery accuracy | right attractor | nearest right | steps to converge (mean) | picked |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in rec["tasks"]:
        steps = sum(t["converged_steps"]) / max(len(t["converged_steps"]), 1)
        near = "" if t["picked_nearest_right"] is None else f"{t['picked_nearest_right']:.3f}"
        picked = ", ".join(f"{k} ({v})" for k, v in list(t["picked"].items())[:3])
        acc = gg.get(t["task"])
        lines.append(
            f"| {t['task']} | {'' if acc is None else f'{acc:.4f}'} | {t['accuracy']:.4f} | "
            f"{t['picked_right_attractor']:.3f} | {near} | {steps:.1f} | {picked} |"
        )
    return lines


def _plot(rec: dict, gg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = rec["tasks"]
    xs = range(len(tasks))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(tasks) + 2), 3.2))
    width = 0.27
    ax.bar(
        [x - width for x in xs], [gg.get(t["task"]) or 0 for t in tasks], width, label="GG (task id given)"
    )
    ax.bar(list(xs), [t["accuracy"] for t in tasks], width, label="recovered, no task id")
    ax.bar(
        [x + width for x in xs], [t["picked_right_attractor"] for t in tasks], width, label="right attractor"
    )
    ax.set_xticks(list(xs), [t["task"].rsplit("-", 1)[-1] for t in tasks])
    ax.set_xlabel("task")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
