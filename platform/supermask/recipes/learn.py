"""Learning a block of tasks of a recipe as one stack: the unit of work a runtime schedules (no Ray here).

A block is searched as one `StackedSearch`, checkpointed as one file at a cadence measured in
seconds of work, and evaluated on the device while its masks are still there (scenario GG: each
task with its own mask). Blocks are cut from the whole stream, not from what is left to do, so a
rerun after a crash finds the same blocks and their checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from supermask.core.probes.search_probe import SearchProbe
from supermask.core.search.stacked_search import StackedSearch
from supermask.recipes.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from supermask.recipes.recipe import Workbench

log = logging.getLogger(__name__)

CHECKPOINT_BUDGET = 0.05  # at most this share of a block's time goes to checkpoints
FIRST_CHECKPOINT_S = 10.0  # no checkpoint before this much work (a short block is cheaper to redo)


def plan_blocks(sizes: Sequence[int], workers: int, most: int) -> list[list[int]]:
    """Cut tasks 0..n-1 into blocks of equal training size (`sizes[t]`), at most `most` per block,
    balanced so that `workers` workers get as even a share as whole blocks allow."""
    by_size: dict[int, list[int]] = {}
    for t, n in enumerate(sizes):
        by_size.setdefault(int(n), []).append(t)
    blocks = []
    for tasks in by_size.values():
        per_block = max(1, min(most, math.ceil(len(tasks) / max(workers, 1))))
        blocks += [tasks[i : i + per_block] for i in range(0, len(tasks), per_block)]
    return sorted(blocks)


def block_name(task_ids: Sequence[str]) -> str:
    """The checkpoint name of a block: its first task id and how many follow."""
    return f"{task_ids[0]}+{len(task_ids) - 1}"


@dataclass
class CheckpointPolicy:
    """When to checkpoint: every `every` seconds if given, else when the time since the last one is at
    least 1/`budget` times what the last write took (so writes cost at most `budget` of the time)."""

    every: float | None = None
    budget: float = CHECKPOINT_BUDGET
    first_after: float = FIRST_CHECKPOINT_S
    last: float = field(default_factory=time.perf_counter)
    write_seconds: float = 0.0  # all writes so far
    writes: int = 0
    _last_write: float = 0.0

    def due(self, search: StackedSearch) -> bool:
        waited = time.perf_counter() - self.last
        if self.every is not None:
            return waited >= self.every
        return waited >= max(self.first_after if not self.writes else 0.0, self._last_write / self.budget)

    def wrote(self, seconds: float) -> None:
        self.write_seconds += seconds
        self.writes += 1
        self._last_write = seconds
        self.last = time.perf_counter()


@dataclass
class BlockOutcome:
    """A learned block: its records (with GG accuracy in their metrics) and where its time went."""

    records: list  # one per task of the block: TaskMask, TaskWeights or a learner's own record
    search_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    checkpoints: int = 0
    resumed_from_step: int = 0
    probe_records: list[dict] = field(default_factory=list)  # each task's last probe record
    probe_seconds: float = 0.0  # probes during the search (part of search_seconds)


def learn_block(
    bench: Workbench,
    ts: Sequence[int],
    *,
    checkpoint: Path | None = None,
    policy: CheckpointPolicy | None = None,
    write_checkpoints: bool = True,
    evaluate: bool = True,
    on_start: Callable[[StackedSearch], None] | None = None,
    before_result: Callable[[StackedSearch], None] | None = None,
    hooks=(),
    probe_sink: Callable[[list[dict]], None] | None = None,
    **search_options,
) -> BlockOutcome:
    """Search the masks (or train the weights) of tasks `ts` as one stack, resuming from (and
    checkpointing to) `checkpoint`.

    With `evaluate`, each mask's GG test accuracy is measured on the device before it leaves
    (metrics `test_accuracy` and `test_accuracy_all_outputs`). `search_options` (shard, grad_sync) make
    it one worker of a data-parallel search; only one of those workers writes checkpoints.
    With `probe_sink` and the recipe's probes on, the stack is probed on their cadence and every
    record goes to the sink (core/probes/search_probe.py); each mask's metrics get the probes' time. With
    start_from (a TaskWeights), a weight method starts from that network (fine-tuning).
    """
    search = bench.new_search(ts, **search_options)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        if state is not None:
            if list(state.get("task_ids", [])) != search.task_ids:
                log.warning("%s is of another block of tasks; starting this block from step 0", checkpoint)
            else:
                try:
                    search.load_state_dict(state)
                except ValueError as e:
                    raise CheckpointError(f"{checkpoint}: {e}") from None
    outcome = BlockOutcome([], resumed_from_step=search.step)
    if on_start is not None:
        on_start(search)
    started = time.perf_counter()  # the probes' time is part of the search's, the first probe's too
    probe = None
    if probe_sink is not None and bench.recipe.probes.enabled:
        probe = SearchProbe(search, bench.recipe.probes, probe_sink)
        probe.start()
        hooks = [*hooks, probe]
    policy = policy or CheckpointPolicy()
    save = None
    if checkpoint is not None and write_checkpoints:

        def save(state: dict) -> None:
            began = time.perf_counter()
            save_checkpoint(state, checkpoint)
            policy.wrote(time.perf_counter() - began)

    masks = search.run(
        list(hooks), should_checkpoint=policy.due, on_checkpoint=save, before_result=before_result
    )
    outcome.search_seconds = time.perf_counter() - started - policy.write_seconds
    outcome.checkpoint_seconds, outcome.checkpoints = policy.write_seconds, policy.writes
    if evaluate:
        started = time.perf_counter()
        for mask, accuracy in zip(masks, bench.evaluate_stack(ts, search), strict=True):
            mask.metrics["test_accuracy"] = accuracy.real_classes
            mask.metrics["test_accuracy_all_outputs"] = accuracy.all_outputs
        outcome.evaluate_seconds = time.perf_counter() - started
    for t, mask in zip(ts, masks, strict=True):
        mask.metrics["task_index"] = int(t)
        if probe is not None:
            mask.metrics.update(
                probes=probe.probes, probe_stack_seconds=probe.seconds, probe_overhead=probe.overhead()
            )
    outcome.records = masks
    if probe is not None:
        outcome.probe_records, outcome.probe_seconds = probe.last, probe.seconds
    return outcome
