"""Capacity of the Hopfield reservoir against packed bits at equal bytes (no trained network needed).

    nice -n 10 .venv/bin/python benchmarks/reservoir.py [--d 2048] [--probes 32] [--quick]
    nice -n 10 .venv/bin/python benchmarks/reservoir.py --rules projection --dtypes fp32 --no-dense \
        --out benchmarks/results/reservoir_projection.json --png docs/reservoir_capacity_projection.png

For random neuron patterns of d bits, p(m = 1) = 0.5 (independent) and 0.2 (biased, hence
correlated: masks of real tasks overlap, which is what hurts a Hopfield memory), stored one after
another, at each k of a grid:

- classical reservoir (`core.hopfield.reservoir.Reservoir`, one d x d matrix), Hebbian and Storkey rules (and,
  with `--rules`, the projection rule),
  fp32 / int8 (and fp16 for independent patterns): the fraction of stored patterns recovered exactly
  by synchronous sign descent from a start with 10% of the bits flipped, the mean Hamming distance
  left, sweeps to converge, and the fraction of stored patterns that are fixed points;
- the dense associative memory (benchmarks/dense_memory.py): the same patterns as packed bits with softmax
  retrieval, up to as many patterns as packed bits hold in the int8 and fp32 matrices' bytes;
- equal bytes: how many masks packed bits hold in each reservoir's bytes (bytes * 8 / d) against
  the largest k at which the reservoir still recovers >= 95% of its patterns.

Writes benchmarks/results/reservoir.json and docs/reservoir_capacity.png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dense_memory import dense_descent
from supermask.core.hopfield.reservoir import Reservoir, estimated_capacity, sync_descent

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("reservoir_benchmark")
CORRUPTION = 0.10
GOOD = 0.95  # a reservoir "holds" k patterns while it recovers at least this fraction exactly


def pattern_stream(d: int, p: float, seed: int):
    """An endless seeded stream of boolean patterns with p(m = 1) = p."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.random(d) < p


def corrupt(states: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Flip exactly round(fraction * d) random signs of every +-1 row."""
    out = states.copy()
    flips = int(round(fraction * states.shape[1]))
    for row in out:
        row[rng.choice(states.shape[1], flips, replace=False)] *= -1
    return out


def recall_row(final: np.ndarray, target: np.ndarray, steps: np.ndarray, converged: np.ndarray) -> dict:
    exact = (final == target).all(axis=1)
    return {
        "exact": float(exact.mean()),
        "hamming_mean": float((final != target).sum(axis=1).mean()),
        "steps_mean": float(steps.mean()),
        "converged": float(converged.mean()),
    }


def classical(d: int, rule: str, dtype: str, p: float, grid: list[int], probes: int, seed: int) -> dict:
    """Store patterns one by one; at each k of the grid measure recall from 10%-corrupted starts."""
    reservoir = Reservoir([d], rule, dtype)
    stream = pattern_stream(d, p, seed)
    rng = np.random.default_rng(seed + 1)
    stored: list[np.ndarray] = []
    rows, store_seconds = [], 0.0
    for k in grid:
        started = time.perf_counter()
        while len(stored) < k:
            stored.append(next(stream))
            reservoir.store([stored[-1]])
        store_seconds += time.perf_counter() - started
        idx = rng.choice(k, min(probes, k), replace=False)
        target = np.stack([np.where(stored[i], 1.0, -1.0) for i in idx]).astype(np.float32)
        off = reservoir.off_diagonal(0)
        stable, _, _ = sync_descent(off, target, max_steps=1)
        final, steps, converged = sync_descent(off, corrupt(target, CORRUPTION, rng), max_steps=50)
        row = {"k": k, **recall_row(final, target, steps, converged)}
        row["fixed_points"] = float((stable == target).all(axis=1).mean())
        rows.append(row)
        log.info(
            f"  {rule:7s} {dtype:4s} p={p} d={d} k={k:5d}: exact {row['exact']:.3f} "
            f"hamming {row['hamming_mean']:.1f} steps {row['steps_mean']:.1f} fixed {row['fixed_points']:.2f}"
        )
    return {
        "kind": "classical",
        "rule": rule,
        "dtype": dtype,
        "p": p,
        "d": d,
        "bytes": reservoir.nbytes,
        "estimated_capacity": estimated_capacity(d, rule),
        "rows": rows,
        "store_seconds": store_seconds,
        "int8_scale": reservoir._scale[0] if dtype == "int8" else None,
    }


def dense(d: int, p: float, grid: list[int], probes: int, seed: int) -> dict:
    """Packed-bit patterns with softmax retrieval (beta = 1/sqrt(d)) at each k of the grid."""
    rng = np.random.default_rng(seed + 1)
    gen = np.random.default_rng(seed)
    packed = np.zeros((0, (d + 7) // 8), dtype=np.uint8)
    rows = []
    beta = 1.0 / np.sqrt(d)
    for k in grid:
        while len(packed) < k:
            n = min(4096, k - len(packed))
            packed = np.concatenate([packed, np.packbits(gen.random((n, d)) < p, axis=1)])
        idx = rng.choice(k, min(probes, k), replace=False)
        target = np.unpackbits(packed[idx], axis=1, count=d).astype(np.float32) * 2 - 1
        started = time.perf_counter()
        final, steps, converged = dense_descent(
            packed[:k], corrupt(target, CORRUPTION, rng), beta, max_steps=20
        )
        row = {"k": k, **recall_row(final, target, steps, converged), "bytes": int(packed[:k].nbytes + 8 * d)}
        row["recall_seconds"] = time.perf_counter() - started
        rows.append(row)
        log.info(
            f"  dense        p={p} d={d} k={k:6d}: exact {row['exact']:.3f} steps {row['steps_mean']:.1f}"
        )
    return {"kind": "dense", "p": p, "d": d, "beta": beta, "rows": rows}


def holds(rows: list[dict]) -> int:
    """The largest grid k up to which every measured k recovers >= GOOD of its patterns exactly."""
    best = 0
    for row in rows:
        if row["exact"] < GOOD:
            break
        best = row["k"]
    return best


def plot(results: list[dict], d: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = {"hebbian": "tab:blue", "storkey": "tab:red", "projection": "tab:purple", "dense": "tab:green"}
    styles = {"fp32": "-", "fp16": ":", "int8": "--"}
    for r in results:
        if r["d"] != d:
            continue
        ks = [row["k"] for row in r["rows"]]
        exact = [row["exact"] for row in r["rows"]]
        marker = "o" if r["p"] == 0.5 else "x"
        if r["kind"] == "classical":
            label = f"{r['rule']} {r['dtype']}, p={r['p']}"
            ax.plot(
                ks, exact, styles[r["dtype"]], marker=marker, color=colors[r["rule"]], label=label, alpha=0.85
            )
        else:
            ax.plot(
                ks, exact, "-", marker=marker, color=colors["dense"], label=f"dense (packed bits), p={r['p']}"
            )
    for rule in sorted({r["rule"] for r in results if r["kind"] == "classical"}):
        ax.axvline(estimated_capacity(d, rule), color=colors[rule], lw=0.8, ls="-.")
    ax.set_xscale("log")
    ax.set_xlabel("patterns stored k")
    ax.set_ylabel("fraction recovered exactly (10% bits flipped)")
    ax.set_title(f"Recall at d = {d} (dash-dot: each rule's estimated capacity)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)

    ks = np.logspace(0, np.log10(64 * d), 50)
    bx.plot(ks, ks * d / 8, "k-", label="packed bits (k d / 8 bytes)")
    for dtype in ("fp32", "fp16", "int8"):
        held = {}
        for r in results:
            if r["kind"] == "classical" and r["d"] == d and r["p"] == 0.5 and r["dtype"] == dtype:
                held[r["rule"]] = (holds(r["rows"]), r["bytes"])
        if not held:
            continue
        size = next(iter(held.values()))[1]
        bx.axhline(size, color="grey", ls=styles[dtype], lw=0.8)
        for rule, (k, _) in held.items():
            if k:
                bx.plot([k], [size], "o", color=colors[rule])
        text = f"{dtype} matrix: " + ", ".join(f"{rule} {k}" for rule, (k, _) in held.items())
        bx.annotate(text, (1.2, size), fontsize=7, xytext=(0, 3), textcoords="offset points")
    for r in results:
        if r["kind"] == "dense" and r["d"] == d:
            k = holds(r["rows"])
            marker = "o" if r["p"] == 0.5 else "x"
            bx.plot(
                [k],
                [k * d / 8],
                marker,
                color=colors["dense"],
                label=f"dense memory: all {k} tested held, p={r['p']}",
            )
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("masks held (recovered >= 95%)")
    bx.set_ylabel("bytes")
    bx.set_title("Bytes vs masks held (p = 0.5; blue Hebbian, red Storkey, purple projection)")
    bx.legend(fontsize=7)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtypes", nargs="+", default=["fp32", "int8", "fp16"], help="for independent patterns"
    )
    parser.add_argument(
        "--rules", nargs="+", default=["hebbian", "storkey"], help="reservoir rules to measure"
    )
    parser.add_argument("--no-dense", action="store_true", help="skip the dense memory over packed bits")
    parser.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON and exit")
    parser.add_argument("--quick", action="store_true", help="d = 256 and short grids (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/reservoir.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs/reservoir_capacity.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if args.replot:
        saved = json.loads(args.out.read_text())
        plot(saved["results"], saved["setup"]["d"], args.png)
        return
    d = 256 if args.quick else args.d
    started = time.perf_counter()

    def grid(rule: str, p: float) -> list[int]:
        cap = estimated_capacity(d, rule)
        if p == 0.5:
            fractions = (0.0, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 1.0, 1.25, 1.5)
            return sorted({max(1, int(round(f * cap))) for f in fractions})
        return sorted({k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128) if k <= cap})

    configs = [(rule, dtype, 0.5) for rule in args.rules for dtype in args.dtypes]
    configs += [(rule, "fp32", 0.2) for rule in args.rules]
    results = []
    for rule, dtype, p in configs:
        t0 = time.perf_counter()
        res = classical(d, rule, dtype, p, grid(rule, p), args.probes, args.seed)
        res["seconds"] = time.perf_counter() - t0
        results.append(res)
    int8_bits = Reservoir([d], "storkey", "int8").packed_bits_equivalent()
    fp32_bits = Reservoir([d], "storkey", "fp32").packed_bits_equivalent()
    for p, top in () if args.no_dense else ((0.5, fp32_bits), (0.2, int8_bits)):
        t0 = time.perf_counter()
        ks = sorted({1, 64, 2 * estimated_capacity(d, "storkey"), int8_bits, top})
        res = dense(d, p, ks, args.probes if not args.quick else 16, args.seed)
        res["seconds"] = time.perf_counter() - t0
        results.append(res)

    table = []
    for r in results:
        if r["kind"] == "classical":
            held = holds(r["rows"])
            bits = r["bytes"] * 8 // d
            table.append(
                {
                    "memory": f"{r['rule']} {r['dtype']}",
                    "p": r["p"],
                    "bytes": r["bytes"],
                    "estimated_capacity": r["estimated_capacity"],
                    "holds_k": held,
                    "exact_at_estimate": next(
                        (row["exact"] for row in r["rows"] if row["k"] >= r["estimated_capacity"]), None
                    ),
                    "packed_bits_masks_same_bytes": bits,
                    "bits_over_reservoir": bits / held if held else None,
                    "steps_at_half_capacity": next(
                        (row["steps_mean"] for row in r["rows"] if row["k"] >= r["estimated_capacity"] // 2),
                        None,
                    ),
                }
            )
        else:
            last = r["rows"][-1]
            table.append(
                {
                    "memory": "dense (packed bits + softmax)",
                    "p": r["p"],
                    "bytes": last["bytes"],
                    "estimated_capacity": None,
                    "holds_k": holds(r["rows"]),
                    "exact_at_estimate": None,
                    "packed_bits_masks_same_bytes": last["k"],
                    "bits_over_reservoir": 1.0,
                    "steps_at_half_capacity": float(np.mean([row["steps_mean"] for row in r["rows"]])),
                }
            )
    out = {
        "setup": {
            "d": d,
            "corruption": CORRUPTION,
            "probes_per_k": args.probes,
            "recall": "synchronous sign descent on the off-diagonal field, max 50 sweeps; dense: softmax, max 20",
            "holds": f"largest grid k up to which every measured k recovers >= {GOOD} exactly",
            "seed": args.seed,
        },
        "table": table,
        "results": results,
        "device": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "note": "shared 2-core machine, run under nice -n 10",
        },
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    plot(results, d, args.png)
    print(
        f"\nd = {d}: memory | p | bytes | est. capacity | holds k (>= {GOOD:.0%} exact) | packed bits in same bytes"
    )
    for row in table:
        print(
            f"{row['memory']:30s} | {row['p']} | {row['bytes']:>11,} | {row['estimated_capacity'] or '-':>5} | "
            f"{row['holds_k']:>6} | {row['packed_bits_masks_same_bytes']:>7,}"
        )
    print(f"wrote {args.out} and {args.png} in {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
