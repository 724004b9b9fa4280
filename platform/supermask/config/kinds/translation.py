"""`learn: translation`: GANimorph image-translation tasks over a translation stream (toy_shapes,
unpaired_folders), checked before anything runs.

A translation task builds its own networks from the `translation` section (TranslationSettings), so
the sections that describe a classification base and its mask search (`base`, `search`,
`inference`, `nns`, `store`, `recovery`, `weights`) must be left out; `mask` is read only by
`translation.method: supermask`, and only by mask methods whose masks need no per-step controller
(topk, threshold). The resolution comes from the stream; every architecture choice is checked against
it (the encoder depth, each discriminator's needs, the MS-SSIM window) by building the networks on the
`meta` device, which allocates nothing.
"""

from __future__ import annotations

import dataclasses

import torch

from supermask.config.kinds.base import SpecKind, measurements, register_kind
from supermask.config.schema import SpecError
from supermask.config.sections import COMMON_SECTIONS, Spec
from supermask.core.masks import MaskSpec, check_mask_spec
from supermask.core.translation.discriminators import build_discriminator
from supermask.core.translation.generator import Generator
from supermask.core.translation.settings import TranslationSettings
from supermask.data import Stream

TRANSLATION_MASK_METHODS = ("topk", "threshold")
_WHY = {
    "base": "the networks come from the translation section (width, blocks, discriminator, ...)",
    "search": "a translation task trains for translation.steps at translation.lr",
    "inference": "translation tasks are run with their id (scenario GG)",
    "nns": "translation tasks are run with their id (scenario GG)",
}


def resolved_settings(spec: Spec, stream: Stream) -> TranslationSettings:
    """The translation section with its resolution and channels filled in from the stream."""
    channels, resolution = stream.input_shape[0], stream.input_shape[-1]
    return dataclasses.replace(spec.translation, resolution=int(resolution), channels=int(channels))


class TranslationKind(SpecKind):
    name = "translation"
    what = "image-translation tasks"
    sections = ("translation",)
    task_form = "translation"
    unused_run_fields = {
        "tasks_per_worker": "a translation worker trains one task at a time",
        "eval_batch_size": "translation.eval_size sets how many test pairs a task is measured on",
    }
    sweep_metrics = ("val_hausdorff",)

    def used_sections(self, spec: Spec) -> tuple[str, ...]:
        mask = ("mask",) if spec.translation.method == "supermask" else ()
        return (*COMMON_SECTIONS, *self.sections, *mask)

    def unused_section(self, spec: Spec, section: str) -> str:
        if section == "mask":
            return (
                "mask: translation.method is 'trained', which learns weights, not masks; remove the mask section "
                "or set translation.method: supermask"
            )
        why = _WHY.get(section, "it is read by the kinds that learn labelled tasks")
        return (
            f"{section}: stream {spec.stream.name!r} is a translation stream ({why}); remove the {section} section "
            f"(on the command line: --set {section}=null)"
        )

    def check(self, spec: Spec, stream: Stream) -> None:
        if spec.run.scenario != "GG":
            raise SpecError(
                f"run.scenario: got {spec.run.scenario!r}; translation tasks are run with their id: use GG"
            )
        t = spec.translation
        if t.method == "supermask":
            if spec.mask.method not in TRANSLATION_MASK_METHODS:
                raise SpecError(
                    f"mask.method: got {spec.mask.method!r}; translation supermasks take "
                    f"{', '.join(TRANSLATION_MASK_METHODS)}"
                )
            try:
                check_mask_spec(spec.mask)
            except ValueError as e:
                raise SpecError(str(e)) from None
        try:
            settings = resolved_settings(spec, stream)
            with torch.device(
                "meta"
            ):  # builds every network (checking each against the resolution), allocates nothing
                Generator(settings)
                build_discriminator(settings)
        except ValueError as e:
            raise SpecError(f"{e} (the resolution is the stream's: stream.options.resolution)") from None
        if t.ms_ssim_window > settings.resolution and t.cycle_loss == "ms_ssim_l1":
            raise SpecError(
                f"translation.ms_ssim_window: got {t.ms_ssim_window}; must be at most the resolution "
                f"({settings.resolution})"
            )
        test_size = getattr(stream, "test_size", None)
        if test_size is not None and t.eval_size > test_size:
            raise SpecError(
                f"translation.eval_size: got {t.eval_size}; the stream holds {test_size} test pairs per task "
                "(raise stream.options.test_size or lower eval_size)"
            )
        if t.eval_every and t.eval_every > t.steps:
            raise SpecError(
                f"translation.eval_every: got {t.eval_every}; more than translation.steps ({t.steps}): "
                "use 0 to measure at the end only"
            )
        if (
            spec.run.strategy == "data_parallel"
            and spec.run.num_workers
            and t.batch_size < spec.run.num_workers
        ):
            raise SpecError(
                f"translation.batch_size: got {t.batch_size}; {spec.run.num_workers} data-parallel workers need "
                "at least one image each"
            )

    def method(self, spec: Spec) -> MaskSpec | None:
        return spec.mask if spec.translation.method == "supermask" else None

    def method_name(self, spec: Spec) -> str:
        return f"translation {spec.translation.method}"

    def trial_epochs(self, base: dict, space: dict) -> int:
        """A translation trial's "epochs" are its measurements (every translation.eval_every steps)."""
        translation = base["translation"]
        steps = (
            space["translation.steps"].points() if "translation.steps" in space else [translation["steps"]]
        )
        return max(measurements(n, translation["eval_every"]) for n in steps)


TRANSLATION = register_kind(TranslationKind())
