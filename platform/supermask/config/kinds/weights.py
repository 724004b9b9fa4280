"""`learn: weights` (a network trained per task: dense, STR, magnitude pruning) and `learn: fine_tune`
(one network trained through the stream, the baseline that forgets): the `weights` section, task ids
always given (GG)."""

from __future__ import annotations

import dataclasses

from supermask.config.kinds.base import register_kind
from supermask.config.kinds.classification import ClassificationKind, check_named_method
from supermask.config.schema import SpecError
from supermask.config.sections import Spec
from supermask.core.weights import WEIGHT_METHODS, WeightSpec, check_weight_spec


class WeightsKind(ClassificationKind):
    name = "weights"
    what = "a network trained per task"
    sections = ("base", "search", "weights")
    mode = "per_task"  # how records of this kind recorded their kind in provenance, kept so they still match

    def check_method(self, spec: Spec) -> None:
        check_named_method("weights", spec.weights, WEIGHT_METHODS, check_weight_spec)
        if spec.run.scenario != "GG":
            raise SpecError(
                f"run.scenario: got {spec.run.scenario!r}; trained weights are evaluated with the task id (GG): "
                "task inference (GNs, GNu, NNs) chooses among masks over one base. Set run.scenario: GG, or "
                "learn: masks"
            )

    def method(self, spec: Spec) -> WeightSpec:
        return spec.weights

    def method_name(self, spec: Spec) -> str:
        return f"weights {spec.weights.method} ({self.mode})"

    def record_fields(self, spec: Spec) -> dict:
        return {"learn": "weights", "weights": {**dataclasses.asdict(spec.weights), "mode": self.mode}}


class FineTuneKind(WeightsKind):
    name = "fine_tune"
    what = "one network trained through the stream"
    mode = "fine_tune"
    unused_run_fields = {
        "strategy": "fine_tune trains one network through the stream, task after task, in one process",
        "num_workers": "one process learns task after task",
        "tasks_per_worker": "one process learns one task at a time",
    }
    sweep_refusal = (
        "learn fine_tune trains one network through the whole stream; a sweep scores each task's own "
        "network: set learn: weights (e.g. set: {learn: weights})"
    )


WEIGHTS = register_kind(WeightsKind())
FINE_TUNE = register_kind(FineTuneKind())
