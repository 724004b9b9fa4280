"""The spec rules every kind that learns labelled tasks over a classification base shares (masks,
weights, fine_tune): the architecture, the search budget and the outputs against the stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from supermask.config.kinds.base import SpecKind
from supermask.config.schema import SpecError
from supermask.config.sections import Spec
from supermask.core.bases.networks import ARCHITECTURES, check_base_options
from supermask.core.registry import Registry
from supermask.data import Stream


def check_named_method(section: str, settings: Any, methods: Registry, check: Callable[[Any], None]) -> None:
    """SpecError naming `<section>.method` when it names no method of `methods`, or the field `check` names."""
    if settings.method not in methods:
        raise SpecError(f"{section}.method: got {settings.method!r}; known: {', '.join(methods.names())}")
    try:
        check(settings)
    except ValueError as e:
        raise SpecError(str(e)) from None


class ClassificationKind(SpecKind):
    """A kind that learns each labelled task over the spec's base with the stacked search."""

    def check(self, spec: Spec, stream: Stream) -> None:
        if spec.base.arch not in ARCHITECTURES:
            raise SpecError(f"base.arch: got {spec.base.arch!r}; known: {', '.join(ARCHITECTURES.names())}")
        self.check_method(spec)
        try:
            check_base_options(spec.base)
            stream.resolve_base(spec.base)  # the stream's inputs against what the architecture reads
        except ValueError as e:
            raise SpecError(str(e)) from None
        if stream.input_dtype != torch.float32 and spec.run.scenario != "GG":
            raise SpecError(
                f"run.scenario: got {spec.run.scenario!r}; task inference (GNs, GNu, NNs) is not implemented for "
                f"token streams such as {spec.stream.name!r}: use GG"
            )
        if spec.search.epochs is None and spec.search.iterations is None:
            raise SpecError("search: set search.epochs or search.iterations (the search's budget)")
        outputs = spec.base.num_outputs
        if outputs is not None and outputs < stream.num_classes:
            raise SpecError(
                f"base.num_outputs: got {outputs}; stream {spec.stream.name!r} has {stream.num_classes} classes "
                f"per task, so the base needs at least {stream.num_classes} outputs (leave it unset for exactly "
                f"{stream.num_classes})"
            )

    def check_method(self, spec: Spec) -> None:
        """The section of what learns each task (mask or weights); SpecError naming the field."""
