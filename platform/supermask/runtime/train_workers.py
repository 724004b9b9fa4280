"""What Ray Train's workers run: take the plan, search their blocks as stacks, evaluate, store.

Imported only inside a worker (through runtime/train_entry.py), never by the Train controller.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ray
import ray.train
import torch

from supermask.core.probes.search_probe import summary
from supermask.recipes.learn import BlockOutcome, learn_block
from supermask.recipes.recipe import Recipe, Workbench
from supermask.runtime.events import log_event
from supermask.runtime.placement import train_worker_device

if TYPE_CHECKING:
    from supermask.runtime.train_search import SearchPlan


def free_bytes(device: str) -> int:
    """Free memory of a device: the GPU's, or this host's for a CPU worker."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _plan_from(box) -> SearchPlan | None:
    """The plan a worker waits for in its run's PlanBox: a reference to it, or none (nothing to do)."""
    refs = ray.get(box.plan.remote())
    return ray.get(refs[0]) if refs else None


def _worker_setup(config: dict) -> tuple[SearchPlan | None, int, int, Workbench]:
    """What every Train worker starts with: its rank and world size, the built recipe, and the plan."""
    recipe: Recipe = ray.get(config["recipe"])
    box = config["box"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    started = time.perf_counter()
    bench = Workbench(recipe, train_worker_device(recipe.run))
    torch.set_float32_matmul_precision(recipe.run.matmul_precision)
    source = bench.stream.data_source  # loads the dataset while the driver plans
    log_event(
        Path(config["events"]),
        "worker_ready",
        rank=rank,
        device=bench.device,
        data_source=source,
        setup_seconds=time.perf_counter() - started,
    )
    ray.get(box.report.remote(rank, free_bytes(bench.device)))
    return _plan_from(box), rank, world, bench


def _store_block(
    plan: SearchPlan, bench: Workbench, outcome: BlockOutcome, missing: set[str], **fields
) -> None:
    """Put a block's new masks in the store in one call, log each task, and drop the block's checkpoint."""
    masks = [m for m in outcome.masks if m.task_id in missing]
    started = time.perf_counter()
    written = plan.store.put_many(masks)
    store_seconds = time.perf_counter() - started
    events = Path(plan.events_path)
    for mask, was_written in zip(masks, written, strict=True):
        log_event(
            events,
            "task_stored",
            task=mask.task_id,
            written=was_written,
            train_accuracy=mask.metrics["train_accuracy"],
            test_accuracy=mask.metrics.get("test_accuracy"),
            seconds=mask.metrics["seconds"],
            **fields,
        )
    log_event(
        events,
        "block_stored",
        tasks=[m.task_id for m in outcome.masks],
        search_seconds=outcome.search_seconds,
        evaluate_seconds=outcome.evaluate_seconds,
        checkpoint_seconds=outcome.checkpoint_seconds,
        checkpoints=outcome.checkpoints,
        store_seconds=store_seconds,
        probe_seconds=outcome.probe_seconds,
        **fields,
    )
    checkpoint = plan.checkpoint([m.task_id for m in outcome.masks])
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)


def _progress(plan: SearchPlan, ids: list[str], every_s: float = 2.0):
    """A step hook that logs how far a block is, at most every `every_s` seconds and at its last step."""
    last = [time.monotonic()]

    def hook(info) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or info.step == info.total_steps:
            last[0] = now
            log_event(
                Path(plan.events_path),
                "block_progress",
                first=ids[0],
                tasks=len(ids),
                step=info.step,
                steps=info.total_steps,
            )

    return hook


def _started(plan: SearchPlan, ids: list[str], **fields):
    def log_start(search) -> None:
        for task_id in ids:
            log_event(Path(plan.events_path), "task_started", task=task_id, from_step=search.step, **fields)

    return log_start


def _report(rank: int, learned: int, probed: list[dict]) -> None:
    """The worker's one Train report (a report is a barrier across workers, so there is one per worker):
    what it learned and the mean of its tasks' last probe records (the probe series are in metrics.jsonl)."""
    ray.train.report(
        {"rank": rank, "learned": learned, **{f"probe_{k}": v for k, v in summary(probed).items()}}
    )


def task_parallel_worker(config: dict) -> None:
    plan, rank, world, bench = _worker_setup(config)
    learned = 0
    probed: list[dict] = []
    for block in plan.blocks[rank::world] if plan else []:
        ids = [bench.stream.task_id(t) for t in block]
        missing = set(plan.store.missing(ids))
        if not missing:
            continue  # stored by an earlier attempt of this worker group
        outcome = learn_block(
            bench,
            block,
            checkpoint=plan.checkpoint(ids),
            policy=plan.policy(),
            on_start=_started(plan, ids, rank=rank),
            probe_sink=plan.probe_sink(),
            hooks=[_progress(plan, ids)],
        )
        _store_block(plan, bench, outcome, missing, rank=rank)
        learned += len(missing)
        probed += outcome.probe_records
    _report(rank, learned, probed)


def data_parallel_worker(config: dict) -> None:
    import torch.distributed as dist

    plan, rank, world, bench = _worker_setup(config)

    def average_gradients(method) -> None:
        for p in method.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world

    def average_bn_statistics(search) -> None:  # each rank saw only its slice of the batches
        for value in search.bn_state.values():
            dist.all_reduce(value)
            value /= world

    learned = 0
    probed: list[dict] = []
    for block in plan.blocks if plan else []:
        ids = [bench.stream.task_id(t) for t in block]
        missing = set(plan.store.missing(ids))
        if not missing:
            continue
        log_start = _started(plan, ids, world=world)

        def started(search, log_start=log_start):
            dist.barrier()  # every rank has read the same checkpoint before rank 0 may write a newer one
            if rank == 0:
                log_start(search)

        outcome = learn_block(
            bench,
            block,
            checkpoint=plan.checkpoint(ids),
            policy=plan.policy(),
            write_checkpoints=rank == 0,
            evaluate=rank == 0,
            hooks=[_progress(plan, ids)] if rank == 0 else [],
            on_start=started,
            before_result=average_bn_statistics,
            shard=(rank, world),
            grad_sync=average_gradients,
            probe_sink=plan.probe_sink() if rank == 0 else None,  # the scores are the same on every rank
        )
        for mask in outcome.masks:
            mask.metrics["data_parallel_workers"] = world
        if rank == 0:
            _store_block(plan, bench, outcome, missing)
        dist.barrier()
        learned += len(missing)
        probed += outcome.probe_records
    _report(rank, learned, probed)
