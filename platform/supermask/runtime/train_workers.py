"""What Ray Train's workers run, for every learner: take the plan, learn their blocks, store the records.

Imported only inside a worker (through runtime/train_entry.py), never by the Train controller.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import torch

from supermask.core.probes.search_probe import summary
from supermask.recipes.learn import BlockOutcome
from supermask.recipes.learners import BlockContext, Learner
from supermask.runtime.events import log_event
from supermask.runtime.placement import train_worker_device
from supermask.runtime.train_plan import Plan

PROGRESS_SECONDS = 2.0  # between a block's progress events


def free_bytes(device: str) -> int:
    """Free memory of a device: the GPU's, or this host's for a CPU worker."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _plan_from(box) -> Plan | None:
    """The plan a worker waits for in its run's PlanBox: a reference to it, or none (nothing to do)."""
    refs = ray.get(box.plan.remote())
    return ray.get(refs[0]) if refs else None


def _worker_setup(config: dict) -> tuple[Plan | None, int, int, object]:
    """What every Train worker starts with: its rank and world size, the learner's bench, and the plan."""
    learner: Learner = ray.get(config["learner"])
    box = config["box"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    started = time.perf_counter()
    bench = learner.bench(train_worker_device(learner.run))
    torch.set_float32_matmul_precision(learner.run.matmul_precision)
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


def _progress(plan: Plan, ids: list[str], every_s: float = PROGRESS_SECONDS) -> Callable[[int, int], None]:
    """How far a block is, as an event at most every `every_s` seconds and at its last step."""
    last = [time.monotonic()]

    def report(step: int, steps: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or step == steps:
            last[0] = now
            log_event(
                plan.events_path, "block_progress", first=ids[0], tasks=len(ids), step=step, steps=steps
            )

    return report


def learn_and_store(
    plan: Plan,
    bench,
    block: list[int],
    *,
    lead: bool = True,
    sync: dict | None = None,
    barrier: Callable[[], None] | None = None,
    **fields,
) -> tuple[int, list[dict]]:
    """Learn one block unless the store holds it, and on the lead rank store its records and drop its
    checkpoint; returns (tasks learned, the block's last probe records). `fields` go into its events."""
    ids = [bench.stream.task_id(t) for t in block]
    missing = set(plan.store.missing(ids))
    if not missing:
        return 0, []  # stored by an earlier attempt of this worker group
    events = plan.events_path

    def started(step: int) -> None:
        if barrier is not None:
            barrier()  # every rank has read the same checkpoint before the lead may write a newer one
        if lead:
            for task_id in ids:
                log_event(events, "task_started", task=task_id, from_step=step, **fields)

    ctx = BlockContext(
        out_dir=Path(plan.out_dir),
        checkpoint=plan.checkpoint(ids),
        policy=plan.policy(),
        lead=lead,
        store=plan.store,
        log=lambda event, **more: log_event(events, event, **more),
        progress=_progress(plan, ids) if lead else None,
        probe_sink=plan.probe_sink(),
        on_start=started,
        sync=sync or {},
    )
    outcome = plan.learner.learn_block(bench, block, ctx)
    if lead:
        _store_block(plan, outcome, missing, **fields)
    return len(missing), outcome.probe_records


def _store_block(plan: Plan, outcome: BlockOutcome, missing: set[str], **fields) -> None:
    """Put a block's new records in the store in one call, log each task, and drop the block's checkpoint."""
    records = [r for r in outcome.records if r.task_id in missing]
    started = time.perf_counter()
    written = plan.store.put_many(records)
    store_seconds = time.perf_counter() - started
    events = plan.events_path
    for record, was_written in zip(records, written, strict=True):
        log_event(
            events,
            "task_stored",
            task=record.task_id,
            written=was_written,
            **plan.learner.stored_fields(record),
            **fields,
        )
    log_event(
        events,
        "block_stored",
        tasks=[r.task_id for r in outcome.records],
        search_seconds=outcome.search_seconds,
        evaluate_seconds=outcome.evaluate_seconds,
        checkpoint_seconds=outcome.checkpoint_seconds,
        checkpoints=outcome.checkpoints,
        store_seconds=store_seconds,
        probe_seconds=outcome.probe_seconds,
        resumed_from_step=outcome.resumed_from_step,
        **fields,
    )
    checkpoint = plan.checkpoint([r.task_id for r in outcome.records])
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)


def _report(rank: int, learned: int, probed: list[dict]) -> None:
    """The worker's one Train report (a report is a barrier across workers, so there is one per worker):
    what it learned and the mean of its tasks' last probe records (the probe series are in metrics.jsonl)."""
    ray.train.report(
        {"rank": rank, "learned": learned, **{f"probe_{k}": v for k, v in summary(probed).items()}}
    )


def task_parallel_worker(config: dict) -> None:
    plan, rank, world, bench = _worker_setup(config)
    learned, probed = 0, []
    for block in plan.blocks[rank::world] if plan else []:
        done, probes = learn_and_store(plan, bench, block, rank=rank)
        learned, probed = learned + done, probed + probes
    _report(rank, learned, probed)


def data_parallel_worker(config: dict) -> None:
    import torch.distributed as dist

    plan, rank, world, bench = _worker_setup(config)
    sync = plan.learner.data_parallel(rank, world, bench.device) if plan else {}
    learned, probed = 0, []
    for block in plan.blocks if plan else []:
        done, probes = learn_and_store(
            plan, bench, block, lead=rank == 0, sync=sync, barrier=dist.barrier, world=world
        )
        dist.barrier()  # the lead has stored the block before any rank looks at the next
        learned, probed = learned + done, probed + probes
    _report(rank, learned, probed)
