"""Fine-tuning one network through a stream, the continual-learning baseline that forgets (no Ray here).

Task t trains the network task t-1 ended with (weights and BatchNorm statistics; the optimizer and a
weight method's own state start afresh), in the same stacked loop as everything else (a stack of
one), with the block checkpoints of `learn_block`. Right after learning task t, the network is
evaluated on the test split of every task so far: row t of the accuracy matrix, kept in the
record's metrics (`accuracy_on_tasks`). Each task's record is the network as it stood right after
that task: the last one is the network a user keeps; the others let a run resume and let
forgetting be measured: forgetting of task t = accuracy right after task t - accuracy after the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from supermask.core.evaluate import stacked_accuracy
from supermask.core.records.weights import TaskWeights
from supermask.recipes.learn import BlockOutcome, CheckpointPolicy, learn_block
from supermask.recipes.recipe import Workbench
from supermask.recipes.results import TaskOutcome


def fine_tune_task(
    bench: Workbench,
    t: int,
    previous: TaskWeights | None,
    *,
    checkpoint: Path | None = None,
    policy: CheckpointPolicy | None = None,
) -> tuple[TaskWeights, BlockOutcome]:
    """Train task t starting from `previous` (None: the base's weights), then score every task so far."""
    if previous is not None and previous.metrics.get("task_index") != t - 1:
        raise ValueError(
            f"fine-tuning task {t} must start from the network of task {t - 1}, got the one of task "
            f"{previous.metrics.get('task_index')} ({previous.task_id})"
        )
    outcome = learn_block(bench, [t], checkpoint=checkpoint, policy=policy, start_from=previous)
    (record,) = outcome.masks
    record.metrics["accuracy_on_tasks"] = accuracy_on_tasks(bench, list(range(t)), record) + [
        record.metrics["test_accuracy"]
    ]
    record.metrics["fine_tuned_from"] = None if previous is None else previous.task_id
    return record, outcome


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
