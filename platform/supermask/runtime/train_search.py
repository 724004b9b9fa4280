"""Mask search on Ray Train (Train V2 `TorchTrainer`): blocks of tasks, task-parallel or data-parallel.

- task_parallel: worker r of W searches blocks[r::W], each block of K tasks as one stacked search on
  its device, evaluates the block there (GG) and puts its masks in the store in one call. One Train
  run serves the whole stream, so start-up is paid once.
- data_parallel: all W workers search each block together: each takes its slice of every global
  batch and the score gradients are averaged with an all-reduce (gloo on CPU, NCCL on GPU).

Restarts: the store is the record of finished tasks, so a restarted worker group (Ray Train's
FailureConfig) or a rerun of the whole command skips them; an unfinished block continues from its
last checkpoint, CHECKPOINTS/<first task>+<more>.pt (checked against the recipe's provenance).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from supermask.recipes.learn import BlockOutcome, CheckpointPolicy, block_name, learn_block
from supermask.recipes.recipe import Recipe, Workbench
from supermask.runtime.events import log_event
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import num_workers, train_worker_device, worker_resources

log = logging.getLogger(__name__)


@dataclass
class SearchPlan:
    """What one Train run must do; passed to every worker."""

    recipe: Recipe
    store: MaskStore
    blocks: list[list[int]]  # task indices, each block one stacked search; only blocks with work left
    checkpoint_dir: str
    events_path: str

    def checkpoint(self, task_ids: list[str]) -> Path | None:
        if self.recipe.run.checkpoint_seconds == 0:
            return None
        return Path(self.checkpoint_dir) / f"{block_name(task_ids)}.pt"

    def policy(self) -> CheckpointPolicy:
        return CheckpointPolicy(every=self.recipe.run.checkpoint_seconds)


def _worker_setup(config: dict) -> tuple[SearchPlan, int, int, Workbench]:
    """What every Train worker starts with: the plan, its rank and world size, and the built recipe."""
    plan: SearchPlan = config["plan"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    started = time.perf_counter()
    bench = Workbench(plan.recipe, train_worker_device(plan.recipe.run))
    torch.set_float32_matmul_precision(plan.recipe.run.matmul_precision)
    log_event(
        Path(plan.events_path),
        "worker_ready",
        rank=rank,
        device=bench.device,
        setup_seconds=time.perf_counter() - started,
    )
    return plan, rank, world, bench


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
        **fields,
    )
    checkpoint = plan.checkpoint([m.task_id for m in outcome.masks])
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)


def _started(plan: SearchPlan, ids: list[str], **fields):
    def log_start(search) -> None:
        for task_id in ids:
            log_event(Path(plan.events_path), "task_started", task=task_id, from_step=search.step, **fields)

    return log_start


def _task_parallel_worker(config: dict) -> None:
    plan, rank, world, bench = _worker_setup(config)
    learned = 0
    for block in plan.blocks[rank::world]:
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
        )
        _store_block(plan, bench, outcome, missing, rank=rank)
        learned += len(missing)
    ray.train.report({"rank": rank, "learned": learned})


def _data_parallel_worker(config: dict) -> None:
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
    for block in plan.blocks:
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
            on_start=started,
            before_result=average_bn_statistics,
            shard=(rank, world),
            grad_sync=average_gradients,
        )
        for mask in outcome.masks:
            mask.metrics["data_parallel_workers"] = world
        if rank == 0:
            _store_block(plan, bench, outcome, missing)
        dist.barrier()
        learned += len(missing)
    ray.train.report({"rank": rank, "learned": learned})


def run_search(plan: SearchPlan, storage_path: Path) -> float:
    """Run the plan as one Ray Train run; returns its wall-clock seconds."""
    run = plan.recipe.run
    parallel_blocks = run.strategy == "task_parallel"
    workers = num_workers(run, len(plan.blocks), parallel_blocks)
    loop = _task_parallel_worker if parallel_blocks else _data_parallel_worker
    storage_path.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        loop,
        train_loop_config={"plan": plan},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=run.use_gpu, resources_per_worker=worker_resources(run)
        ),
        run_config=ray.train.RunConfig(
            name=f"{plan.recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage_path.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
        ),
    )
    tasks = sum(len(b) for b in plan.blocks)
    log.info(
        "Ray Train: %s over %d worker(s), %d block(s) of up to %d task(s), %d task(s) in all",
        run.strategy,
        workers,
        len(plan.blocks),
        max(map(len, plan.blocks)),
        tasks,
    )
    started = time.perf_counter()
    log_event(Path(plan.events_path), "train_started", workers=workers, blocks=len(plan.blocks))
    trainer.fit()
    return time.perf_counter() - started
