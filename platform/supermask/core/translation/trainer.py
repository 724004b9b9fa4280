"""Training one translation task, CycleGAN-style: two generators (X->Y, Y->X), two discriminators.

Framework-free: `TranslationTrainer.train_step(x, y)` is one generator step (and a discriminator step
every `generator_steps_per_d_step` steps); `run(data, steps)` draws every batch from (seed, step), so a
run resumed from `state_dict()` continues exactly as if it had never stopped. The state holds only
tensors and plain values (torch.load(..., weights_only=True) reads it).

The generator loss, summed over both directions, is
gan_weight * GAN + fm_weight * FM + cycle_weight * (ssim_share * (1 - MS-SSIM) + (1 - ssim_share) * L1),
each raw term divided by its scheduled running mean (`LossNormalizer`) when settings.normalize_losses.

With settings.method `supermask` the networks are `MaskedNetwork`s over frozen random ones (masked.py)
and only the scores (and the free parameters) train; the loop is the same.

Data parallel: with `shard=(rank, world)` a trainer takes its slice of every batch, and `grad_sync`
(called on the trainable parameters after each backward) and `value_sync` (on the raw loss values
before the normaliser sees them) keep the ranks identical, as an all-reduce mean does.
Hooks (`run(..., hooks=...)`, e.g. norm or saturation probes) see the trainer after every step and
may add numbers to the step's metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from supermask.core.masks import MaskSpec
from supermask.core.search.optimizers import Adam
from supermask.core.translation.discriminators import build_discriminator
from supermask.core.translation.generator import Generator
from supermask.core.translation.losses import (
    LossNormalizer,
    cycle_terms,
    feature_matching_loss,
    gan_discriminator_loss,
    gan_generator_loss,
)
from supermask.core.translation.masked import MaskedNetwork, freeze_at_random, network_fingerprint
from supermask.core.translation.settings import TranslationSettings

log = logging.getLogger(__name__)
NETWORKS = ("g_xy", "g_yx", "d_x", "d_y")
_DOMAIN_SALT = {"x": 0x7A, "y": 0x7B}


def derived_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for one network or stream of a run (blake2b, never Python's hash())."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True, eq=False)
class UnpairedImages:
    """Training images of two domains, unpaired: x (N, C, H, W) and y (M, C, H, W), float32 in [0, 1]."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] == 0:
                raise ValueError(f"UnpairedImages.{name} must be a non-empty (N, C, H, W) tensor")
        if self.x.shape[1:] != self.y.shape[1:]:
            raise ValueError(
                f"domains X and Y must share channels and size; got {tuple(self.x.shape[1:])} and {tuple(self.y.shape[1:])}"
            )

    def indices(self, domain: str, seed: int, step: int, size: int) -> np.ndarray:
        """Batch `step`'s indices into one domain: epochs of seeded permutations, a pure function of step."""
        n = len(self.x if domain == "x" else self.y)
        positions = np.arange(step * size, (step + 1) * size)
        out = np.empty(size, dtype=np.int64)
        for epoch in np.unique(positions // n):
            order = np.random.default_rng([seed, _DOMAIN_SALT[domain], int(epoch)]).permutation(n)
            here = positions // n == epoch
            out[here] = order[positions[here] % n]
        return out

    def batch(self, seed: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `step` of both domains, drawn independently."""
        ix = torch.from_numpy(self.indices("x", seed, step, size))
        iy = torch.from_numpy(self.indices("y", seed, step, size))
        return self.x[ix], self.y[iy]


def _build(settings: TranslationSettings, name: str, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, name))
        return Generator(settings) if name.startswith("g_") else build_discriminator(settings)


def frozen_networks(settings: TranslationSettings) -> dict[str, nn.Module]:
    """The frozen random networks that supermask tasks share: a pure function of the architecture,
    base_seed and base_init (never of a task's own seed)."""
    return {
        name: freeze_at_random(
            _build(settings, name, settings.base_seed),
            settings.base_init,
            derived_seed(settings.base_seed, f"frozen:{name}"),
        )
        for name in NETWORKS
    }


def base_fingerprint(settings: TranslationSettings) -> str:
    """The fingerprint of the frozen networks a supermask task is learned over ('' for trained tasks)."""
    if settings.method != "supermask":
        return ""
    return network_fingerprint(frozen_networks(settings))


def build_networks(settings: TranslationSettings, mask: MaskSpec | None = None) -> dict[str, nn.Module]:
    """The four networks of a task: trained from the task's seed, or masks over the shared frozen ones."""
    if settings.method == "trained":
        return {name: _build(settings, name, settings.seed) for name in NETWORKS}
    mask = mask or MaskSpec()
    frozen = frozen_networks(settings)
    nets = {}
    for name in NETWORKS:
        if name.startswith("g_") or settings.mask_discriminator:
            seed = derived_seed(settings.seed, f"scores:{name}") & 0x7FFFFFFF
            nets[name] = MaskedNetwork(frozen[name], mask, seed, settings.free_params)
        else:
            nets[name] = _build(settings, name, settings.seed)
    return nets


def _adam_state(saved: dict, count: int) -> dict:
    """An optimizer state as core/search/optimizers' Adam keeps it; a torch.optim.Adam state (checkpoints
    written before the trainer used core/search/optimizers) is converted, so those runs resume unchanged."""
    if "param_groups" not in saved:
        return saved
    per_param = saved["state"]
    state = [
        {k: int(v) if k == "step" else v for k, v in per_param[i].items()} if i in per_param else {}
        for i in range(count)
    ]
    return {"lr": float(saved["param_groups"][0]["lr"]), "state": state}


def _trainable(*nets: nn.Module) -> list[nn.Parameter]:
    return [p for net in nets for p in net.parameters() if p.requires_grad]


class TranslationTrainer:
    """Two generators and two discriminators learning one unpaired translation task, both directions."""

    def __init__(
        self,
        settings: TranslationSettings,
        device: torch.device | str = "cpu",
        *,
        mask: MaskSpec | None = None,
        shard: tuple[int, int] | None = None,
        grad_sync: Callable[[list[nn.Parameter]], None] | None = None,
        value_sync: Callable[[dict[str, float]], dict[str, float]] | None = None,
    ) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.mask = (mask or MaskSpec()) if settings.method == "supermask" else None
        nets = {name: net.to(self.device) for name, net in build_networks(settings, self.mask).items()}
        self.g_xy, self.g_yx, self.d_x, self.d_y = (nets[n] for n in NETWORKS)
        betas = (settings.beta1, settings.beta2)
        self.gen_params = _trainable(self.g_xy, self.g_yx)
        self.disc_params = _trainable(self.d_x, self.d_y)
        # core/search/optimizers' Adam: torch.optim's arithmetic without its torch._dynamo import (seconds per process)
        self.opt_g = Adam(self.gen_params, lr=settings.lr, betas=betas)
        self.opt_d = Adam(self.disc_params, lr=settings.lr, betas=betas)
        self.normalizer = LossNormalizer(settings.normalize_every, settings.normalize_beta)
        self.shard, self.grad_sync, self.value_sync = shard, grad_sync, value_sync
        if shard is not None and settings.batch_size < shard[1]:
            raise ValueError(
                f"translation.batch_size: got {settings.batch_size}; {shard[1]} data-parallel workers need "
                "at least one image each"
            )
        self.step = 0

    def networks(self) -> dict[str, nn.Module]:
        return {"g_xy": self.g_xy, "g_yx": self.g_yx, "d_x": self.d_x, "d_y": self.d_y}

    def _norm(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return self.normalizer(name, value) if self.settings.normalize_losses else value

    def _generator_loss(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        s = self.settings
        fake_y, fake_x = self.g_xy(x), self.g_yx(y)
        rec_x, rec_y = self.g_yx(fake_y), self.g_xy(fake_x)
        logits_y, taps_fake_y = self.d_y(fake_y)
        logits_x, taps_fake_x = self.d_x(fake_x)
        raw = {"gan": gan_generator_loss(logits_y, s.gan_loss) + gan_generator_loss(logits_x, s.gan_loss)}
        if s.feature_matching:
            with torch.no_grad():
                _, taps_real_y = self.d_y(y)
                _, taps_real_x = self.d_x(x)
            raw["fm"] = feature_matching_loss(taps_real_y, taps_fake_y) + feature_matching_loss(
                taps_real_x, taps_fake_x
            )
        use_ssim = s.cycle_loss == "ms_ssim_l1"
        tx = cycle_terms(x, rec_x, use_ms_ssim=use_ssim, scales=s.ms_ssim_scales, window=s.ms_ssim_window)
        ty = cycle_terms(y, rec_y, use_ms_ssim=use_ssim, scales=s.ms_ssim_scales, window=s.ms_ssim_window)
        raw["cycle_l1"] = tx["l1"] + ty["l1"]
        if use_ssim:
            raw["cycle_ssim"] = tx["ssim"] + ty["ssim"]
        cycle = self._norm("cycle_l1", raw["cycle_l1"])
        if use_ssim:
            cycle = s.ssim_share * self._norm("cycle_ssim", raw["cycle_ssim"]) + (1.0 - s.ssim_share) * cycle
        total = s.gan_weight * self._norm("gan", raw["gan"]) + s.cycle_weight * cycle
        if s.feature_matching:
            total = total + s.fm_weight * self._norm("fm", raw["fm"])
        return total, raw, (fake_x.detach(), fake_y.detach())

    def _discriminator_step(
        self, x: torch.Tensor, y: torch.Tensor, fake_x: torch.Tensor, fake_y: torch.Tensor
    ) -> dict[str, float]:
        kind = self.settings.gan_loss
        real_x, _ = self.d_x(x)
        real_y, _ = self.d_y(y)
        gen_x, _ = self.d_x(fake_x)
        gen_y, _ = self.d_y(fake_y)
        loss = gan_discriminator_loss(real_x, gen_x, kind) + gan_discriminator_loss(real_y, gen_y, kind)
        self.opt_d.zero_grad()
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.disc_params)
        self.opt_d.step()
        with torch.no_grad():
            real = torch.cat([real_x.flatten(), real_y.flatten()])
            gen = torch.cat([gen_x.flatten(), gen_y.flatten()])
            accuracy = 0.5 * ((real > 0).float().mean() + (gen < 0).float().mean())
        return {"d_loss": float(loss.detach()), "d_accuracy": float(accuracy)}

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One generator step on batches x (domain X) and y (domain Y), and the discriminators' turn."""
        x, y = x.to(self.device), y.to(self.device)
        for d in (self.d_x, self.d_y):
            d.requires_grad_(False)
        total, raw, (fake_x, fake_y) = self._generator_loss(x, y)
        self.opt_g.zero_grad()
        total.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.gen_params)
        self.opt_g.step()
        values = {name: float(v.detach()) for name, v in raw.items()}
        if self.value_sync is not None:
            values = self.value_sync(values)
        self.normalizer.update(values)
        metrics = {"step": self.step, "g_loss": float(total.detach()), **values}
        if self.step % self.settings.generator_steps_per_d_step == 0:
            for d in (self.d_x, self.d_y):
                d.requires_grad_(True)
            metrics.update(self._discriminator_step(x, y, fake_x, fake_y))
        self.step += 1
        return metrics

    def batch(self, data: UnpairedImages) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's batch (this rank's slice of it when data-parallel): a pure function of (seed, step)."""
        x, y = data.batch(self.settings.seed, self.step, self.settings.batch_size)
        if self.shard is not None:
            rank, world = self.shard
            x, y = x[rank::world], y[rank::world]
        return x, y

    def run(
        self,
        data: UnpairedImages,
        steps: int,
        *,
        on_step: Callable[[dict[str, float]], None] | None = None,
        hooks: Sequence[Callable[[TranslationTrainer, dict], dict | None]] = (),
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict[str, float]]:
        """Train until `steps` generator steps in all (from wherever the trainer stands), or until
        `should_stop()` says so after a step. Each hook sees the trainer and the step's metrics after
        every step; what it returns is added to them. Then `on_step` gets the metrics."""
        history = []
        while self.step < steps:
            metrics = self.train_step(*self.batch(data))
            for hook in hooks:
                metrics.update(hook(self, metrics) or {})
            history.append(metrics)
            if on_step is not None:
                on_step(metrics)
            if should_stop is not None and should_stop():
                break
        return history

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "xy", chunk: int = 64) -> torch.Tensor:
        """Images of one domain translated to the other ('xy' or 'yx'), on the CPU."""
        if direction not in ("xy", "yx"):
            raise ValueError(f"direction: got {direction!r}; allowed: xy, yx")
        gen = self.g_xy if direction == "xy" else self.g_yx
        out = [gen(images[i : i + chunk].to(self.device)).cpu() for i in range(0, len(images), chunk)]
        return torch.cat(out)

    def state_dict(self) -> dict:
        """Everything a resumed run needs: tensors and plain values only."""
        return {
            "settings": self.settings.to_dict(),
            "mask": dataclasses.asdict(self.mask) if self.mask is not None else None,
            "step": self.step,
            "networks": {name: net.state_dict() for name, net in self.networks().items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "normalizer": self.normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`; settings that differ from this trainer's are an error."""
        ours = self.settings.training_dict()
        theirs = state["settings"]
        differ = [k for k in ours if ours[k] != theirs.get(k)]
        mine = dataclasses.asdict(self.mask) if self.mask is not None else None
        if mine != state.get("mask"):
            differ.append("mask")
            theirs, ours = {**theirs, "mask": state.get("mask")}, {**ours, "mask": mine}
        if differ:
            shown = ", ".join(f"{k}: {theirs.get(k)!r} (here {ours[k]!r})" for k in differ)
            raise ValueError(
                f"this checkpoint was trained with other settings ({shown}); build the trainer with them"
            )
        for name, net in self.networks().items():
            net.load_state_dict(state["networks"][name])
        self.opt_g.load_state_dict(_adam_state(state["opt_g"], len(self.gen_params)))
        self.opt_d.load_state_dict(_adam_state(state["opt_d"], len(self.disc_params)))
        self.normalizer.load_state_dict(state["normalizer"])
        self.step = int(state["step"])

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> TranslationTrainer:
        """A trainer rebuilt from a checkpoint's own settings."""
        names = {f.name for f in dataclasses.fields(TranslationSettings)}
        settings = TranslationSettings(**{k: v for k, v in state["settings"].items() if k in names})
        mask = MaskSpec(**state["mask"]) if state.get("mask") else None
        trainer = cls(settings, device, mask=mask)
        trainer.load_state_dict(state)
        return trainer
