"""Settings of one image-translation task: models, losses and optimiser, every piece selectable."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from supermask.core.fields import check_fields, choices, in_range, resolved

DISCRIMINATOR_KINDS = ("dilated", "patch", "global")
NORMS = ("instance", "none")
ACTIVATIONS = ("leaky_relu", "relu")
GAN_LOSSES = ("nonsaturating", "lsgan")
CYCLE_LOSSES = ("ms_ssim_l1", "l1")
METHODS = ("trained", "supermask")
BASE_INITS = ("signed_constant", "kaiming_normal", "kaiming_uniform")
FREE_PARAMS = ("affine", "none")
# Fields that decide how often a run is measured, never what it learns: a checkpoint resumes under
# other values, and a task's provenance leaves them out.
EVALUATION_FIELDS = ("eval_every", "eval_size", "samples")


@dataclass(frozen=True)
class TranslationSettings:
    """One translation task (both directions, two generators and two discriminators), GANimorph's defaults.

    The source trains at 128 px with width 64; smaller widths make CPU runs possible. Loss weights:
    total = gan_weight * GAN + fm_weight * FM + cycle_weight * (ssim_share * (1 - MS-SSIM)
    + (1 - ssim_share) * L1), each of the four terms divided by its scheduled running mean when
    `normalize_losses` is on. With `cycle_loss: l1` the cycle term is L1 alone; with
    `feature_matching` off the FM term is dropped (the other weights are kept as they are).
    """

    # In a task spec, resolution and channels come from the stream (its images), never by hand.
    resolution: int = field(default=128, metadata={**in_range(16), **resolved()})
    channels: int = field(default=3, metadata={**in_range(1), **resolved()})
    seed: int = field(default=0, metadata=in_range(0))  # the networks' init and the batch order
    # Generator: stride-2 encoder convs (None: down to 8 x 8 as the source at 128 px, at least 3), then
    # `blocks` concatenating blocks per group at the three coarsest scales and after each skip.
    width: int = field(default=64, metadata=in_range(1))
    blocks: int = field(default=3, metadata=in_range(0))
    downsamplings: int | None = field(default=None, metadata=in_range(3))
    norm: str = field(default="instance", metadata=choices(*NORMS))
    activation: str = field(default="leaky_relu", metadata=choices(*ACTIVATIONS))
    # Discriminator
    discriminator: str = field(default="dilated", metadata=choices(*DISCRIMINATOR_KINDS))
    disc_width: int = field(default=64, metadata=in_range(1))
    # Losses
    gan_loss: str = field(default="nonsaturating", metadata=choices(*GAN_LOSSES))
    cycle_loss: str = field(default="ms_ssim_l1", metadata=choices(*CYCLE_LOSSES))
    feature_matching: bool = True
    normalize_losses: bool = True
    normalize_every: int = field(default=200, metadata=in_range(1))  # generator steps between refreshes
    normalize_beta: float = field(default=0.99, metadata=in_range(0.0, 1.0))
    gan_weight: float = field(default=0.49, metadata=in_range(0.0))
    fm_weight: float = field(default=0.21, metadata=in_range(0.0))
    cycle_weight: float = field(default=0.30, metadata=in_range(0.0))
    ssim_share: float = field(default=0.7, metadata=in_range(0.0, 1.0))
    ms_ssim_scales: int = field(default=5, metadata=in_range(1, 5))
    ms_ssim_window: int = field(default=8, metadata=in_range(2))
    # Optimisation
    lr: float = field(default=2e-4, metadata=in_range(0.0, lo_open=True))
    beta1: float = field(default=0.5, metadata=in_range(0.0, 1.0))
    beta2: float = field(default=0.999, metadata=in_range(0.0, 1.0))
    batch_size: int = field(default=16, metadata=in_range(1))
    generator_steps_per_d_step: int = field(default=2, metadata=in_range(1))
    steps: int = field(default=2000, metadata=in_range(1))  # generator steps a task trains for
    # What a task learns: `trained` trains the four networks (the source); `supermask` learns a mask
    # (the spec's `mask` section: method, density) over frozen random networks drawn from `base_seed`
    # and shared by every task, plus, with free_params `affine`, the instance-norm scales and shifts
    # and the few biases (`none`: those stay at 1, 0 and 0, and a task is its mask bits alone).
    method: str = field(default="trained", metadata=choices(*METHODS))
    base_seed: int = field(default=0, metadata=in_range(0))
    base_init: str = field(default="signed_constant", metadata=choices(*BASE_INITS))
    mask_discriminator: bool = True  # supermask: the discriminators are masks over frozen ones too
    free_params: str = field(default="affine", metadata=choices(*FREE_PARAMS))
    # Measurement: every `eval_every` steps (0: at the end only) `eval_size` held-out pairs are scored
    # and a grid of `samples` rows is drawn.
    eval_every: int = field(default=0, metadata=in_range(0))
    eval_size: int = field(default=100, metadata=in_range(1))
    samples: int = field(default=6, metadata=in_range(1))

    def __post_init__(self) -> None:
        check_fields(self, "translation.")
        downs = self.encoder_downsamplings
        if self.resolution % (2**downs) != 0:
            raise ValueError(
                f"translation.resolution: got {self.resolution}; must be a multiple of 2**{downs} "
                f"({2**downs}) for {downs} stride-2 encoder convs (set translation.downsamplings lower)"
            )

    @property
    def encoder_downsamplings(self) -> int:
        """Stride-2 encoder convs: the given number, else enough to reach 8 x 8 (at least 3)."""
        if self.downsamplings is not None:
            return self.downsamplings
        return max(3, int(math.log2(self.resolution)) - 3)

    def to_dict(self) -> dict:
        """Plain values only (what a checkpoint or a results file stores)."""
        return asdict(self)

    def training_dict(self) -> dict:
        """The fields that decide what a training step does (not the budget, not the measurements)."""
        return {k: v for k, v in asdict(self).items() if k not in (*EVALUATION_FIELDS, "steps")}
