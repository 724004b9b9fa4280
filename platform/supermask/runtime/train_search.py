"""Mask search on Ray Train (Train V2 `TorchTrainer`): task-parallel or data-parallel.

- task_parallel: worker r of W searches tasks todo[r::W], one after another, so one Train run
  (and its start-up) serves many tasks. Every finished mask goes to the mask store at once.
- data_parallel: all W workers search one task together: each takes its slice of every global
  batch and the score gradients are averaged with an all-reduce (gloo on CPU, NCCL on GPU).

Restarts: the store is the record of finished tasks, so a restarted worker group (Ray Train's
FailureConfig) or a rerun of the whole command skips them; an unfinished task continues from its
last checkpoint file under CHECKPOINTS/<task id>.pt.
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

from supermask.learn import learn_task, make_stream, new_search, save_checkpoint
from supermask.runtime.events import log_event
from supermask.runtime.mask_store import MaskStore
from supermask.spec import Spec

log = logging.getLogger(__name__)


@dataclass
class SearchPlan:
    """What one Train run must do; passed to every worker."""

    spec: Spec
    store: MaskStore
    todo: list[int]  # task indices not yet in the store
    checkpoint_dir: str
    events_path: str


def _device(spec: Spec) -> str:
    if spec.run.use_gpu and torch.cuda.is_available():
        return str(ray.train.torch.get_device())
    return "cpu"


def _worker_setup(config: dict):
    """What every Train worker starts with: the plan, its rank and world size, the stream, the device."""
    plan: SearchPlan = config["plan"]
    torch.set_num_threads(plan.spec.run.threads_per_worker)
    context = ray.train.get_context()
    return plan, context.get_world_rank(), context.get_world_size(), make_stream(plan.spec), _device(plan.spec)


def _task_parallel_worker(config: dict) -> None:
    plan, rank, world, stream, device = _worker_setup(config)
    spec = plan.spec
    mine = plan.todo[rank::world]
    missing = set(plan.store.missing([stream.task_id(t) for t in mine]))
    learned = 0
    for t in mine:
        task_id = stream.task_id(t)
        if task_id not in missing:
            continue  # stored by an earlier attempt of this worker group
        checkpoint = Path(plan.checkpoint_dir) / f"{task_id}.pt"

        def started(search, task_id=task_id):
            log_event(Path(plan.events_path), "task_started", task=task_id, from_step=search.step, rank=rank)

        mask = learn_task(
            spec,
            t,
            device,
            checkpoint_path=checkpoint,
            checkpoint_every=spec.run.checkpoint_every,
            on_start=started,
        )
        written = plan.store.put(mask)
        log_event(
            Path(plan.events_path),
            "task_stored",
            task=task_id,
            written=written,
            rank=rank,
            train_accuracy=mask.metrics["train_accuracy"],
            seconds=mask.metrics["seconds"],
        )
        checkpoint.unlink(missing_ok=True)
        learned += 1
    ray.train.report({"rank": rank, "learned": learned})


def _data_parallel_worker(config: dict) -> None:
    import torch.distributed as dist

    plan, rank, world, stream, device = _worker_setup(config)
    spec = plan.spec

    def average_gradients(method) -> None:
        for p in method.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world

    learned = 0
    for t in plan.todo:
        task_id = stream.task_id(t)
        if not plan.store.missing([task_id]):
            continue
        checkpoint = Path(plan.checkpoint_dir) / f"{task_id}.pt"
        search = new_search(spec, t, device, shard=(rank, world), grad_sync=average_gradients)
        if checkpoint.exists():
            search.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False))
        dist.barrier()  # every rank has read the same checkpoint before rank 0 may write a newer one
        if rank == 0:
            log_event(
                Path(plan.events_path), "task_started", task=task_id, from_step=search.step, world=world
            )
        while not search.done:
            search.run_step()
            every = spec.run.checkpoint_every
            if rank == 0 and every and search.step % every == 0 and not search.done:
                save_checkpoint(search.state_dict(), checkpoint)
        for value in search.bn_state.values():  # each rank saw only its slice of the batches
            dist.all_reduce(value)
            value /= world
        mask = search.result()
        mask.metrics.update(task_index=t, data_parallel_workers=world)
        if rank == 0:
            written = plan.store.put(mask)
            log_event(
                Path(plan.events_path),
                "task_stored",
                task=task_id,
                written=written,
                train_accuracy=mask.metrics["train_accuracy"],
                seconds=mask.metrics["seconds"],
            )
            checkpoint.unlink(missing_ok=True)
        dist.barrier()
        learned += 1
    ray.train.report({"rank": rank, "learned": learned})


def num_workers(spec: Spec, num_todo: int) -> int:
    """Workers for a Train run: the spec's number, else one per GPU (use_gpu) or per CPU slot."""
    if spec.run.num_workers:
        wanted = spec.run.num_workers
    elif spec.run.use_gpu:
        wanted = max(1, int(ray.cluster_resources().get("GPU", 0)))
    else:
        wanted = max(1, int(ray.cluster_resources().get("CPU", 1)) // spec.run.threads_per_worker)
    if spec.run.strategy == "task_parallel":
        wanted = min(wanted, max(num_todo, 1))
    return wanted


def run_search(plan: SearchPlan, storage_path: Path) -> float:
    """Run the plan as one Ray Train run; returns its wall-clock seconds."""
    spec = plan.spec
    workers = num_workers(spec, len(plan.todo))
    loop = _task_parallel_worker if spec.run.strategy == "task_parallel" else _data_parallel_worker
    storage_path.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        loop,
        train_loop_config={"plan": plan},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=spec.run.use_gpu,
            resources_per_worker={
                "CPU": spec.run.threads_per_worker,
                **({"GPU": 1} if spec.run.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage_path.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=spec.run.max_failures),
        ),
    )
    log.info(
        "Ray Train: %s over %d worker(s), %d task(s) to learn", spec.run.strategy, workers, len(plan.todo)
    )
    started = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - started


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / "checkpoints"
