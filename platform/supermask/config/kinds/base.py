"""A learner kind as the config layer sees it: which spec sections and run fields it reads, the rules it
adds, the fields that decide what its records hold, and how a sweep scores it.

A spec says its kind once, in `learn`; config/spec.py looks the kind up here (`SPEC_KINDS`) and
refuses a section or a run field the kind does not read, naming the field and the kind. The learner
itself (how it learns, stores and evaluates) is the class of the same name in recipes/learners/.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from supermask.config.schema import SpecError
from supermask.config.sections import COMMON_SECTIONS, RunSpec, Spec
from supermask.core.registry import Registry
from supermask.data import Stream

SPEC_KINDS: Registry[SpecKind] = Registry("learner kind")


def register_kind(kind: SpecKind) -> SpecKind:
    """Add a kind (an instance) to SPEC_KINDS under its name."""
    return SPEC_KINDS.register(kind.name)(kind)


def spec_kind(name: str) -> SpecKind:
    """The kind a spec's `learn` names; SpecError listing the known kinds for any other name."""
    if name not in SPEC_KINDS:
        raise SpecError(f"learn: got {name!r}; allowed: {', '.join(SPEC_KINDS.names())}")
    return SPEC_KINDS.get(name)


class SpecKind:
    """The spec rules of one learner kind (subclassed once per kind, registered as an instance)."""

    name: ClassVar[str]
    what: ClassVar[str]  # what the kind learns, for messages: "supermasks over the frozen base"
    sections: ClassVar[tuple[str, ...]]  # the sections it reads beyond COMMON_SECTIONS
    # run fields the kind never reads -> why (shown when a spec sets one)
    unused_run_fields: ClassVar[dict[str, str]] = {}
    task_form: ClassVar[str] = "labelled"  # the streams it learns (data.Stream.task_form)
    sweep_metrics: ClassVar[tuple[str, ...]] = ("val_accuracy", "val_accuracy_at_density")
    sweep_refusal: ClassVar[str | None] = None  # why a sweep cannot score this kind (None: it can)

    def used_sections(self, spec: Spec) -> tuple[str, ...]:
        """The sections `spec` may set: the common ones and this kind's."""
        return (*COMMON_SECTIONS, *self.sections)

    def unused_run(self, spec: Spec) -> dict[str, str]:
        """The run fields `spec` must leave at their defaults -> why."""
        return dict(self.unused_run_fields)

    def unused_section(self, spec: Spec, section: str) -> str:
        """The refusal of a section the kind does not read."""
        default = " (the default)" if spec.learn == "masks" else ""
        return (
            f"{section}: set, but learn is {spec.learn!r}{default}, which learns {self.what} and does not read "
            f"it; remove the {section} section (on the command line: --set {section}=null)"
        )

    def check(self, spec: Spec, stream: Stream) -> None:
        """The kind's own cross-field rules; SpecError naming the field."""

    def method(self, spec: Spec) -> Any:
        """The settings of what learns each task (a MaskSpec or a WeightSpec); None for kinds of their own."""
        return None

    def method_name(self, spec: Spec) -> str:
        """What learns each task, for messages: e.g. "mask topk"."""
        return self.name

    def record_fields(self, spec: Spec) -> dict:
        """Provenance fields (beyond stream, data, base and search) that decide what a task's record holds."""
        return {}

    def trial_epochs(self, base: dict, space: dict) -> int | None:
        """The most epochs a sweep trial of base spec `base` can report (None: budgets in iterations)."""
        if base["search"]["iterations"] is not None or "search.iterations" in space:
            return None
        if "search.epochs" in space:
            return max(space["search.epochs"].points())
        return base["search"]["epochs"]


def refuse_unused(spec: Spec, kind: SpecKind) -> None:
    """SpecError naming the first section or run field `spec` sets that `kind` does not read."""
    used = kind.used_sections(spec)
    for f in dataclasses.fields(spec):
        if f.name in ("name", "learn") or f.name in used:
            continue
        if getattr(spec, f.name) != f.default_factory():  # type: ignore[misc]
            raise SpecError(kind.unused_section(spec, f.name))
    defaults = RunSpec()
    for name, why in kind.unused_run(spec).items():
        value = getattr(spec.run, name)
        if value != getattr(defaults, name):
            raise SpecError(
                f"run.{name}: got {value!r}, but learn {spec.learn!r} does not read it ({why}); remove it"
            )


def measurements(steps: int, every: int) -> int:
    """Measurements a run of `steps` steps makes when it measures every `every` steps (0: at the end only)."""
    return math.ceil(steps / every) if every else 1
