"""What Ray Train's workers run for translation streams: train tasks, measure them, store their records.

Imported only inside a worker (through runtime/train_entry.py), never by the Train controller.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import ray
import ray.train
import torch

from supermask.recipes.learn import CheckpointPolicy
from supermask.recipes.translation import TranslationBench, TranslationRecipe, train_translation_task
from supermask.runtime.events import append_records, log_event
from supermask.runtime.placement import train_worker_device
from supermask.runtime.translation_store import TranslationStore

PROGRESS_SECONDS = 2.0  # between progress events of a task


def _setup(config: dict) -> tuple[TranslationRecipe, TranslationBench, TranslationStore, int, int]:
    recipe: TranslationRecipe = ray.get(config["recipe"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    started = time.perf_counter()
    bench = TranslationBench(recipe, train_worker_device(recipe.run))
    torch.set_float32_matmul_precision(recipe.run.matmul_precision)
    log_event(
        Path(config["events"]),
        "worker_ready",
        rank=rank,
        device=bench.device,
        setup_seconds=time.perf_counter() - started,
    )
    return recipe, bench, TranslationStore.open(Path(config["out_dir"]) / "store"), rank, world


def _progress_hook(events: Path, task_id: str):
    last = [time.perf_counter()]

    def hook(trainer, metrics: dict) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_SECONDS:
            last[0] = now
            log_event(
                events, "translation_progress", task=task_id, step=trainer.step, g_loss=metrics["g_loss"]
            )

    return hook


def _train(
    config: dict,
    recipe: TranslationRecipe,
    bench: TranslationBench,
    store: TranslationStore,
    t: int,
    lead: bool,
    **options,
) -> bool:
    """Train task t unless it is stored; the lead rank measures, checkpoints and stores. True if trained."""
    out_dir, events = Path(config["out_dir"]), Path(config["events"])
    task_id = bench.stream.task_id(t)
    if not store.missing([task_id]):
        return False  # stored by an earlier attempt of this worker group
    checkpoint = None if recipe.run.checkpoint_seconds == 0 else out_dir / "checkpoints" / f"{task_id}.pt"
    barrier = options.pop("barrier", None)

    def started(trainer) -> None:
        if barrier is not None:
            barrier()  # every rank has read the checkpoint before the lead may write a newer one
        if lead:
            log_event(events, "task_started", task=task_id, from_step=trainer.step)

    def measured(step: int, scores: dict) -> None:
        values = {d: (scores.get(d) or {}).get("symmetric_mean") for d in ("x_to_y", "y_to_x")}
        log_event(
            events,
            "translation_eval",
            task=task_id,
            step=step,
            hausdorff_score=scores.get("hausdorff_score"),
            cycle_l1_x=scores["cycle_l1_x"],
            **{d: v if v is not None and math.isfinite(v) else None for d, v in values.items()},
        )

    outcome = train_translation_task(
        bench,
        t,
        checkpoint=checkpoint,
        policy=CheckpointPolicy(every=recipe.run.checkpoint_seconds),
        write_checkpoints=lead,
        evaluate=lead,
        samples_dir=out_dir / "samples" / task_id if lead else None,
        on_start=started,
        on_eval=measured,
        hooks=[_progress_hook(events, task_id)] if lead else [],
        probe_sink=(lambda records: append_records(out_dir / "metrics.jsonl", records)) if lead else None,
        **options,
    )
    if lead:
        began = time.perf_counter()
        store.put(outcome.record)
        log_event(
            events,
            "task_stored",
            task=task_id,
            record_bytes=outcome.record.nbytes,
            array_bytes=outcome.record.nbytes,
            train_seconds=outcome.train_seconds,
            evaluate_seconds=outcome.evaluate_seconds,
            checkpoint_seconds=outcome.checkpoint_seconds,
            checkpoints=outcome.checkpoints,
            probe_seconds=outcome.probe_seconds,
            resumed_from_step=outcome.resumed_from_step,
            store_seconds=time.perf_counter() - began,
        )
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    return True


def task_parallel_worker(config: dict) -> None:
    recipe, bench, store, rank, world = _setup(config)
    trained = sum(_train(config, recipe, bench, store, t, True) for t in config["tasks"][rank::world])
    ray.train.report({"rank": rank, "trained": trained})


def data_parallel_worker(config: dict) -> None:
    import torch.distributed as dist

    recipe, bench, store, rank, world = _setup(config)

    def average_gradients(params) -> None:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world

    def average_values(values: dict[str, float]) -> dict[str, float]:
        names = sorted(values)
        t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=bench.device)
        dist.all_reduce(t)
        return {n: float(v) / world for n, v in zip(names, t.tolist(), strict=True)}

    trained = 0
    for t in config["tasks"]:
        trained += _train(
            config,
            recipe,
            bench,
            store,
            t,
            rank == 0,
            shard=(rank, world),
            grad_sync=average_gradients,
            value_sync=average_values,
            barrier=dist.barrier,
        )
        dist.barrier()  # the lead has stored the task before any rank looks at the next
    ray.train.report({"rank": rank, "trained": trained})
