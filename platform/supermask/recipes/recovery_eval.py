"""Recovery without task ids, measured (no Ray here): each test batch's neuron mask recovered from the
reservoirs alone, the batch classified with it, and the choice checked against what was stored.

A task's test split is cut into batches of about `recovery.batch_size` images (equal sizes,
`np.array_split`). For every batch each reservoir returns its best attractor (`core.hopfield.recovery
.recover_batch`: the source's annealed entropy + energy descent from the mean of its patterns, then
sign descent to a fixed point, scored in one shot against the reservoir's own attractors); the
candidate with the lowest output entropy on the batch is kept.
A batch "picked the right attractor" when the kept pattern is exactly the pattern stored for its
task (checked by the digest each reservoir keeps); with the exact masks at hand (store.kind both),
also when it is nearest, in Hamming distance, to its task's pattern among all stored patterns.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from supermask.core.hopfield.recovery import hamming
from supermask.data import Stream

# (batches of images) -> per batch, every reservoir's candidate (None: an empty reservoir)
AskReservoirs = Callable[[Sequence[np.ndarray]], list[list[dict | None]]]


@dataclass
class RecoveryOutcome:
    """How recovery without the task id did on one task's test batches."""

    index: int
    task_id: str
    batches: int = 0
    exact: int = 0  # batches whose kept attractor is exactly this task's stored pattern
    nearest: int | None = None  # batches whose kept attractor is nearest to it (None: patterns not at hand)
    samples: int = 0
    correct: int = 0  # test images classified right under the recovered patterns
    converged_steps: list[int] = field(default_factory=list)
    recall_sweeps: list[int] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)  # patterns each reservoir scored, summed
    from_annealing: int = 0  # batches whose kept pattern is the settled annealed end (not another attractor)
    distances: list[int] = field(
        default_factory=list
    )  # to this task's pattern, when the patterns are at hand
    picked: dict[str, int] = field(default_factory=dict)  # stored task id (or "none") -> batches
    shards: dict[int, int] = field(default_factory=dict)  # reservoir -> batches it won
    seconds: float = 0.0  # reservoir time spent on this task's batches (summed over reservoirs)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.samples, 1)


def recovery_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Indices of n test images in ceil(n / batch_size) batches of (nearly) equal size."""
    return [a for a in np.array_split(np.arange(n), max(1, math.ceil(n / batch_size))) if len(a)]


def pick(candidates: Sequence[dict | None]) -> tuple[int, dict]:
    """(reservoir, candidate) with the lowest output entropy among the reservoirs that answered."""
    found = [(c["entropy"], i, c) for i, c in enumerate(candidates) if c is not None]
    if not found:
        raise ValueError("every reservoir is empty: store patterns before recovering")
    _, shard, best = min(found, key=lambda f: (f[0], f[1]))
    return shard, best


def evaluate_recovery(
    stream: Stream,
    ts: Sequence[int],
    batch_size: int,
    ask: AskReservoirs,
    reference: dict[str, list[np.ndarray]] | None = None,
    on_task: Callable[[RecoveryOutcome], None] | None = None,
) -> list[RecoveryOutcome]:
    """Recover every test batch of tasks `ts` without its task id and score the choices (see the module doc).

    `reference` (task id -> its exact pattern, e.g. from the exact store) adds the nearest-pattern check.
    """
    outcomes = []
    ids = list(reference) if reference else []
    stored = [reference[t] for t in ids] if reference else []
    for t in ts:
        task = stream.task(t)
        x, y = task.test_x.numpy(), task.test_y.numpy()
        spans = recovery_batches(len(y), batch_size)
        answers = ask([x[s] for s in spans])
        o = RecoveryOutcome(t, task.task_id, nearest=0 if reference else None)
        picked: Counter = Counter()
        shards: Counter = Counter()
        for span, candidates in zip(spans, answers, strict=True):
            shard, best = pick(candidates)
            o.batches += 1
            o.exact += best["stored_as"] == task.task_id
            o.samples += len(span)
            o.correct += int((np.asarray(best["predictions"]) == y[span]).sum())
            o.converged_steps.append(int(best["converged_step"]))
            o.recall_sweeps.append(int(best["recall_sweeps"]))
            o.candidates.append(sum(int(c.get("candidates", 1)) for c in candidates if c is not None))
            o.from_annealing += bool(best.get("from_annealing", True))
            o.seconds += sum(c["seconds"] for c in candidates if c is not None)
            picked[best["stored_as"] or "none"] += 1
            shards[shard] += 1
            if reference:
                distances = [hamming(best["patterns"], s) for s in stored]
                o.nearest += ids[int(np.argmin(distances))] == task.task_id
                if task.task_id in reference:
                    o.distances.append(distances[ids.index(task.task_id)])
        o.picked, o.shards = dict(picked.most_common()), dict(sorted(shards.items()))
        outcomes.append(o)
        if on_task is not None:
            on_task(o)
    return outcomes


def recovery_summary(outcomes: Sequence[RecoveryOutcome], seconds: float) -> dict:
    """Totals over tasks: batches that picked the right attractor, accuracy, steps to converge, time."""
    batches = sum(o.batches for o in outcomes)
    steps = [s for o in outcomes for s in o.converged_steps]
    sweeps = [s for o in outcomes for s in o.recall_sweeps]
    nearest = [o.nearest for o in outcomes if o.nearest is not None]
    return {
        "batches": batches,
        "picked_right_attractor": sum(o.exact for o in outcomes) / max(batches, 1),
        "picked_nearest_right": sum(nearest) / max(batches, 1) if len(nearest) == len(outcomes) else None,
        "accuracy": sum(o.correct for o in outcomes) / max(sum(o.samples for o in outcomes), 1),
        "converged_step_mean": float(np.mean(steps)) if steps else None,
        "converged_step_max": int(max(steps)) if steps else None,
        "recall_sweeps_mean": float(np.mean(sweeps)) if sweeps else None,
        "candidates_mean": float(np.mean([c for o in outcomes for c in o.candidates] or [0])),
        "kept_annealed_end": sum(o.from_annealing for o in outcomes) / max(batches, 1),
        "seconds": seconds,
        "reservoir_seconds": sum(o.seconds for o in outcomes),
        "tasks": [
            {
                "task": o.task_id,
                "batches": o.batches,
                "picked_right_attractor": o.exact / max(o.batches, 1),
                "picked_nearest_right": None if o.nearest is None else o.nearest / max(o.batches, 1),
                "accuracy": o.accuracy,
                "converged_steps": o.converged_steps,
                "recall_sweeps": o.recall_sweeps,
                "distance_to_stored": o.distances,
                "picked": o.picked,
                "reservoirs": o.shards,
            }
            for o in outcomes
        ],
    }
