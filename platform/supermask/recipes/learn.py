"""Learning one task of a recipe: the unit of work a runtime schedules (no Ray here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from supermask.core.packing import TaskMask
from supermask.core.search import MaskSearch
from supermask.recipes.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from supermask.recipes.recipe import Workbench


def learn_task(
    bench: Workbench,
    t: int,
    *,
    checkpoint: Path | None = None,
    checkpoint_every: int = 0,
    write_checkpoints: bool = True,
    on_start: Callable[[MaskSearch], None] | None = None,
    before_result: Callable[[MaskSearch], None] | None = None,
    hooks=(),
    **search_options,
) -> TaskMask:
    """Search task t's mask, resuming from (and, with write_checkpoints, checkpointing to) `checkpoint`.

    `search_options` (shard, grad_sync) make it one worker of a data-parallel search; only one of those
    workers writes checkpoints.
    """
    search = bench.new_search(t, **search_options)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        if state is not None:
            try:
                search.load_state_dict(state)
            except ValueError as e:
                raise CheckpointError(f"{checkpoint}: {e}") from None
    if on_start is not None:
        on_start(search)
    save = None
    if checkpoint is not None and write_checkpoints:
        save = lambda state: save_checkpoint(state, checkpoint)  # noqa: E731
    mask = search.run(
        list(hooks),
        checkpoint_every=checkpoint_every if save else 0,
        on_checkpoint=save,
        before_result=before_result,
    )
    mask.metrics["task_index"] = t
    return mask
