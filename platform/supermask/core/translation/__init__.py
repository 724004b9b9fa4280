"""Unpaired image-to-image translation with shape change (GANimorph), framework-free.

Settings, the generator, three discriminators (dilated, patch, global) with computed receptive
fields, the losses (GAN, feature matching, MS-SSIM + L1 cycle, scheduled normalisation), a resumable
trainer for one task in both directions (trained networks, or supermasks over frozen random ones),
outline metrics (Hausdorff distances between polygons), the evaluation against identity and truth
references, and the record a learned task is kept as.
"""

from supermask.core.translation.discriminators import (
    DISCRIMINATORS,
    DilatedDiscriminator,
    GlobalDiscriminator,
    PatchDiscriminator,
    ReceptiveField,
    build_discriminator,
    receptive_field,
)
from supermask.core.translation.evaluation import (
    TranslationTestSet,
    evaluate_translation,
    hausdorff_score,
    references,
    sample_grid,
)
from supermask.core.translation.generator import ConcatBlock, Generator, maskable_weights
from supermask.core.translation.losses import LossNormalizer, ms_ssim
from supermask.core.translation.masked import MaskedNetwork
from supermask.core.translation.metrics import (
    OutlineScores,
    directed_hausdorff,
    extract_outline,
    hausdorff,
    outline_scores,
    polygon_outline,
)
from supermask.core.translation.records import (
    KIND_TRANSLATION,
    TranslationRecord,
    generators_from_record,
    record_from_trainer,
)
from supermask.core.translation.settings import TranslationSettings
from supermask.core.translation.trainer import TranslationTrainer, UnpairedImages, base_fingerprint

__all__ = [
    "DISCRIMINATORS",
    "KIND_TRANSLATION",
    "MaskedNetwork",
    "TranslationRecord",
    "TranslationTestSet",
    "base_fingerprint",
    "evaluate_translation",
    "generators_from_record",
    "hausdorff_score",
    "record_from_trainer",
    "references",
    "sample_grid",
    "ConcatBlock",
    "DilatedDiscriminator",
    "Generator",
    "GlobalDiscriminator",
    "LossNormalizer",
    "OutlineScores",
    "PatchDiscriminator",
    "ReceptiveField",
    "TranslationSettings",
    "TranslationTrainer",
    "UnpairedImages",
    "build_discriminator",
    "directed_hausdorff",
    "extract_outline",
    "hausdorff",
    "maskable_weights",
    "ms_ssim",
    "outline_scores",
    "polygon_outline",
    "receptive_field",
]
