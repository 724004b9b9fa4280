"""`learn: masks`: supermasks over the frozen base in every scenario (GG, GNs, GNu, NNs), weight masks or
neuron masks, kept exactly (store.kind masks), in Hopfield reservoirs (reservoir), or both."""

from __future__ import annotations

import dataclasses

from supermask.config.kinds.base import register_kind
from supermask.config.kinds.classification import ClassificationKind, check_named_method
from supermask.config.schema import SpecError
from supermask.config.sections import GN_SCENARIOS, Spec
from supermask.core.bases.networks import ARCHITECTURES, uses_batchnorm
from supermask.core.masks import MASK_METHODS, MaskSpec, check_mask_spec
from supermask.data import Stream

GATED_ARCHS = (
    "swish_gated_mlp",
)  # bases whose neurons are masked through gates after a batch standardisation
NNS_UNUSED_RUN = {
    field: "NNs learns the whole stream in one Ray task, without Ray Train"
    for field in ("strategy", "tasks_per_worker", "checkpoint_seconds", "max_failures", "storage_path")
}


class MasksKind(ClassificationKind):
    name = "masks"
    what = "supermasks over the frozen base"
    sections = ("base", "mask", "search", "inference", "nns", "store", "recovery")

    def unused_run(self, spec: Spec) -> dict[str, str]:
        return NNS_UNUSED_RUN if spec.run.scenario == "NNs" else {}

    def unused_section(self, spec: Spec, section: str) -> str:
        if section == "translation":
            return (
                f"translation: stream {spec.stream.name!r} is not a translation stream; remove the translation "
                "section (it is read by learn: translation, over streams such as toy_shapes)"
            )
        if section == "weights":
            return (
                "weights: set, but learn is 'masks' (the default), so it would be ignored; add learn: weights "
                "to train weights, or remove the weights section"
            )
        return super().unused_section(spec, section)

    def check_method(self, spec: Spec) -> None:
        check_named_method("mask", spec.mask, MASK_METHODS, check_mask_spec)

    def check(self, spec: Spec, stream: Stream) -> None:
        super().check(spec, stream)
        _check_inference(spec, stream.num_classes)
        _check_neuron_masks(spec)

    def method(self, spec: Spec) -> MaskSpec:
        return spec.mask

    def method_name(self, spec: Spec) -> str:
        return f"mask {spec.mask.method}"

    def record_fields(self, spec: Spec) -> dict:
        return {"mask": dataclasses.asdict(spec.mask)}


def _check_inference(spec: Spec, classes: int) -> None:
    """The inference settings against the base, for the scenarios that infer tasks."""
    if spec.run.scenario not in (*GN_SCENARIOS, "NNs"):
        return
    outputs = spec.base.num_outputs
    if spec.inference.objective == "G" and (outputs is None or outputs <= classes):
        raise SpecError(
            f"inference.objective: 'G' needs superfluous output neurons, but base.num_outputs is "
            f"{outputs}; set base.num_outputs above the stream's {classes} classes (SupSup uses 500) or use 'H'"
        )
    if spec.inference.mode == "per_sample" and uses_batchnorm(spec.base):
        raise SpecError(
            f"inference.mode: 'per_sample' infers each image alone, but base {spec.base.arch!r} has BatchNorm, "
            "whose batch statistics need more than one image: use mode per_batch with batch_images >= 2, "
            "or set base.batchnorm: false"
        )
    if spec.inference.mode == "per_batch" and uses_batchnorm(spec.base) and spec.inference.batch_images < 2:
        raise SpecError(
            f"inference.batch_images: got {spec.inference.batch_images}; base {spec.base.arch!r} has BatchNorm, "
            "whose batch statistics need at least 2 images per inference"
        )


def _check_neuron_masks(spec: Spec) -> None:
    """Neuron masks, the store kind and the recovery settings against each other and the base."""
    neuron = spec.mask.method == "neuron"
    gated = spec.base.arch in GATED_ARCHS
    reservoir = spec.store.kind in ("reservoir", "both")
    if reservoir and not neuron:
        raise SpecError(
            f"store.kind: got {spec.store.kind!r}; a Hopfield reservoir stores neuron masks (one bit per hidden "
            f"neuron), but mask.method is {spec.mask.method!r}: set mask.method: neuron, or store.kind: masks"
        )
    if reservoir and spec.run.scenario != "GG":
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
    if neuron and gated and spec.run.scenario in GN_SCENARIOS:
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
    if reservoir and gated and spec.recovery.batch_size < 2:
        raise SpecError(
            f"recovery.batch_size: got {spec.recovery.batch_size}; {spec.base.arch!r} standardises each hidden "
            "layer with the batch's own statistics, which need at least 2 images per recovered batch"
        )


MASKS = register_kind(MasksKind())
