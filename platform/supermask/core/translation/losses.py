"""Translation losses: GAN, feature matching, the multi-scale perceptual cycle loss, scheduled normalisation.

MS-SSIM follows Wang, Simoncelli and Bovik (2003): SSIM's contrast-structure term at each scale and
the full SSIM at the coarsest, combined with the weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
a Gaussian window (sigma 1.5), images halved by 2x2 average pooling between scales. The window is 8
pixels wide as in the source's code, which gives the paper's 5 scales at 128 px (128 down to 8).
An image too small for that many scales gets as many as fit (the coarsest scale must still be at
least one window wide: 3 scales at 32 px, 4 at 64 px), with the weights of the scales kept
renormalised to sum to 1. Contrast-structure values are clamped at a small positive number before
the fractional powers (they can go negative for anticorrelated images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_K1, _K2 = 0.01, 0.03
_CLAMP = 1e-6


def gan_generator_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's GAN loss: non-saturating (-log D(fake)) or least squares, averaged over the map."""
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind == "lsgan":
        return (fake_logits - 1.0).pow(2).mean()
    raise ValueError(f"gan_loss: got {kind!r}; allowed: nonsaturating, lsgan")


def gan_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nonsaturating"
) -> torch.Tensor:
    """The discriminator's loss: real locations pushed to 'real', generated ones to 'fake'."""
    if kind == "nonsaturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "lsgan":
        return 0.5 * ((real_logits - 1.0).pow(2).mean() + fake_logits.pow(2).mean())
    raise ValueError(f"gan_loss: got {kind!r}; allowed: nonsaturating, lsgan")


def feature_matching_loss(real_taps: list[torch.Tensor], fake_taps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over taps of the squared difference between the batch means of real and generated features."""
    if len(real_taps) != len(fake_taps) or not real_taps:
        raise ValueError(
            f"feature matching needs equal, non-empty tap lists; got {len(real_taps)} and {len(fake_taps)}"
        )
    terms = [F.mse_loss(f.mean(0), r.detach().mean(0)) for r, f in zip(real_taps, fake_taps, strict=True)]
    return torch.stack(terms).mean()


def usable_scales(size: int, scales: int = 5, window: int = 8) -> int:
    """How many MS-SSIM scales an image of side `size` allows: its coarsest scale is at least `window`."""
    usable = 0
    while usable < scales and size // 2**usable >= window:
        usable += 1
    if usable == 0:
        raise ValueError(
            f"an image of side {size} is smaller than the MS-SSIM window ({window}); lower ms_ssim_window"
        )
    return usable


def gaussian_window(size: int, sigma: float = 1.5) -> torch.Tensor:
    """A normalised 1-D Gaussian of `size` taps (applied along rows, then columns)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).float()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _ssim_terms(
    a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and contrast-structure, over channels and valid window positions."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_a, mu_b = _filter(a, g), _filter(b, g)
    var_a = _filter(a * a, g) - mu_a**2
    var_b = _filter(b * b, g) - mu_b**2
    cov = _filter(a * b, g) - mu_a * mu_b
    cs = (2.0 * cov + c2) / (var_a + var_b + c2)
    luminance = (2.0 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return (luminance * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    scales: int = 5,
    window: int = 8,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Multi-scale SSIM of two (N, C, H, W) batches, one value per image (1 for identical images)."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(
            f"ms_ssim needs two (N, C, H, W) batches of one shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    levels = usable_scales(min(a.shape[-2:]), scales, window)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=a.dtype, device=a.device)
    weights = weights / weights.sum()
    g = gaussian_window(window, sigma).to(a.device, a.dtype)
    value = torch.ones(a.shape[0], dtype=a.dtype, device=a.device)
    for level in range(levels):
        ssim, cs = _ssim_terms(a, b, g, data_range)
        term = ssim if level == levels - 1 else cs
        value = value * term.clamp_min(_CLAMP) ** weights[level]
        if level < levels - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return value


def cycle_terms(
    original: torch.Tensor,
    reconstructed: torch.Tensor,
    *,
    use_ms_ssim: bool,
    scales: int = 5,
    window: int = 8,
) -> dict[str, torch.Tensor]:
    """The cycle loss's raw terms: 'l1' always, 'ssim' (1 - MS-SSIM, batch mean) when asked."""
    terms = {"l1": (original - reconstructed).abs().mean()}
    if use_ms_ssim:
        terms["ssim"] = (1.0 - ms_ssim(original, reconstructed, scales, window)).mean()
    return terms


class LossNormalizer:
    """Scheduled loss normalisation: each named term is divided by a running mean of itself.

    The running mean (an exponential moving average, `beta`) is updated every step; the divisor is a
    copy of it taken on a term's first step and then every `every` steps, so the scale a term is
    divided by stays fixed between refreshes. A term's first value is its first divisor, so every
    normalised term starts near 1 whatever its units.
    """

    def __init__(self, every: int = 200, beta: float = 0.99, eps: float = 1e-8) -> None:
        self.every = every
        self.beta = beta
        self.eps = eps
        self.steps = 0
        self.running: dict[str, float] = {}
        self.divisor: dict[str, float] = {}

    def __call__(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """`value` divided by its term's current divisor (by itself, detached, before the first update)."""
        divisor = self.divisor.get(name)
        if divisor is None:
            divisor = float(value.detach())
        return value / (divisor + self.eps)

    def update(self, values: dict[str, float]) -> None:
        """Fold one step's raw values into the running means, refreshing divisors on schedule."""
        self.steps += 1
        refresh = self.steps % self.every == 0
        for name, v in values.items():
            v = float(v)
            self.running[name] = (
                v if name not in self.running else self.beta * self.running[name] + (1 - self.beta) * v
            )
            if refresh or name not in self.divisor:
                self.divisor[name] = self.running[name]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "running": dict(self.running), "divisor": dict(self.divisor)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.running = {k: float(v) for k, v in state["running"].items()}
        self.divisor = {k: float(v) for k, v in state["divisor"].items()}
