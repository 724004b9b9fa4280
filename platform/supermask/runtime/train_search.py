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

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supermask.recipes.learn import CheckpointPolicy, block_name
from supermask.recipes.recipe import Recipe
from supermask.runtime import train_entry
from supermask.runtime.events import append_records, log_event
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import worker_resources

log = logging.getLogger(__name__)


@dataclass
class SearchPlan:
    """What the workers of a Train run must do, once the driver has worked it out."""

    recipe: Recipe
    store: MaskStore
    blocks: list[list[int]]  # task indices, each block one stacked search; only blocks with work left
    checkpoint_dir: str
    events_path: str
    metrics_path: str | None = None  # where the workers append their probe records (metrics.jsonl)

    def checkpoint(self, task_ids: list[str]) -> Path | None:
        if self.recipe.run.checkpoint_seconds == 0:
            return None
        return Path(self.checkpoint_dir) / f"{block_name(task_ids)}.pt"

    def probe_sink(self) -> Callable[[list[dict]], None] | None:
        """Where a worker's probe records go: lines of the run's metrics.jsonl (None: nowhere, no probes)."""
        if self.metrics_path is None:
            return None
        path = Path(self.metrics_path)
        return lambda records: append_records(path, records)

    def policy(self) -> CheckpointPolicy:
        return CheckpointPolicy(every=self.recipe.run.checkpoint_seconds)


@ray.remote(num_cpus=0)
class PlanBox:
    """Where the workers of a Train run that is starting report their free memory and wait for their plan.

    Ray Train takes seconds to start its workers; the driver opens the store and plans the blocks
    meanwhile, and sizes the blocks from the memory the workers report. The box keeps the plan as an
    object reference it never opens: unpickling a plan imports torch and the package, seconds of a
    small machine's time in a process that needs neither.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.free: dict[int, int] = {}
        self._reported = asyncio.Event()
        self._planned = asyncio.Event()
        self._plan: list[ray.ObjectRef] = []  # [plan] or [] (nothing to do), never resolved here

    async def report(self, rank: int, free_bytes: int) -> None:
        self.free[rank] = free_bytes
        if len(self.free) >= self.workers:
            self._reported.set()

    async def free_bytes(self) -> list[int]:
        await self._reported.wait()
        return [self.free[r] for r in sorted(self.free)]

    async def set_plan(self, plan: list[ray.ObjectRef]) -> None:
        self._plan = plan
        self._planned.set()

    async def plan(self) -> list[ray.ObjectRef]:
        await self._planned.wait()
        return self._plan


class TrainRun:
    """A Ray Train run started before its plan exists: workers start while the driver prepares.

    `free_bytes()` waits for every worker's free device memory; `start(plan)` hands them the plan
    (None: nothing to do, they end at once); `wait()` returns the run's seconds or raises what it raised.
    """

    def __init__(self, recipe: Recipe, workers: int, storage_path: Path, events_path: Path) -> None:
        run = recipe.run
        self.workers, self.events_path = workers, events_path
        # The box lives on the driver's node: a worker node that dies takes its actors with it, and
        # restarted workers must still find their plan.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.box = PlanBox.options(scheduling_strategy=here).remote(workers)
        storage_path.mkdir(parents=True, exist_ok=True)
        # Task-parallel workers never talk to each other, so they need no torch process group:
        # the plain trainer starts about 5 s sooner than TorchTrainer on a 2-core machine.
        trainer, loop = (
            (DataParallelTrainer, train_entry.task_parallel)
            if run.strategy == "task_parallel"
            else (TorchTrainer, train_entry.data_parallel)
        )
        self.trainer = trainer(
            loop,
            train_loop_config={"recipe": ray.put(recipe), "box": self.box, "events": str(events_path)},
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, use_gpu=run.use_gpu, resources_per_worker=worker_resources(run)
            ),
            run_config=ray.train.RunConfig(
                name=f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage_path.resolve()),
                failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            ),
        )
        self._error: BaseException | None = None
        self._started = time.perf_counter()
        log_event(events_path, "train_started", workers=workers, strategy=run.strategy)
        self._thread = threading.Thread(target=self._fit, daemon=True)
        self._thread.start()

    def _fit(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as e:  # handed to wait()
            self._error = e

    def free_bytes(self) -> list[int]:
        """Each worker's free device memory, once all have started (raises if the run fails first)."""
        ref = self.box.free_bytes.remote()
        while True:
            ready, _ = ray.wait([ref], timeout=0.5)
            if ready:
                return ray.get(ref)
            if not self._thread.is_alive():
                self.wait()
                raise RuntimeError("the Train run ended before its workers reported")

    def start(self, plan: SearchPlan | None) -> None:
        if plan is not None:
            log.debug(
                "Ray Train: %s over %d worker(s), %d block(s) of up to %d task(s)",
                plan.recipe.run.strategy,
                self.workers,
                len(plan.blocks),
                max(map(len, plan.blocks)),
            )
        ray.get(self.box.set_plan.remote([] if plan is None else [ray.put(plan)]))

    def wait(self) -> float:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return time.perf_counter() - self._started
