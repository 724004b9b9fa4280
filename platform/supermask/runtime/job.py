"""The main job on Ray: learn every task of a stream with Ray Train, keep the masks in the sharded
store, evaluate scenario GG on base-network actors with masks read back from disk."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray.train
from tqdm.auto import tqdm

from supermask.learn import make_base, make_stream
from supermask.runtime.base_actors import base_pool
from supermask.runtime.events import read_events
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.train_search import SearchPlan, num_workers, run_search
from supermask.spec import Spec

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The search could not finish; every mask stored so far is kept, and a rerun resumes."""


@dataclass
class TaskOutcome:
    index: int
    task_id: str
    accuracy: float | None = None
    density: float | None = None
    mask_bytes: int | None = None
    train_accuracy: float | None = None
    search_seconds: float | None = None
    skipped: bool = False  # already in the store when this command started
    resumed_at_steps: list[int] = field(default_factory=list)
    error: str | None = None
    # GNs/GNu/NNs: accuracy above is the scenario's (with inferred masks)
    task_inference_accuracy: float | None = None
    gg_accuracy: float | None = None  # with the task's own mask
    inferred: dict[str, int] | None = None  # inferred mask id -> test samples


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
    strategy: str = ""
    workers: int = 0
    shards: int = 0
    task_inference_accuracy: float | None = None  # GNs/GNu: test samples whose task was inferred right
    inference_seconds: float = 0.0
    inferences: int = 0  # test batches (or samples) whose task was inferred
    stored_masks: int = 0  # masks the inference chose among
    nns: dict | None = None  # NNs: allocated masks against true tasks, and every check


class _StoreProgress:
    """A progress bar that follows the store: it counts tasks as their masks land."""

    def __init__(self, store: MaskStore, task_ids: list[str], events: Path, enabled: bool) -> None:
        self.store, self.task_ids, self.events = store, task_ids, events
        self.bar = tqdm(total=len(task_ids), desc="learning masks", unit="task", disable=not enabled)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._update()

    def _update(self) -> None:
        try:
            done = len(self.task_ids) - len(self.store.missing(self.task_ids))
        except Exception:  # a shard restarting: try again on the next tick
            return
        self.bar.update(done - self.bar.n)
        stored = [e for e in read_events(self.events) if e["event"] == "task_stored"]
        if stored:
            last = stored[-1]
            self.bar.set_postfix_str(f"{last['task']} train acc {last['train_accuracy']:.3f}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


def run_job(spec: Spec, out_dir: Path, progress: bool = True) -> JobResult:
    """Learn the spec's stream on the connected Ray, store masks under out_dir/store, evaluate its scenario.

    GG and GNs/GNu learn with Ray Train and evaluate on base actors; NNs learns without task ids in one
    Ray task (runtime/inference_job.py).
    """
    if spec.run.scenario == "NNs":
        from supermask.runtime.inference_job import run_nns

        return run_nns(spec, out_dir, progress)
    started = time.perf_counter()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = make_stream(spec)
    base = make_base(spec, stream)
    result = JobResult(
        base_fingerprint=base.fingerprint,
        data_source=stream.data_source,
        num_weights=sum(int(w.numel()) for w in base.weights()),
        resources={k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
        strategy=spec.run.strategy,
        shards=spec.run.shards,
    )
    store = MaskStore.open(out_dir / "store", spec.run.shards)
    try:
        _learn_and_evaluate(spec, out_dir, store, stream, base, result, progress)
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result


def _learn_and_evaluate(
    spec: Spec, out_dir: Path, store: MaskStore, stream, base, result: JobResult, progress: bool
) -> None:
    events = out_dir / "events.jsonl"
    outcomes = {t: TaskOutcome(t, stream.task_id(t)) for t in range(stream.num_tasks)}
    ids = [o.task_id for o in outcomes.values()]
    missing = set(store.missing(ids))
    for o in outcomes.values():
        o.skipped = o.task_id not in missing
    # A stored mask of another base is an error here, before any work, not a wrong answer later.
    for o in outcomes.values():
        if o.skipped:
            store.get(o.task_id, fingerprint=base.fingerprint)
    todo = [t for t, o in outcomes.items() if not o.skipped]
    if len(todo) < len(outcomes):
        log.info(
            "%d of %d tasks are already in the store; learning the other %d",
            len(outcomes) - len(todo),
            len(outcomes),
            len(todo),
        )

    if todo:
        plan = SearchPlan(spec, store, todo, str(out_dir / "checkpoints"), str(events))
        result.workers = num_workers(spec, len(todo))
        storage = Path(spec.run.storage_path) if spec.run.storage_path else out_dir / "train"
        try:
            with _StoreProgress(store, [stream.task_id(t) for t in todo], events, progress):
                result.learn_seconds = run_search(plan, storage)
        except ray.train.TrainingFailedError as e:
            left = store.missing(ids)
            raise JobFailed(
                f"mask search failed after {spec.run.max_failures} restart(s) with {len(left)} of {len(ids)} "
                f"tasks unlearned ({e}); the {len(ids) - len(left)} stored masks are kept: run the same "
                "command again to resume, or see the worker logs above"
            ) from e

    # Evaluate with every mask read back from the store's files by the base actors.
    eval_started = time.perf_counter()
    if spec.run.scenario in ("GNs", "GNu"):
        from supermask.runtime.inference_job import evaluate_gn, fill_gn_outcomes

        result.stored_masks = len(store)
        fill_gn_outcomes(
            outcomes, evaluate_gn(spec, store, base.fingerprint, list(outcomes), progress), result
        )
    else:
        pool = base_pool(spec, base.fingerprint, store, min(len(outcomes), num_workers(spec, len(outcomes))))
        with tqdm(total=len(outcomes), desc="evaluating (GG)", unit="task", disable=not progress) as bar:
            for t, accuracy in pool.map_unordered(lambda actor, t: actor.evaluate.remote(t), list(outcomes)):
                outcomes[t].accuracy = accuracy
                bar.update(1)
        for actor in pool._idle_actors:
            ray.kill(actor)
    for o, mask in zip(outcomes.values(), store.get_many(ids, fingerprint=base.fingerprint), strict=True):
        o.density, o.mask_bytes = mask.density, mask.mask_bytes
        o.train_accuracy = mask.metrics.get("train_accuracy")
        o.search_seconds = mask.metrics.get("seconds")
        o.resumed_at_steps = mask.metrics.get("resumed_at_steps", [])
    result.eval_seconds = time.perf_counter() - eval_started
    result.tasks = [outcomes[t] for t in sorted(outcomes)]
