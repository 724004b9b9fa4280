"""Mask search on Ray Train (Train V2 `TorchTrainer`): task-parallel or data-parallel.

- task_parallel: worker r of W searches tasks todo[r::W], one after another, so one Train run
  (and its start-up) serves many tasks. Every finished mask goes to the mask store at once.
- data_parallel: all W workers search one task together: each takes its slice of every global
  batch and the score gradients are averaged with an all-reduce (gloo on CPU, NCCL on GPU).

Restarts: the store is the record of finished tasks, so a restarted worker group (Ray Train's
FailureConfig) or a rerun of the whole command skips them; an unfinished task continues from its
last checkpoint file under CHECKPOINTS/<task id>.pt (checked against the recipe's provenance).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer

from supermask.recipes.learn import learn_task
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
    todo: list[int]  # task indices not yet in the store
    checkpoint_dir: str
    events_path: str

    def checkpoint(self, task_id: str) -> Path:
        return Path(self.checkpoint_dir) / f"{task_id}.pt"


def _worker_setup(config: dict) -> tuple[SearchPlan, int, int, Workbench]:
    """What every Train worker starts with: the plan, its rank and world size, and the built recipe."""
    plan: SearchPlan = config["plan"]
    context = ray.train.get_context()
    bench = Workbench(plan.recipe, train_worker_device(plan.recipe.run))
    return plan, context.get_world_rank(), context.get_world_size(), bench


def _store(plan: SearchPlan, mask, t: int, **fields) -> None:
    written = plan.store.put(mask)
    log_event(
        Path(plan.events_path),
        "task_stored",
        task=mask.task_id,
        written=written,
        train_accuracy=mask.metrics["train_accuracy"],
        seconds=mask.metrics["seconds"],
        **fields,
    )
    plan.checkpoint(mask.task_id).unlink(missing_ok=True)


def _task_parallel_worker(config: dict) -> None:
    plan, rank, world, bench = _worker_setup(config)
    mine = plan.todo[rank::world]
    missing = set(plan.store.missing([bench.stream.task_id(t) for t in mine]))
    learned = 0
    for t in mine:
        task_id = bench.stream.task_id(t)
        if task_id not in missing:
            continue  # stored by an earlier attempt of this worker group

        def started(search, task_id=task_id):
            log_event(Path(plan.events_path), "task_started", task=task_id, from_step=search.step, rank=rank)

        mask = learn_task(
            bench,
            t,
            checkpoint=plan.checkpoint(task_id),
            checkpoint_every=plan.recipe.run.checkpoint_every,
            on_start=started,
        )
        _store(plan, mask, t, rank=rank)
        learned += 1
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
    for t in plan.todo:
        task_id = bench.stream.task_id(t)
        if not plan.store.missing([task_id]):
            continue

        def started(search, task_id=task_id):
            dist.barrier()  # every rank has read the same checkpoint before rank 0 may write a newer one
            if rank == 0:
                log_event(
                    Path(plan.events_path), "task_started", task=task_id, from_step=search.step, world=world
                )

        mask = learn_task(
            bench,
            t,
            checkpoint=plan.checkpoint(task_id),
            checkpoint_every=plan.recipe.run.checkpoint_every,
            write_checkpoints=rank == 0,
            on_start=started,
            before_result=average_bn_statistics,
            shard=(rank, world),
            grad_sync=average_gradients,
        )
        mask.metrics["data_parallel_workers"] = world
        if rank == 0:
            _store(plan, mask, t)
        dist.barrier()
        learned += 1
    ray.train.report({"rank": rank, "learned": learned})


def run_search(plan: SearchPlan, storage_path: Path) -> float:
    """Run the plan as one Ray Train run; returns its wall-clock seconds."""
    run = plan.recipe.run
    parallel_tasks = run.strategy == "task_parallel"
    workers = num_workers(run, len(plan.todo), parallel_tasks)
    loop = _task_parallel_worker if parallel_tasks else _data_parallel_worker
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
    log.info("Ray Train: %s over %d worker(s), %d task(s) to learn", run.strategy, workers, len(plan.todo))
    started = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - started
