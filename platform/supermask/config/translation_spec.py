"""The rules of a translation spec (a `toy_shapes` or `unpaired_folders` stream), checked before anything runs.

A translation task builds its own networks from the `translation` section (TranslationSettings), so
the sections that describe a classification base and its mask search (`base`, `search`,
`inference`, `nns`) must be left out; `mask` is read only by `translation.method: supermask`, and
only by mask methods whose masks need no per-step controller (topk, threshold). The resolution comes
from the stream; every architecture choice is checked against it (the encoder depth, each
discriminator's needs, the MS-SSIM window) by building the networks on the `meta` device, which
allocates nothing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from supermask.config.schema import SpecError
from supermask.core.bases.networks import BaseSpec
from supermask.core.inference.nns import NNsConfig
from supermask.core.inference.one_shot import InferenceConfig
from supermask.core.masks import MaskSpec, check_mask_spec
from supermask.core.search.stacked_search import SearchConfig
from supermask.core.translation.discriminators import build_discriminator
from supermask.core.translation.generator import Generator
from supermask.core.translation.settings import TranslationSettings
from supermask.data.streams import Stream
from supermask.data.translation_streams import is_translation_stream

if TYPE_CHECKING:
    from supermask.config.spec import Spec

TRANSLATION_MASK_METHODS = ("topk", "threshold")
_UNUSED = {
    "base": (BaseSpec, "the networks come from the translation section (width, blocks, discriminator, ...)"),
    "search": (SearchConfig, "a translation task trains for translation.steps at translation.lr"),
    "inference": (InferenceConfig, "translation tasks are run with their id (scenario GG)"),
    "nns": (NNsConfig, "translation tasks are run with their id (scenario GG)"),
}


def is_translation_spec(spec: Spec) -> bool:
    """Whether a spec's stream hands out translation tasks."""
    return is_translation_stream(spec.stream.name)


def resolved_settings(spec: Spec, stream: Stream) -> TranslationSettings:
    """The translation section with its resolution and channels filled in from the stream."""
    channels, resolution = stream.input_shape[0], stream.input_shape[-1]
    return dataclasses.replace(spec.translation, resolution=int(resolution), channels=int(channels))


def check_translation_spec(spec: Spec, stream: Stream) -> None:
    """SpecError naming the field of a translation spec that cannot run."""
    for section, (cls, why) in _UNUSED.items():
        if getattr(spec, section) != cls():
            raise SpecError(
                f"{section}: stream {spec.stream.name!r} is a translation stream ({why}); remove the {section} section"
            )
    if spec.run.scenario != "GG":
        raise SpecError(
            f"run.scenario: got {spec.run.scenario!r}; translation tasks are run with their id: use GG"
        )
    t = spec.translation
    if t.method == "trained" and spec.mask != MaskSpec():
        raise SpecError(
            "mask: translation.method is 'trained', which learns weights, not masks; remove the mask section "
            "or set translation.method: supermask"
        )
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
    if spec.run.strategy == "data_parallel" and spec.run.num_workers and t.batch_size < spec.run.num_workers:
        raise SpecError(
            f"translation.batch_size: got {t.batch_size}; {spec.run.num_workers} data-parallel workers need "
            "at least one image each"
        )
