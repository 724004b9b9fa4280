"""`learn: fine_tune`: one network through the stream, the continual-learning baseline that forgets.

Task t trains the network task t-1 ended with (weights and BatchNorm statistics; the optimizer and a
weight method's own state start afresh), in the same stacked loop as everything else (a stack of
one), with the block checkpoints of `learn_block`. Right after learning task t, the network is
evaluated on the test split of every task so far: row t of the accuracy matrix, kept in the
record's metrics (`accuracy_on_tasks`). Each task's record is the network as it stood right after
that task: the last one is the network a user keeps; the others let a run resume and let
forgetting be measured: forgetting of task t = accuracy right after task t - accuracy after the last.

Fine-tuning is sequential by nature, so one Ray Train worker learns the tasks in stream order. A rerun
resumes after the stored records that form an unbroken chain from task 0; records after a gap belong
to an earlier chain and are learned again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supermask.core.evaluate import stacked_accuracy
from supermask.core.records.weights import TaskWeights
from supermask.recipes.checkpoints import check_checkpoints
from supermask.recipes.learn import BlockOutcome, CheckpointPolicy, learn_block
from supermask.recipes.learners.base import BlockContext, Evaluation, refuse_stale_records, register_learner
from supermask.recipes.learners.weights import WeightsLearner
from supermask.recipes.recipe import Workbench
from supermask.recipes.results import TaskOutcome

log = logging.getLogger(__name__)


def fine_tune_task(
    bench: Workbench,
    t: int,
    previous: TaskWeights | None,
    *,
    checkpoint: Path | None = None,
    policy: CheckpointPolicy | None = None,
) -> tuple[TaskWeights, BlockOutcome]:
    """Train task t starting from `previous` (None: the base's weights), then score every task so far."""
    _check_previous(t, previous)
    outcome = learn_block(bench, [t], checkpoint=checkpoint, policy=policy, start_from=previous)
    (record,) = outcome.records
    _score_so_far(bench, t, previous, record)
    return record, outcome


def _check_previous(t: int, previous: TaskWeights | None) -> None:
    if previous is not None and previous.metrics.get("task_index") != t - 1:
        raise ValueError(
            f"fine-tuning task {t} must start from the network of task {t - 1}, got the one of task "
            f"{previous.metrics.get('task_index')} ({previous.task_id})"
        )


def _score_so_far(bench: Workbench, t: int, previous: TaskWeights | None, record: TaskWeights) -> None:
    """Row t of the accuracy matrix (every task so far, with the network right after task t) into the record."""
    record.metrics["accuracy_on_tasks"] = accuracy_on_tasks(bench, list(range(t)), record) + [
        record.metrics["test_accuracy"]
    ]
    record.metrics["fine_tuned_from"] = None if previous is None else previous.task_id


def accuracy_on_tasks(
    bench: Workbench, ts: Sequence[int], record: TaskWeights, most: int = 16
) -> list[float]:
    """Test accuracy of one network on each of tasks `ts`, stacked `most` tasks at a time on the device."""
    out: list[float] = []
    weights, bn = record.tensors(bench.device), record.bn_tensors(bench.device)
    for start in range(0, len(ts), most):
        part = list(ts[start : start + most])
        k = len(part)
        accuracy = stacked_accuracy(
            bench.base,
            None,
            {name: v.unsqueeze(0).expand(k, *v.shape) for name, v in bn.items()},
            bench.stream.stacked(part, "test", bench.device),
            bench.recipe.num_classes,
            chunk=bench.recipe.run.eval_batch_size,
            weights=[w.unsqueeze(0).expand(k, *w.shape) for w in weights],
        )
        out += [a.real_classes for a in accuracy]
    return out


def forgetting_summary(records: Sequence[TaskWeights], outcomes: Sequence[TaskOutcome]) -> dict:
    """Fill each outcome's accuracy (with the last network), accuracy right after its task, and forgetting;
    return the accuracy matrix (row t: every task after task t) and the averages."""
    matrix = [list(r.metrics["accuracy_on_tasks"]) for r in records]
    final = matrix[-1]
    for t, o in enumerate(outcomes):
        o.accuracy_after_own_task = matrix[t][t]
        o.accuracy = final[t]
        o.accuracy_all_outputs = None  # the matrix holds argmax over the real classes only
        o.forgetting = matrix[t][t] - final[t]
    forgotten = [o.forgetting for o in outcomes[:-1]]  # the last task has had no time to forget
    return {
        "accuracy_matrix": matrix,
        "average_accuracy_after_own_task": sum(m[t] for t, m in enumerate(matrix)) / len(matrix),
        "average_final_accuracy": sum(final) / len(final),
        "average_forgetting": sum(forgotten) / len(forgotten) if forgotten else 0.0,
        "max_forgetting": max(forgotten) if forgotten else 0.0,
    }


@register_learner
class FineTuneLearner(WeightsLearner):
    name = "fine_tune"
    progress_label = "fine-tuning"
    max_train_workers = 1  # one network, task after task

    def describe_strategy(self) -> str:
        return "fine_tune: one network, one Ray Train worker (sequential)"

    def prepare(self, store: Any, ids: list[str], out_dir: Path, relearn: bool) -> list[int]:
        """Every task after the stored records that form an unbroken chain from task 0 with this run's settings."""
        refuse_stale_records(self.recipe, store, ids, relearn, self.records_noun)
        check_checkpoints(self.recipe, out_dir / "checkpoints", relearn)
        missing = set(store.missing(ids))
        first = next((t for t, tid in enumerate(ids) if tid in missing), len(ids))
        later = [tid for tid in ids[first:] if tid not in missing]
        if later:
            log.warning(
                "%d record(s) after task %d belong to an earlier chain; learning them again",
                len(later),
                first,
            )
            for tid in later:
                store.delete(tid)
        return list(range(first, len(ids)))

    def plan(self, todo: list[int], workers: int, most: int) -> list[list[int]]:
        return [[t] for t in sorted(todo)]  # in stream order: each task starts from the last

    def learn_block(
        self, bench: Workbench, block: list[int], ctx: BlockContext, **options: Any
    ) -> BlockOutcome:
        (t,) = block
        previous = self._previous(bench, ctx.store, t)
        _check_previous(t, previous)
        outcome = super().learn_block(bench, block, ctx, start_from=previous, **options)
        (record,) = outcome.records
        _score_so_far(bench, t, previous, record)
        bench.cache["previous"] = record
        return outcome

    def _previous(self, bench: Workbench, store: Any, t: int) -> TaskWeights | None:
        """The network task t-1 ended with: held since this process learned it, else read from the store."""
        if t == 0:
            return None
        held = bench.cache.get("previous")
        if held is not None and held.metrics.get("task_index") == t - 1:
            return held
        (previous,) = store.get_weights_many(
            [bench.stream.task_id(t - 1)], fingerprint=self.recipe.base_fingerprint
        )
        return previous

    def evaluate(self, ev: Evaluation) -> None:
        records = self.read_back(ev)
        ev.result.forgetting = forgetting_summary(records, list(ev.outcomes.values()))
