"""What the workers of a Ray Train run do, once the driver has worked it out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supermask.recipes.learn import CheckpointPolicy
from supermask.recipes.learners import Learner
from supermask.runtime.events import append_records


@dataclass
class Plan:
    """A learner, its store, the blocks with work left, and the run folder its workers write into."""

    learner: Learner
    store: Any
    blocks: list[list[int]]  # task indices, one learner block each; only blocks with work left
    out_dir: str

    @property
    def events_path(self) -> Path:
        return Path(self.out_dir) / "events.jsonl"

    def checkpoint(self, task_ids: list[str]) -> Path | None:
        """Where a block's checkpoint goes (None: run.checkpoint_seconds 0, never)."""
        if self.learner.run.checkpoint_seconds == 0:
            return None
        return Path(self.out_dir) / "checkpoints" / f"{self.learner.checkpoint_name(task_ids)}.pt"

    def probe_sink(self) -> Callable[[list[dict]], None]:
        """Where a worker's probe records go: lines of the run's metrics.jsonl."""
        path = Path(self.out_dir) / "metrics.jsonl"
        return lambda records: append_records(path, records)

    def policy(self) -> CheckpointPolicy:
        return CheckpointPolicy(every=self.learner.run.checkpoint_seconds)
