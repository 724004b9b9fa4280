"""One Ray Train run (Train V2) for every learner: blocks of tasks, task-parallel or data-parallel.

- task_parallel: worker r of W learns blocks[r::W] (a stacked search of K tasks, or one translation
  task), measures each block there and puts its records in the store in one call. One Train run
  serves the whole stream, so start-up is paid once; a learner that learns task after task from the
  last (fine-tuning) gets one worker.
- data_parallel: all W workers learn each block together: each takes its slice of every global
  batch and the gradients are averaged with an all-reduce (gloo on CPU, NCCL on GPU).

Restarts: the store is the record of finished tasks, so a restarted worker group (Ray Train's
FailureConfig) or a rerun of the whole command skips them; an unfinished block continues from its
last checkpoint (checked against the recipe's provenance).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supermask.recipes.learners import Learner
from supermask.runtime import train_entry
from supermask.runtime.events import log_event
from supermask.runtime.placement import num_workers, worker_resources
from supermask.runtime.plan_box import PlanBox
from supermask.runtime.train_plan import Plan

log = logging.getLogger(__name__)


class TrainRun:
    """A Ray Train run started before its plan exists: workers start while the driver prepares.

    `free_bytes()` waits for every worker's free device memory; `start(plan)` hands them the plan
    (None: nothing to do, they end at once); `wait()` returns the run's seconds or raises what it raised.
    """

    def __init__(self, learner: Learner, out_dir: Path, num_todo: int) -> None:
        run = learner.run
        self.events_path = out_dir / "events.jsonl"
        workers = num_workers(run, num_todo, run.strategy == "task_parallel")
        self.workers = min(workers, learner.max_train_workers or workers)
        # The box lives on the driver's node: a worker node that dies takes its actors with it, and
        # restarted workers must still find their plan.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.box = PlanBox.options(scheduling_strategy=here).remote(self.workers)
        storage_path = Path(run.storage_path) if run.storage_path else out_dir / "train"
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
            train_loop_config={"learner": ray.put(learner), "box": self.box, "events": str(self.events_path)},
            scaling_config=ray.train.ScalingConfig(
                num_workers=self.workers, use_gpu=run.use_gpu, resources_per_worker=worker_resources(run)
            ),
            run_config=ray.train.RunConfig(
                name=f"{learner.recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage_path.resolve()),
                failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            ),
        )
        self._error: BaseException | None = None
        self._started = time.perf_counter()
        log_event(self.events_path, "train_started", workers=self.workers, strategy=run.strategy)
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

    def start(self, plan: Plan | None) -> None:
        if plan is not None:
            log.debug(
                "Ray Train: %s over %d worker(s), %d block(s) of up to %d task(s)",
                plan.learner.run.strategy,
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


class PendingTrain:
    """A Train run that may have started before its plan exists, used as a context manager around
    everything up to `start(plan)`: leaving the block without handing it a plan (nothing to learn, or
    an error on the way) abandons it: its workers are told there is nothing to do, and it is awaited."""

    def __init__(self, run: TrainRun | None = None) -> None:
        self.run = run
        self.planned = False

    def start(self, plan: Plan) -> TrainRun:
        """Hand the run its plan; it is no longer pending."""
        assert self.run is not None, "start a TrainRun before handing it a plan"
        self.run.start(plan)
        self.planned = True
        return self.run

    def __enter__(self) -> PendingTrain:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.run is None or self.planned:
            return
        self.run.start(None)
        try:
            self.run.wait()
        except Exception:  # the error that made us abandon it (if any) is the one to report
            log.debug("the abandoned Train run failed too", exc_info=True)
