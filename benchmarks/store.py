"""Sharded mask-store throughput on Ray: put and get masks/s for fc1024 masks, and time to serve after kill -9.

    .venv/bin/python benchmarks/store.py [--masks 1000] [--shards 1 2 4] [--out benchmarks/results/store.json]

For each shard count, a fresh store (in a temporary folder under /tmp, deleted
at the end) receives `--masks` fc1024 masks (in-1024-1024-out on 784 inputs:
1,861,632 weights, 232,704 packed bytes; random bits, seeded), first one put()
at a time for a sample, then put_many; then get() and get_many read them back
(each record verified whole), and describe() reads every mask's metadata from
the shards' indexes.
Every put is durable (fsync'ed) before it returns. Finally, with one shard
holding all the masks (plus 20 more in its journal), the shard process is
killed with SIGKILL and the time until a get() succeeds again is measured
(process restart, imports, snapshot index and journal replay).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import ray

from supermask.core.records.packing import TaskMask
from supermask.runtime.mask_store import MaskStore

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(1024, 784), (1024, 1024), (10, 1024)]  # fc1024's masked weights
BATCH = 64  # masks per put_many / get_many call from this script


def make_mask(i: int) -> TaskMask:
    """Mask number i: random bits, a pure function of i."""
    nbytes = sum(int(np.prod(s)) for s in SHAPES) // 8
    packed = np.random.default_rng(i).integers(0, 256, nbytes, dtype=np.uint8)
    return TaskMask(
        task_id=f"bench-{i:05d}",
        packed=packed,
        layer_names=["net.1.weight", "net.4.weight", "net.7.weight"],
        layer_shapes=SHAPES,
        layer_density=[0.5, 0.5, 0.5],
        base_fingerprint="bench-fc1024",
        metrics={"accuracy": 0.9},
        created=time.time(),
    )


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def measure(root: Path, shards: int, masks: list[TaskMask], singles: int) -> dict:
    """Put and get throughput through a fresh store with this many shards."""
    store = MaskStore.open(root, shards)
    try:
        ids = [m.task_id for m in masks]
        started = time.perf_counter()
        for m in masks[:singles]:
            store.put(m)
        put_one = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(singles, len(masks), BATCH):
            store.put_many(masks[i : i + BATCH])
        put_many = time.perf_counter() - started
        started = time.perf_counter()
        for t in ids[:singles]:
            store.get(t)
        get_one = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, len(ids), BATCH):
            got = store.get_many(ids[i : i + BATCH])
            assert got[0].task_id == ids[i]
        get_many = time.perf_counter() - started
        started = time.perf_counter()
        described = store.describe()  # metadata of every mask from the shards' indexes, no bits read
        describe = time.perf_counter() - started
        assert len(described) == len(masks)
        stats = store.stats()
        assert stats["count"] == len(masks), stats["count"]
        return {
            "shards": shards,
            "masks": len(masks),
            "put_masks_per_s": rate(singles, put_one),
            "put_many_masks_per_s": rate(len(masks) - singles, put_many),
            "get_masks_per_s": rate(singles, get_one),
            "get_many_masks_per_s": rate(len(ids), get_many),
            "describe_masks_per_s": rate(len(ids), describe),
            "put_many_MB_per_s": rate((len(masks) - singles) * masks[0].mask_bytes / 1e6, put_many),
            "get_many_MB_per_s": rate(len(ids) * masks[0].mask_bytes / 1e6, get_many),
            "file_bytes": stats["file_bytes"],
            "journal_bytes": stats["journal_bytes"],
        }
    finally:
        store.close()


def time_to_serve(root: Path, kills: int, masks: list[TaskMask]) -> list[dict]:
    """Kill -9 the only shard of the store at root (which holds every mask); seconds until a get succeeds.

    Before each kill a few more masks are put, so the restarted shard replays a journal as well as
    reading its snapshot.
    """
    store = MaskStore.open(root)
    try:
        probe = store.list()[-1]
        rows = []
        for k in range(kills):
            extra = [replace(m, task_id=f"extra-{k}-{i:03d}") for i, m in enumerate(masks[:20])]
            store.put_many(extra)
            pid, stats = store.pids()[0], store.stats()
            os.kill(pid, signal.SIGKILL)
            started = time.perf_counter()
            store.get(probe)
            rows.append(
                {
                    "seconds": time.perf_counter() - started,
                    "masks": stats["count"],
                    "journal_bytes": stats["journal_bytes"],
                }
            )
        return rows
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=100, help="masks put and got one call at a time")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "store.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="supermask-store-bench-", dir="/tmp"))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=512 * 1024**2)
    try:
        masks = [make_mask(i) for i in range(args.masks)]
        runs = [measure(tmp / f"shards-{n}", n, masks, args.singles) for n in args.shards]
        one_shard = tmp / f"shards-{args.shards[0]}"
        if args.shards[0] != 1:
            measure(one_shard := tmp / "shards-1", 1, masks, args.singles)
        restarts = time_to_serve(one_shard, args.kills, masks)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "benchmark": "store",
        "mask": {
            "arch": "fc1024",
            "weights": masks[0].num_weights,
            "packed_bytes": masks[0].mask_bytes,
        },
        "batch": BATCH,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "ray": ray.__version__,
        "runs": runs,
        "time_to_serve_after_kill": restarts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{args.masks} fc1024 masks ({masks[0].mask_bytes:,} B each), masks/s:")
    print(f"{'shards':>6} {'put':>8} {'put_many':>9} {'get':>8} {'get_many':>9} {'describe':>9}")
    for r in runs:
        print(
            f"{r['shards']:>6} {r['put_masks_per_s']:>8.0f} {r['put_many_masks_per_s']:>9.0f} "
            f"{r['get_masks_per_s']:>8.0f} {r['get_many_masks_per_s']:>9.0f} {r['describe_masks_per_s']:>9.0f}"
        )
    secs = ", ".join(f"{k['seconds']:.2f}" for k in restarts)
    print(
        f"time to serve after kill -9 (one shard, {restarts[0]['masks']}+ masks, journal non-empty): {secs} s"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
