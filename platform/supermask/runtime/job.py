"""The main job on Ray: learn every task of a stream as Ray tasks, store the masks, evaluate GG."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from tqdm.auto import tqdm

from supermask.core.packing import TaskMask
from supermask.learn import evaluate_task, learn_task, make_base, make_stream
from supermask.spec import Spec
from supermask.store.maskfile import MaskFile

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """Some tasks failed; the masks that were learned are kept in the store."""


@dataclass
class TaskOutcome:
    index: int
    task_id: str
    accuracy: float | None = None
    density: float | None = None
    mask_bytes: int | None = None
    train_accuracy: float | None = None
    search_seconds: float | None = None
    skipped: bool = False  # already in the store when the job started
    error: str | None = None


@dataclass
class JobResult:
    tasks: list[TaskOutcome] = field(default_factory=list)
    base_fingerprint: str = ""
    data_source: str = ""
    num_weights: int = 0
    seconds: float = 0.0
    learn_seconds: float = 0.0
    eval_seconds: float = 0.0
    resources: dict = field(default_factory=dict)


def _device(use_gpu: bool) -> str:
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


@ray.remote
def _learn_remote(spec: Spec, t: int) -> TaskMask:
    torch.set_num_threads(spec.run.threads_per_task)
    return learn_task(spec, t, device=_device(spec.run.use_gpu))


@ray.remote
def _evaluate_remote(spec: Spec, t: int, mask: TaskMask) -> float:
    torch.set_num_threads(spec.run.threads_per_task)
    return evaluate_task(spec, t, mask, device=_device(spec.run.use_gpu))


def _task_options(spec: Spec) -> dict:
    if spec.run.use_gpu:
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": spec.run.threads_per_task}


def _concurrency(spec: Spec, resources: dict) -> int:
    if spec.run.concurrency:
        return spec.run.concurrency
    if spec.run.use_gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) // spec.run.threads_per_task)


def _run_bounded(remote_fn, spec: Spec, work: list, limit: int, on_done, desc: str, progress: bool) -> None:
    """Submit `remote_fn(spec, *args)` for each item, at most `limit` in flight, calling on_done as they finish."""
    pending: dict = {}
    queue = list(work)
    bar = tqdm(total=len(work), desc=desc, unit="task", disable=not progress)
    options = _task_options(spec)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                args = queue.pop(0)
                pending[remote_fn.options(**options).remote(spec, *args)] = args
            done, _ = ray.wait(list(pending), num_returns=1)
            args = pending.pop(done[0])
            try:
                value, error = ray.get(done[0]), None
            except ray.exceptions.RayError as e:
                value, error = None, e
            postfix = on_done(args, value, error)
            bar.update(1)
            if postfix:
                bar.set_postfix_str(postfix)
    finally:
        bar.close()


def run_job(spec: Spec, out_dir: Path, progress: bool = True) -> JobResult:
    """Learn the spec's stream on the connected Ray, store masks under out_dir/store, evaluate GG."""
    started = time.perf_counter()
    stream = make_stream(spec)
    base = make_base(spec, stream)
    result = JobResult(
        base_fingerprint=base.fingerprint,
        data_source=stream.data_source,
        num_weights=sum(int(torch.tensor(s).prod()) for s in base.layer_shapes),
        resources={k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
    )
    store_path = out_dir / "store" / "masks.h5"
    store_path.parent.mkdir(parents=True, exist_ok=True)
    outcomes = {t: TaskOutcome(t, stream.task_id(t)) for t in range(stream.num_tasks)}
    limit = _concurrency(spec, ray.cluster_resources())

    with MaskFile(store_path) as store:
        todo = []
        for t, outcome in outcomes.items():
            if outcome.task_id in store:
                store.get(outcome.task_id, fingerprint=base.fingerprint)  # a mask of another base is an error
                outcome.skipped = True
            else:
                todo.append((t,))
        if len(todo) < len(outcomes):
            log.info(
                "%d of %d tasks are already in %s; learning the rest",
                len(outcomes) - len(todo),
                len(outcomes),
                store_path,
            )

        def stored(args, mask: TaskMask | None, error):
            outcome = outcomes[args[0]]
            if error is not None:
                outcome.error = str(error).strip().splitlines()[-1]
                log.error("task %s failed: %s", outcome.task_id, outcome.error)
                return f"{outcome.task_id} FAILED"
            store.put(mask)
            return f"{mask.task_id} train acc {mask.metrics['train_accuracy']:.3f}"

        learn_started = time.perf_counter()
        _run_bounded(_learn_remote, spec, todo, limit, stored, "learning masks", progress)
        result.learn_seconds = time.perf_counter() - learn_started

    # Evaluate with every mask read back from disk, not from what the workers returned.
    eval_started = time.perf_counter()
    with MaskFile(store_path) as store:
        work = []
        for t, outcome in outcomes.items():
            if outcome.error is not None:
                continue
            mask = store.get(outcome.task_id, fingerprint=base.fingerprint)
            outcome.density, outcome.mask_bytes = mask.density, mask.mask_bytes
            outcome.train_accuracy = mask.metrics.get("train_accuracy")
            outcome.search_seconds = mask.metrics.get("seconds")
            work.append((t, ray.put(mask)))

    def evaluated(args, accuracy: float | None, error):
        outcome = outcomes[args[0]]
        if error is not None:
            outcome.error = str(error).strip().splitlines()[-1]
            return f"{outcome.task_id} FAILED"
        outcome.accuracy = accuracy
        return f"{outcome.task_id} acc {accuracy:.3f}"

    _run_bounded(_evaluate_remote, spec, work, limit, evaluated, "evaluating (GG)", progress)
    result.eval_seconds = time.perf_counter() - eval_started
    result.tasks = [outcomes[t] for t in sorted(outcomes)]
    result.seconds = time.perf_counter() - started
    return result
