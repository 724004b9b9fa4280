"""`learn: weights`: a network trained per task from the base's weights (dense, STR, magnitude pruning),
in the same stacked loop, blocks and Ray Train run as masks; kept in its smallest format (kind
"weights" in the mask store, never read as a mask) and evaluated with the task id (GG)."""

from __future__ import annotations

import time
from typing import Any

from supermask.recipes.learners.base import Evaluation, register_learner
from supermask.recipes.learners.stacked import StackedLearner


@register_learner
class WeightsLearner(StackedLearner):
    name = "weights"
    progress_label = "training weights"
    records_noun = "record(s)"

    def read_records(self, store: Any, ids: list[str]) -> list:
        return store.get_weights_many(ids, fingerprint=self.recipe.base_fingerprint)

    def evaluate(self, ev: Evaluation) -> None:
        started = time.perf_counter()
        self.read_back(ev)
        ev.result.timing["read_back_seconds"] = time.perf_counter() - started
