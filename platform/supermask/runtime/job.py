"""The job on Ray, one for every learner: learn what the store lacks as the learner schedules it (one Ray
Train run over its blocks, or one Ray task for the whole stream), keep the records in its store, and
evaluate the stream as the learner does; and `supermask infer`, evaluating a stored run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ray
import ray.train

from supermask.recipes.learners import Evaluation, Learner, Schedule
from supermask.recipes.results import JobResult, TaskOutcome
from supermask.runtime.bench_actors import on_benches
from supermask.runtime.events import read_events
from supermask.runtime.placement import actor_options, check_cluster, num_workers, process_device, stack_size
from supermask.runtime.progress import LearningProgress
from supermask.runtime.stores import open_client
from supermask.runtime.train_plan import Plan
from supermask.runtime.train_run import PendingTrain, TrainRun

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The learning could not finish; every record stored so far is kept, and a rerun resumes."""


def new_result(learner: Learner, strategy: str, shards: int, workers: int = 0) -> JobResult:
    """An empty JobResult for a learner's recipe (the resources of the connected Ray cluster, if any)."""
    recipe = learner.recipe
    resources = ray.cluster_resources() if ray.is_initialized() else {}
    return JobResult(
        base_fingerprint=recipe.base_fingerprint,
        provenance=recipe.provenance["hash"],
        data_source=recipe.data_source,
        num_weights=recipe.num_weights,
        resources={k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")},
        strategy=strategy,
        workers=workers,
        shards=shards,
    )


def run_job(learner: Learner, out_dir: Path, progress: bool = True, relearn: bool = False) -> JobResult:
    """Learn the learner's stream on the connected Ray into out_dir/store, then evaluate it.

    Stored records or checkpoints of other settings stop the job before it learns anything, unless
    `relearn` (then they are deleted and learned again). A fresh Ray Train run starts at once and the
    store opens while its workers start.
    """
    check_cluster(learner.run)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "store"
    early = learner.schedule is Schedule.TRAIN and not root.exists()
    with PendingTrain(
        TrainRun(learner, out_dir, learner.recipe.stream.num_tasks) if early else None
    ) as pending:
        store = learner.open_store(root, open_client)
        try:
            ids = learner.task_ids()
            todo = learner.prepare(store, ids, out_dir, relearn)
            if len(todo) < len(ids):
                log.info(
                    "%d of %d tasks are already stored; learning the other %d",
                    len(ids) - len(todo),
                    len(ids),
                    len(todo),
                )
            result = new_result(learner, learner.describe_strategy(), learner.store_shards(store))
            learned = None
            if learner.schedule is Schedule.ONE_TASK:
                learned = _learn_in_one_task(learner, result)
            else:
                _learn_on_train(learner, store, ids, todo, out_dir, result, progress, pending)
            left = set(todo)
            outcomes = {t: TaskOutcome(t, tid, skipped=t not in left) for t, tid in enumerate(ids)}
            _evaluate(learner, _evaluation(learner, store, ids, outcomes, result, progress, learned))
        finally:
            store.close()
    result.seconds = time.perf_counter() - started
    return result


@ray.remote
def _learn_stream(learner: Learner):
    return learner.learn_stream(learner.bench(process_device(learner.run)))


def _learn_in_one_task(learner: Learner, result: JobResult):
    """Schedule.ONE_TASK: the whole stream learned (and evaluated) in one Ray task; what it returned."""
    log.info(
        "learning %d tasks of %s in one Ray task", learner.recipe.stream.num_tasks, learner.recipe.stream.name
    )
    result.workers = 1
    return ray.get(_learn_stream.options(**actor_options(learner.run)).remote(learner))


def _learn_on_train(
    learner: Learner,
    store,
    ids: list[str],
    todo: list[int],
    out_dir: Path,
    result: JobResult,
    progress: bool,
    pending: PendingTrain,
) -> None:
    """Learn tasks `todo` on Ray Train into `store`, with a progress bar; fills the result's workers, stack
    size, learning seconds and timing. With nothing to do, a Train run started early is abandoned."""
    if not todo:
        return
    events = out_dir / "events.jsonl"
    train = pending.run = pending.run or TrainRun(learner, out_dir, len(todo))
    try:
        with LearningProgress([ids[t] for t in todo], events, learner.progress_label, progress) as bar:
            plan = _plan(learner, store, todo, out_dir, train)
            bar.started(learner.recipe.name, plan.blocks)
            result.workers, result.stack_size = train.workers, max(map(len, plan.blocks))
            pending.start(plan)
            result.learn_seconds = train.wait()
    except ray.train.TrainingFailedError as e:
        left = store.missing(ids)
        raise JobFailed(
            f"learning failed after {learner.run.max_failures} restart(s) with {len(left)} of {len(ids)} "
            f"tasks unlearned ({e}); the {len(ids) - len(left)} stored tasks are kept: run the same "
            "command again to resume, or see the worker logs above"
        ) from e
    result.timing.update(learn_timing(read_events(events), result.learn_seconds))


def _plan(learner: Learner, store, todo: list[int], out_dir: Path, train: TrainRun) -> Plan:
    """The learner's blocks, sized to the memory the Train workers report."""
    run = learner.run
    sharing = train.workers if run.strategy == "task_parallel" else 1  # workers the blocks are shared among
    task_bytes = learner.stack_bytes()
    most = 1
    if task_bytes is not None:
        most = stack_size(run, task_bytes, learner.recipe.stream.num_tasks, sharing, min(train.free_bytes()))
    return Plan(learner, store, learner.plan(todo, sharing, most), str(out_dir))


def _evaluation(
    learner: Learner, store, ids: list[str], outcomes: dict, result: JobResult, progress: bool, learned=None
) -> Evaluation:
    """What a learner evaluates with: the store, the outcomes to fill, and bench actors at hand."""

    def on(method: str, items: list, *, workers: int, desc: str, units=lambda item: 1) -> list:
        return on_benches(
            learner, store, method, items, workers=workers, desc=desc, units=units, progress=progress
        )

    return Evaluation(
        store,
        ids,
        outcomes,
        result,
        progress,
        on_benches=on,
        workers=lambda n: min(n, num_workers(learner.run, n)),
        learned=learned,
    )


def _evaluate(learner: Learner, ev: Evaluation, infer: bool = False) -> None:
    """The learner's evaluation (or, for `supermask infer`, its inference), timed; the tasks in stream order."""
    started = time.perf_counter()
    if infer:
        learner.infer(ev)
    else:
        learner.evaluate(ev)
    if not ev.result.eval_seconds:  # a learner that learned and evaluated in one task says it
        ev.result.eval_seconds = time.perf_counter() - started
    ev.result.tasks = [ev.outcomes[t] for t in sorted(ev.outcomes)]


def store_root(path: Path) -> Path:
    """The store folder of a run folder (PATH/store) or a store folder (PATH holding store.json)."""
    path = Path(path)
    for candidate in (path / "store", path):
        if (candidate / "store.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no mask store at {path}: pass a run folder (holding store/) or a store folder (holding store.json)"
    )


def run_inference(learner: Learner, root: Path, progress: bool = True) -> JobResult:
    """`supermask infer`: the learner's inference over the records stored at `root`, learning nothing."""
    check_cluster(learner.run)
    started = time.perf_counter()
    store = learner.open_store(root, open_client, create=False)
    try:
        ids = learner.task_ids()
        workers = min(len(ids), num_workers(learner.run, len(ids)))
        strategy = "no learning (records from the store); bench actors"
        result = new_result(learner, strategy, learner.store_shards(store), workers)
        outcomes = {t: TaskOutcome(t, tid, skipped=True) for t, tid in enumerate(ids)}
        _evaluate(learner, _evaluation(learner, store, ids, outcomes, result, progress), infer=True)
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result


def learn_timing(events: list[dict], learn_seconds: float) -> dict:
    """Where the learning phase's time went, from the workers' events: start-up, learning, evaluation,
    checkpoints and store writes (summed over workers), and the share checkpoints took."""
    begun = max((e["time"] for e in events if e["event"] == "train_started"), default=None)
    events = [e for e in events if begun is None or e["time"] >= begun]  # this run's, not an earlier one's
    ready = [e for e in events if e["event"] == "worker_ready"]
    blocks = [e for e in events if e["event"] == "block_stored"]
    search = sum(b["search_seconds"] for b in blocks)
    checkpoint = sum(b["checkpoint_seconds"] for b in blocks)
    return {
        "worker_setup_seconds": max((e["setup_seconds"] for e in ready), default=0.0),
        "train_start_seconds": (min(e["time"] for e in ready) - begun) if ready and begun else None,
        "search_seconds": search,
        "evaluate_seconds": sum(b["evaluate_seconds"] for b in blocks),
        "checkpoint_seconds": checkpoint,
        "checkpoints": sum(b["checkpoints"] for b in blocks),
        "checkpoint_share": checkpoint / search if search else 0.0,
        "store_seconds": sum(b["store_seconds"] for b in blocks),
        "probe_seconds": sum(b.get("probe_seconds", 0.0) for b in blocks),  # part of search_seconds
        "blocks": len(blocks),
    }
