"""The main job on Ray: learn every task of a recipe's stream with Ray Train in stacked blocks, keep
the masks in the sharded store, and evaluate the scenario: GG from what the workers measured on
their devices, GNs/GNu on base-network actors that infer each test batch's task among the stored masks."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import ray
import ray.train
from tqdm.auto import tqdm

from supermask.data import stream_of
from supermask.recipes.checkpoints import load_checkpoint
from supermask.recipes.learn import plan_blocks
from supermask.recipes.recipe import Recipe, stale_tasks
from supermask.recipes.results import JobResult, TaskOutcome, fill_from_record
from supermask.runtime.base_actors import base_pool, close_pool
from supermask.runtime.events import read_events
from supermask.runtime.inference_job import evaluate_gn, fill_gn_outcomes, new_result, run_nns
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import check_cluster, num_workers, stack_size
from supermask.runtime.train_search import SearchPlan, TrainRun

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The search could not finish; every mask stored so far is kept, and a rerun resumes."""


class _LearningProgress:
    """A progress bar in tasks that follows the workers' events: stored tasks, and the share of its
    steps each block in progress has taken (a block's tasks finish together)."""

    def __init__(self, task_ids: list[str], events: Path, enabled: bool) -> None:
        self.task_ids, self.events = set(task_ids), events
        self.bar = tqdm(
            total=len(task_ids), desc="learning masks", unit="task", disable=not enabled, bar_format=_BAR
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._since = time.time()
        self.bar.set_postfix_str("starting Ray Train workers")

    def started(self, plan) -> None:
        self.bar.set_postfix_str(
            f"{len(plan.blocks)} block(s) of up to {max(map(len, plan.blocks))} task(s) on {plan.recipe.name}"
        )

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._update()

    def _update(self) -> None:
        events = [e for e in read_events(self.events) if e["time"] >= self._since]
        stored = {e["task"] for e in events if e["event"] == "task_stored"} & self.task_ids
        blocks = {}
        for e in events:
            if e["event"] == "block_progress":
                blocks[e["first"]] = e
        partial = sum(
            b["tasks"] * b["step"] / b["steps"] for first, b in blocks.items() if first not in stored
        )
        self.bar.n = round(len(stored) + partial, 2)
        last = [e for e in events if e["event"] == "task_stored"]
        if stored and last:
            self.bar.set_postfix_str(f"{last[-1]['task']} test acc {last[-1].get('test_accuracy') or 0:.3f}")
        self.bar.refresh()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


_BAR = "{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def run_job(recipe: Recipe, out_dir: Path, progress: bool = True, relearn: bool = False) -> JobResult:
    """Learn the recipe's stream on the connected Ray, store masks under out_dir/store, evaluate its scenario.

    GG and GNs/GNu learn with Ray Train and evaluate from the store; NNs learns without task ids in
    one Ray task. Stored masks or checkpoints of other settings stop the job before it learns
    anything, unless `relearn` (then they are deleted and learned again). A fresh run starts Ray Train
    at once and opens the store while its workers start.
    """
    check_cluster(recipe.run)
    if recipe.scenario == "NNs":
        return run_nns(recipe, out_dir, progress)
    started = time.perf_counter()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh = not (out_dir / "store").exists()
    train = _start_train(recipe, out_dir, recipe.stream.num_tasks) if fresh else None
    try:
        store = MaskStore.open(out_dir / "store", recipe.run.shards)
    except BaseException:
        _abandon(train)
        raise
    try:
        result = new_result(recipe, recipe.run.strategy, store.layout.num_shards)
        _learn_and_evaluate(recipe, out_dir, store, result, progress, relearn, train)
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result


def _start_train(recipe: Recipe, out_dir: Path, num_todo: int) -> TrainRun:
    workers = num_workers(recipe.run, num_todo, recipe.run.strategy == "task_parallel")
    storage = Path(recipe.run.storage_path) if recipe.run.storage_path else out_dir / "train"
    return TrainRun(recipe, workers, storage, out_dir / "events.jsonl")


def _abandon(train: TrainRun | None) -> None:
    """Tell a started Train run there is nothing to do, and let it end."""
    if train is not None:
        train.start(None)
        try:
            train.wait()
        except Exception:  # the error that made us abandon it is the one to report
            log.debug("the abandoned Train run failed too", exc_info=True)


def _check_provenance(recipe: Recipe, out_dir: Path, store: MaskStore, ids: list[str], relearn: bool) -> None:
    """Refuse (or with relearn, delete) stored masks and checkpoints made with other settings."""
    missing = set(store.missing(ids))
    described = store.describe([t for t in ids if t not in missing])
    stored = {tid: d.get("provenance") or {} for tid, d in described.items()}
    for tid in stale_tasks(recipe, stored, f"the store at {store.root}", relearn):
        log.warning("deleting %s: it was learned with other settings (--relearn)", tid)
        store.delete(tid)
    check_checkpoints(recipe, out_dir / "checkpoints", relearn)


def check_checkpoints(recipe, folder: Path, relearn: bool) -> None:
    """Refuse (or with relearn, delete) the checkpoints in `folder` made with other settings than the
    recipe's (a mask or a translation recipe: anything with a `provenance`)."""
    checkpoints = {
        path.stem: (load_checkpoint(path) or {}).get("provenance") or {}
        for path in sorted(folder.glob("*.pt"))
    }
    for name in stale_tasks(recipe, checkpoints, str(folder), relearn, what="checkpoint(s)"):
        (folder / f"{name}.pt").unlink(missing_ok=True)


def learn_tasks(
    recipe: Recipe,
    store,
    ids: list[str],
    todo: list[int],
    out_dir: Path,
    result: JobResult,
    progress: bool,
    train: TrainRun | None,
) -> None:
    """Learn tasks `todo` (indices into `ids`) on Ray Train into `store` (a MaskStore, or what stands for
    one: `missing(ids)` and `put_many`), with a progress bar; fills the result's workers, stack size,
    learning seconds and timing. With nothing to do, a Train run started early is abandoned."""
    if not todo:
        _abandon(train)
        return
    events = out_dir / "events.jsonl"
    train = train or _start_train(recipe, out_dir, len(todo))
    try:
        with _LearningProgress([ids[t] for t in todo], events, progress) as bar:
            try:
                plan = _plan(recipe, store, todo, out_dir, train)
            except BaseException:
                _abandon(train)
                raise
            bar.started(plan)
            result.workers, result.stack_size = train.workers, max(map(len, plan.blocks))
            train.start(plan)
            result.learn_seconds = train.wait()
    except ray.train.TrainingFailedError as e:
        left = store.missing(ids)
        raise JobFailed(
            f"mask search failed after {recipe.run.max_failures} restart(s) with {len(left)} of {len(ids)} "
            f"tasks unlearned ({e}); the {len(ids) - len(left)} stored tasks are kept: run the same "
            "command again to resume, or see the worker logs above"
        ) from e
    result.timing.update(learn_timing(read_events(events), result.learn_seconds))


def _learn_and_evaluate(
    recipe: Recipe,
    out_dir: Path,
    store: MaskStore,
    result: JobResult,
    progress: bool,
    relearn: bool,
    train: TrainRun | None,
) -> None:
    ids = recipe.task_ids()
    try:
        _check_provenance(recipe, out_dir, store, ids, relearn)
        missing = set(store.missing(ids))
    except BaseException:
        _abandon(train)
        raise
    outcomes = {t: TaskOutcome(t, tid, skipped=tid not in missing) for t, tid in enumerate(ids)}
    todo = [t for t, o in outcomes.items() if not o.skipped]
    if len(todo) < len(outcomes):
        log.info(
            "%d of %d tasks are already in the store; learning the other %d",
            len(ids) - len(todo),
            len(ids),
            len(todo),
        )
    learn_tasks(recipe, store, ids, todo, out_dir, result, progress, train)

    eval_started = time.perf_counter()
    read = store.get_weights_many if recipe.learns_weights else store.get_many  # never one kind as the other
    for o, record in zip(outcomes.values(), read(ids, fingerprint=recipe.base_fingerprint), strict=True):
        fill_from_record(o, record)
    result.timing["read_back_seconds"] = time.perf_counter() - eval_started
    if recipe.scenario in ("GNs", "GNu"):
        started = time.perf_counter()
        result.stored_masks = len(store)
        fill_gn_outcomes(outcomes, evaluate_gn(recipe, store, list(outcomes), progress), result)
        result.timing["inference_seconds"] = time.perf_counter() - started
    else:
        unevaluated = [
            t for t, o in outcomes.items() if o.accuracy is None
        ]  # e.g. masks stored by older versions
        if unevaluated:
            _evaluate_on_base_actors(recipe, store, outcomes, unevaluated, progress)
    result.eval_seconds = time.perf_counter() - eval_started
    result.tasks = [outcomes[t] for t in sorted(outcomes)]


def _plan(recipe: Recipe, store: MaskStore, todo: list[int], out_dir: Path, train: TrainRun) -> SearchPlan:
    """Blocks of the whole stream (so a rerun finds the same blocks), keeping those with work left,
    sized to the memory the Train workers report."""
    stream = stream_of(recipe.stream, recipe.data)
    n = recipe.stream.num_tasks
    parallel = recipe.run.strategy == "task_parallel"
    sizes = [stream.train_examples(t) for t in range(n)]
    most = stack_size(
        recipe.run, recipe.num_weights, n, train.workers if parallel else 1, min(train.free_bytes())
    )
    left = set(todo)
    blocks = [b for b in plan_blocks(sizes, train.workers if parallel else 1, most) if left & set(b)]
    return SearchPlan(
        recipe,
        store,
        blocks,
        str(out_dir / "checkpoints"),
        str(out_dir / "events.jsonl"),
        metrics_path=str(out_dir / "metrics.jsonl"),
    )


def _evaluate_on_base_actors(
    recipe: Recipe, store: MaskStore, outcomes: dict, ts: list[int], progress: bool
) -> None:
    """GG accuracy of masks whose metrics lack it, on base actors that read them back from the store."""
    pool = base_pool(recipe, store, min(len(ts), num_workers(recipe.run, len(ts))))
    with tqdm(total=len(ts), desc="evaluating (GG)", unit="task", disable=not progress) as bar:
        for t, real, every in pool.map_unordered(lambda actor, t: actor.evaluate.remote(t), ts):
            outcomes[t].accuracy, outcomes[t].accuracy_all_outputs = real, every
            bar.update(1)
    close_pool(pool)


def learn_timing(events: list[dict], learn_seconds: float) -> dict:
    """Where the learning phase's time went, from the workers' events: start-up, search, evaluation,
    checkpoints and store writes (summed over workers), and the share checkpoints took."""
    begun = max((e["time"] for e in events if e["event"] == "train_started"), default=None)
    events = [e for e in events if begun is None or e["time"] >= begun]  # this run's, not an earlier one's
    ready = [e for e in events if e["event"] == "worker_ready"]
    blocks = [e for e in events if e["event"] == "block_stored"]
    first_start = begun
    search = sum(b["search_seconds"] for b in blocks)
    checkpoint = sum(b["checkpoint_seconds"] for b in blocks)
    return {
        "worker_setup_seconds": max((e["setup_seconds"] for e in ready), default=0.0),
        "train_start_seconds": (min(e["time"] for e in ready) - first_start)
        if ready and first_start
        else None,
        "search_seconds": search,
        "evaluate_seconds": sum(b["evaluate_seconds"] for b in blocks),
        "checkpoint_seconds": checkpoint,
        "checkpoints": sum(b["checkpoints"] for b in blocks),
        "checkpoint_share": checkpoint / search if search else 0.0,
        "store_seconds": sum(b["store_seconds"] for b in blocks),
        "probe_seconds": sum(b.get("probe_seconds", 0.0) for b in blocks),  # part of search_seconds
        "blocks": len(blocks),
    }
