"""Mask-search throughput for fc1024 on CPU: samples per second and tasks per hour.

    .venv/bin/python benchmarks/mask_search.py [--tasks 3] [--threads 1] [--out benchmarks/results/mask_search.json]

Runs SupSup's PermutedMNIST recipe (threshold masks, RMSprop) and the edge-popup recipe (top-k,
SGD) through the core search loop in this process (no Ray), one task after another, and writes
JSON. A "task" is the spec's full budget (3 epochs over the training split).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from supermask.config.spec import load_spec
from supermask.recipes.learn import learn_task
from supermask.recipes.recipe import Recipe, Workbench

ROOT = Path(__file__).resolve().parent.parent


def measure(spec_path: Path, tasks: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    spec = load_spec(spec_path, [f"stream.num_tasks={tasks}"])
    bench = Workbench(Recipe.from_spec(spec))  # stream and base built once, outside the timing
    stream = bench.stream
    rows = []
    for t in range(tasks):
        started = time.perf_counter()
        mask = learn_task(bench, t)
        seconds = time.perf_counter() - started
        samples = mask.metrics["steps"] * spec.search.batch_size
        rows.append(
            {
                "task": t,
                "seconds": seconds,
                "steps": mask.metrics["steps"],
                "samples": samples,
                "train_accuracy": mask.metrics["train_accuracy"],
            }
        )
    total = sum(r["seconds"] for r in rows)
    return {
        "spec": spec_path.name,
        "method": spec.mask.method,
        "optimizer": spec.search.optimizer,
        "data_source": stream.data_source,
        "train_samples_per_task": len(stream.task(0).train_x),
        "epochs": spec.search.epochs,
        "seconds_per_task": total / tasks,
        "tasks_per_hour": 3600 * tasks / total,
        "samples_per_second": sum(r["samples"] for r in rows) / total,
        "tasks": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mask_search.json")
    args = parser.parse_args()
    results = {
        "benchmark": "mask_search",
        "arch": "fc1024",
        "device": "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": torch.get_num_threads()},
        "runs": [
            measure(ROOT / "tasks" / name, args.tasks, args.threads)
            for name in ("permuted_mnist_supsup.yaml", "permuted_mnist_edgepopup.yaml")
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for run in results["runs"]:
        print(
            f"{run['spec']:<34} {run['samples_per_second']:>8.0f} samples/s  {run['tasks_per_hour']:>7.0f} tasks/h  "
            f"({run['seconds_per_task']:.1f} s/task, {args.threads} thread(s))"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
