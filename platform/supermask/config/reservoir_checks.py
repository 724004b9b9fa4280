"""The spec rules for neuron masks, Hopfield reservoirs and recovery (`store`, `recovery`), checked up front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from supermask.config.schema import SpecError
from supermask.core.bases.networks import ARCHITECTURES, uses_batchnorm

if TYPE_CHECKING:
    from supermask.config.spec import Spec

GATED_ARCHS = (
    "swish_gated_mlp",
)  # bases whose neurons are masked through gates after a batch standardisation


def check_reservoir_fields(spec: Spec) -> None:
    """Raise SpecError naming the field when neuron masks, the store kind and the recovery settings do not fit."""
    neuron = spec.mask.method == "neuron"
    gated = spec.base.arch in GATED_ARCHS
    if spec.store.has_reservoir and not neuron:
        raise SpecError(
            f"store.kind: got {spec.store.kind!r}; a Hopfield reservoir stores neuron masks (one bit per hidden "
            f"neuron), but mask.method is {spec.mask.method!r}: set mask.method: neuron, or store.kind: masks"
        )
    if spec.store.has_reservoir and spec.run.scenario != "GG":
        raise SpecError(
            f"run.scenario: got {spec.run.scenario!r}; with store.kind {spec.store.kind!r} a run learns with task "
            "ids and evaluates recovery from the reservoir without them (reported beside GG): set run.scenario: GG, "
            "or store.kind: masks for GNs/GNu/NNs"
        )
    if neuron and spec.run.scenario == "NNs":
        raise SpecError(
            "run.scenario: 'NNs' learns weight masks without task ids; mask.method 'neuron' is not supported there: "
            "use store.kind reservoir (recovery without task ids) or another mask.method"
        )
    if neuron and gated and spec.run.scenario in ("GNs", "GNu"):
        raise SpecError(
            f"run.scenario: {spec.run.scenario!r} infers tasks from a superposition of masks, which the batch "
            f"standardisation of {spec.base.arch!r} undoes; use store.kind: both with run.scenario: GG to recover "
            "tasks from the reservoir, or base.arch: swish_mlp"
        )
    if neuron and spec.base.arch in ARCHITECTURES and not gated and uses_batchnorm(spec.base):
        raise SpecError(
            f"mask.method: 'neuron' masks a neuron as a row of the weights, which the BatchNorm of "
            f"{spec.base.arch!r} after it undoes (a zeroed row is normalised to -mean/std): set "
            "base.batchnorm: false, or use base.arch swish_gated_mlp (neurons gated after the normalisation)"
        )
    if spec.store.has_reservoir and gated and spec.recovery.batch_size < 2:
        raise SpecError(
            f"recovery.batch_size: got {spec.recovery.batch_size}; {spec.base.arch!r} standardises each hidden "
            "layer with the batch's own statistics, which need at least 2 images per recovered batch"
        )
