"""Bench actors: each builds a learner's bench once (its stream and frozen base, the fingerprint checked)
next to the store and runs the learner's methods on it: evaluations, task inference, forward passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.util import ActorPool
from tqdm.auto import tqdm

from supermask.recipes.learners import Learner
from supermask.runtime.placement import actor_options, process_device


@ray.remote
class BenchActor:
    """Hosts one learner's bench in its own process, beside the store it reads from."""

    def __init__(self, learner: Learner, store: Any) -> None:
        self.learner, self.store = learner, store
        self.bench = learner.bench(process_device(learner.run))

    def ready(self) -> bool:
        """True once the bench is built (an actor whose bench failed raises here what building it raised)."""
        return True

    def call(self, method: str, *args: Any) -> Any:
        """`learner.<method>(bench, store, *args)` on this actor's bench."""
        return getattr(self.learner, method)(self.bench, self.store, *args)


def on_benches(
    learner: Learner,
    store: Any,
    method: str,
    items: Sequence,
    *,
    workers: int,
    desc: str,
    units: Callable[[Any], int] = lambda item: 1,
    progress: bool = True,
) -> list:
    """Each item's `learner.<method>(bench, store, item)` on a pool of `workers` bench actors (one CPU slot, or
    one GPU, each), in the order they finish; a progress bar counts `units(item)` per finished item."""
    options = actor_options(learner.run)
    actors = [BenchActor.options(**options).remote(learner, store) for _ in range(max(1, workers))]
    pool = ActorPool(actors)
    out = []
    try:
        with tqdm(total=sum(units(i) for i in items), desc=desc, unit="task", disable=not progress) as bar:
            for item, done in zip(
                items, pool.map(lambda actor, i: actor.call.remote(method, i), items), strict=True
            ):
                out.append(done)
                bar.update(units(item))
    finally:
        for actor in actors:
            ray.kill(actor)
    return out
