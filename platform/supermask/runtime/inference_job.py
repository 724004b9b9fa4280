"""Scenarios past GG on Ray: GNs/GNu task inference over the sharded store, and NNs in one Ray task.

GN: base actors each take whole tasks; for every test batch an actor runs the superposed forward and
backward pass and sends the base-sized query to the shard actors, which score their own packed masks
and send back one number per mask (`MaskStore.query_scores`); the actor then classifies with the
inferred mask, read from its shard. NNs: the whole stream is learned in one Ray task (it is
sequential by nature: which mask a batch trains depends on every batch before it), which returns the
allocated masks; the driver puts them in the store.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ray
from tqdm.auto import tqdm

from supermask.config.spec import GN_SCENARIOS
from supermask.recipes.recipe import Recipe, Workbench
from supermask.recipes.results import InferenceOutcome, JobResult, TaskOutcome
from supermask.recipes.task_inference import TASKS_PER_PASS
from supermask.recipes.without_ids import NNsRun, learn_and_evaluate_nns
from supermask.runtime.base_actors import base_pool, close_pool
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import actor_options, check_cluster, num_workers, process_device

log = logging.getLogger(__name__)


def new_result(recipe: Recipe, strategy: str, shards: int, workers: int = 0) -> JobResult:
    """An empty JobResult for a recipe on the connected Ray cluster."""
    return JobResult(
        base_fingerprint=recipe.base_fingerprint,
        provenance=recipe.provenance["hash"],
        data_source=recipe.data_source,
        num_weights=recipe.num_weights,
        resources={k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
        strategy=strategy,
        workers=workers,
        shards=shards,
    )


def evaluate_gn(
    recipe: Recipe, store: MaskStore, indices: list[int], progress: bool = True
) -> list[InferenceOutcome]:
    """Scenario GNs/GNu (the recipe's) on these tasks, on a pool of base actors; outcomes in task order."""
    if recipe.scenario not in GN_SCENARIOS:
        raise ValueError(f"evaluate_gn runs {' or '.join(GN_SCENARIOS)}, not {recipe.scenario!r}")
    actors = min(len(indices), num_workers(recipe.run, len(indices)))
    pool = base_pool(recipe, store, actors)
    # Hand out tasks in parts: on a GPU an actor infers a part's test groups in one pass over the masks.
    per_part = max(1, min(TASKS_PER_PASS, -(-len(indices) // (4 * actors))))
    parts = [list(indices[i : i + per_part]) for i in range(0, len(indices), per_part)]
    outcomes = []
    inference = recipe.inference
    desc = f"evaluating ({recipe.scenario}, {inference.method} {inference.objective})"
    with tqdm(total=len(indices), desc=desc, unit="task", disable=not progress) as bar:
        for done in pool.map_unordered(lambda actor, ts: actor.infer.remote(ts), parts):
            outcomes += done
            bar.update(len(done))
    close_pool(pool)
    return sorted(outcomes, key=lambda o: o.index)


def fill_gn_outcomes(
    outcomes: dict[int, TaskOutcome], inferred: list[InferenceOutcome], result: JobResult
) -> None:
    """Copy GN outcomes into the job's TaskOutcomes and JobResult."""
    for o in inferred:
        task = outcomes[o.index]
        task.accuracy, task.gg_accuracy = o.accuracy, o.gg_accuracy
        task.task_inference_accuracy, task.inferred = o.task_inference_accuracy, o.inferred
    samples = sum(o.samples for o in inferred)
    result.task_inference_accuracy = sum(o.task_correct for o in inferred) / samples if samples else None
    result.inference_seconds = sum(o.seconds for o in inferred)
    result.inferences = sum(o.inferences for o in inferred)


def store_root(path: Path) -> Path:
    """The store folder of a run folder (PATH/store) or a store folder (PATH holding store.json)."""
    path = Path(path)
    for candidate in (path / "store", path):
        if (candidate / "store.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no mask store at {path}: pass a run folder (holding store/) or a store folder (holding store.json)"
    )


def run_inference(recipe: Recipe, root: Path, progress: bool = True) -> JobResult:
    """`supermask infer`: scenario GNs/GNu of the recipe's stream over the masks stored at `root`."""
    check_cluster(recipe.run)
    started = time.perf_counter()
    store = MaskStore.open(root)
    try:
        ids = recipe.task_ids()
        missing = store.missing(ids)
        if missing:
            raise FileNotFoundError(
                f"the store at {root} has no mask for {len(missing)} of the spec's {len(ids)} tasks "
                f"({missing[:5]}); run `supermask run` with this spec first, or lower stream.num_tasks"
            )
        masks = store.get_many(
            ids, fingerprint=recipe.base_fingerprint
        )  # another base's masks: an error here
        result = new_result(
            recipe,
            "no learning (masks from the store); base actors",
            store.layout.num_shards,
            min(len(ids), num_workers(recipe.run, len(ids))),
        )
        outcomes = {t: TaskOutcome(t, tid, skipped=True) for t, tid in enumerate(ids)}
        for o, mask in zip(outcomes.values(), masks, strict=True):
            o.density, o.mask_bytes = mask.density, mask.mask_bytes
            o.train_accuracy, o.search_seconds = (
                mask.metrics.get("train_accuracy"),
                mask.metrics.get("seconds"),
            )
        result.stored_masks = len(store)
        eval_started = time.perf_counter()
        fill_gn_outcomes(outcomes, evaluate_gn(recipe, store, list(outcomes), progress), result)
        result.eval_seconds = time.perf_counter() - eval_started
        result.tasks = [outcomes[t] for t in sorted(outcomes)]
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result


@ray.remote
def _learn_without_ids(recipe: Recipe) -> NNsRun:
    return learn_and_evaluate_nns(Workbench(recipe, process_device(recipe.run)))


def run_nns(recipe: Recipe, out_dir: Path, progress: bool = True) -> JobResult:
    """Scenario NNs: learn the stream without task ids in one Ray task, store its masks, report."""
    check_cluster(recipe.run)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "learning %d tasks of %s without task ids in one Ray task",
        recipe.stream.num_tasks,
        recipe.stream.name,
    )
    run: NNsRun = ray.get(_learn_without_ids.options(**actor_options(recipe.run)).remote(recipe))
    store = MaskStore.open(out_dir / "store", recipe.run.shards)
    try:
        store.put_many(run.masks, overwrite=True)  # NNs learns from scratch on every run
        shards = store.layout.num_shards
    finally:
        store.close()
    result = new_result(recipe, "one Ray task (NNs is sequential)", shards, workers=1)
    result.tasks = [
        TaskOutcome(o.index, o.task_id, accuracy=o.accuracy, inferred=o.inferred) for o in run.outcomes
    ]
    result.nns = run.summary()
    result.learn_seconds = run.learned.seconds
    result.eval_seconds = run.seconds - run.learned.seconds
    result.inferences = sum(o.inferences for o in run.outcomes)
    result.stored_masks = len(run.masks)
    result.seconds = time.perf_counter() - started
    if progress:
        log.info("NNs: %d masks for %d tasks", len(run.masks), recipe.stream.num_tasks)
    return result
