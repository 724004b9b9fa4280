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
import torch
from tqdm.auto import tqdm

from supermask.learn import make_base, make_stream
from supermask.runtime.base_actors import base_pool
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.train_search import num_workers
from supermask.spec import Spec
from supermask.task_inference import GN_SCENARIOS, InferenceOutcome
from supermask.without_ids import NNsRun, learn_and_evaluate_nns

log = logging.getLogger(__name__)


def evaluate_gn(
    spec: Spec, store: MaskStore, fingerprint: str, indices: list[int], progress: bool = True
) -> list[InferenceOutcome]:
    """Scenario GNs/GNu (the spec's) on these tasks, on a pool of base actors; outcomes in task order."""
    if spec.run.scenario not in GN_SCENARIOS:
        raise ValueError(f"evaluate_gn runs {' or '.join(GN_SCENARIOS)}, not {spec.run.scenario!r}")
    pool = base_pool(spec, fingerprint, store, min(len(indices), num_workers(spec, len(indices))))
    outcomes = []
    desc = f"evaluating ({spec.run.scenario}, {spec.inference.method} {spec.inference.objective})"
    with tqdm(total=len(indices), desc=desc, unit="task", disable=not progress) as bar:
        for outcome in pool.map_unordered(lambda actor, t: actor.infer.remote(t), list(indices)):
            outcomes.append(outcome)
            bar.update(1)
    for actor in pool._idle_actors:
        ray.kill(actor)
    return sorted(outcomes, key=lambda o: o.index)


def task_inference_accuracy(outcomes: list[InferenceOutcome]) -> float | None:
    """Fraction of all test samples whose task was inferred right."""
    samples = sum(o.samples for o in outcomes)
    return sum(o.task_correct for o in outcomes) / samples if samples else None


def fill_gn_outcomes(outcomes: dict, inferred: list[InferenceOutcome], result) -> None:
    """Copy GN outcomes into the job's TaskOutcomes and JobResult."""
    for o in inferred:
        task = outcomes[o.index]
        task.accuracy, task.gg_accuracy = o.accuracy, o.gg_accuracy
        task.task_inference_accuracy, task.inferred = o.task_inference_accuracy, o.inferred
    result.task_inference_accuracy = task_inference_accuracy(inferred)
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


def run_inference(spec: Spec, root: Path, progress: bool = True):
    """`supermask infer`: scenario GNs/GNu of the spec's stream over the masks stored at `root`."""
    from supermask.runtime.job import JobResult, TaskOutcome

    started = time.perf_counter()
    stream = make_stream(spec)
    base = make_base(spec, stream)
    store = MaskStore.open(root)
    try:
        ids = [stream.task_id(t) for t in range(stream.num_tasks)]
        missing = store.missing(ids)
        if missing:
            raise FileNotFoundError(
                f"the store at {root} has no mask for {len(missing)} of the spec's {len(ids)} tasks "
                f"({missing[:5]}); run `supermask run` with this spec first, or lower stream.num_tasks"
            )
        masks = store.get_many(ids, fingerprint=base.fingerprint)  # another base's masks: an error here
        result = JobResult(
            base_fingerprint=base.fingerprint,
            data_source=stream.data_source,
            num_weights=sum(int(w.numel()) for w in base.weights()),
            resources={k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
            strategy="no learning (masks from the store); base actors",
            workers=min(stream.num_tasks, num_workers(spec, stream.num_tasks)),
            shards=store.layout.num_shards,
        )
        outcomes = {t: TaskOutcome(t, ids[t], skipped=True) for t in range(stream.num_tasks)}
        for o, mask in zip(outcomes.values(), masks, strict=True):
            o.density, o.mask_bytes = mask.density, mask.mask_bytes
            o.train_accuracy, o.search_seconds = (
                mask.metrics.get("train_accuracy"),
                mask.metrics.get("seconds"),
            )
        result.stored_masks = len(store)
        eval_started = time.perf_counter()
        inferred = evaluate_gn(spec, store, base.fingerprint, list(outcomes), progress)
        fill_gn_outcomes(outcomes, inferred, result)
        result.eval_seconds = time.perf_counter() - eval_started
        result.tasks = [outcomes[t] for t in sorted(outcomes)]
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result


@ray.remote
def _learn_without_ids(spec: Spec) -> NNsRun:
    torch.set_num_threads(spec.run.threads_per_worker)
    device = "cuda" if spec.run.use_gpu and torch.cuda.is_available() else "cpu"
    return learn_and_evaluate_nns(spec, device)


def run_nns(spec: Spec, out_dir: Path, progress: bool = True):
    """Scenario NNs: learn the stream without task ids in one Ray task, store its masks, report."""
    from supermask.runtime.job import JobResult, TaskOutcome

    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = make_stream(spec)
    base = make_base(spec, stream)
    options = {"num_cpus": spec.run.threads_per_worker}
    if spec.run.use_gpu:
        options["num_gpus"] = 1
    log.info("learning %d tasks of %s without task ids in one Ray task", stream.num_tasks, stream.name)
    run: NNsRun = ray.get(_learn_without_ids.options(**options).remote(spec))
    store = MaskStore.open(out_dir / "store", spec.run.shards)
    try:
        store.put_many(run.masks, overwrite=True)  # NNs learns from scratch on every run
    finally:
        store.close()
    result = JobResult(
        base_fingerprint=base.fingerprint,
        data_source=stream.data_source,
        num_weights=sum(int(w.numel()) for w in base.weights()),
        resources={k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
        strategy="one Ray task (NNs is sequential)",
        workers=1,
        shards=spec.run.shards,
    )
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
        log.info("NNs: %d masks for %d tasks", len(run.masks), stream.num_tasks)
    return result
