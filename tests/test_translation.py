"""Image translation (GANimorph): shapes, receptive fields, losses, and a resumable trainer."""

import dataclasses
import io
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from supermask.core.registry import UnknownNameError
from supermask.core.translation import (
    DISCRIMINATORS,
    ConcatBlock,
    Generator,
    LossNormalizer,
    TranslationSettings,
    TranslationTrainer,
    UnpairedImages,
    build_discriminator,
    maskable_weights,
    ms_ssim,
    receptive_field,
)
from supermask.core.translation.losses import (
    feature_matching_loss,
    gan_discriminator_loss,
    gan_generator_loss,
    usable_scales,
)


def small(resolution: int, **kw) -> TranslationSettings:
    return TranslationSettings(resolution=resolution, width=4, disc_width=2, **{"blocks": 1, **kw})


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_generator_keeps_the_image_size_and_range(resolution):
    torch.manual_seed(0)
    g = Generator(small(resolution))
    x = torch.rand(2, 3, resolution, resolution)
    y = g(x)
    assert y.shape == x.shape
    assert 0.0 < y.min().item() and y.max().item() < 1.0  # sigmoid output
    # Down to 8 x 8 (at least three stride-2 convs): 4 convs at 128 px as in the source, 3 below.
    assert len(g.down) == {32: 3, 64: 3, 128: 4}[resolution]


def test_generator_has_the_source_layout_at_128_px():
    g = Generator(TranslationSettings(resolution=128, width=4, blocks=3))
    feats, x = [], torch.rand(1, 3, 128, 128)
    for down, group in zip(g.down, g.enc_groups):
        x = group(down(x))
        feats.append(tuple(x.shape[1:]))
    # 64 px plain conv, then groups at 32, 16 and 8 px with 2w, 4w, 8w channels.
    assert feats == [(4, 64, 64), (8, 32, 32), (16, 16, 16), (32, 8, 8)]
    blocks = [m for m in g.modules() if isinstance(m, ConcatBlock)]
    assert len(blocks) == 5 * 3  # three encoder groups and two decoder groups (after the skips)
    # A block concatenates: its merge conv takes the inner path's and the input's channels.
    b = blocks[0]
    assert b.merge[0].in_channels == b.inner[0][0].in_channels + b.inner[1][0].out_channels


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_discriminator_output_shapes(resolution):
    x = torch.rand(2, 3, resolution, resolution)
    expected = {"dilated": resolution // 8, "patch": 14, "global": 1}
    for kind, side in expected.items():
        logits, taps = build_discriminator(small(resolution, discriminator=kind))(x)
        assert logits.shape == (2, 1, side, side), kind
        assert all(t.shape[0] == 2 for t in taps)
    _, taps = build_discriminator(small(resolution))(x)
    assert len(taps) == 7  # the source's seven feature-matching taps


def test_receptive_field_is_computed_from_the_network():
    def stack(*convs):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(*convs, nn.LeakyReLU(0.2))

            def forward(self, x):
                return self.body(x), []

        return Net()

    assert receptive_field(stack(nn.Conv2d(3, 1, 3, padding=1)), 16).size == (3, 3)
    two = stack(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    assert receptive_field(two, 16).size == (5, 5)
    assert receptive_field(stack(nn.Conv2d(3, 1, 3, padding=2, dilation=2)), 16).size == (5, 5)
    strided = stack(nn.Conv2d(3, 4, 4, 2, 1), nn.Conv2d(4, 1, 3, padding=1))
    assert receptive_field(strided, 16).size == (8, 8)  # 4 + (3 - 1) * 2


@pytest.mark.parametrize("resolution", [32, 128])
def test_dilated_discriminator_sees_the_whole_image_and_a_patch_discriminator_does_not(resolution):
    dilated = receptive_field(build_discriminator(small(resolution)), resolution)
    patch = receptive_field(build_discriminator(small(resolution, discriminator="patch")), resolution)
    glob = receptive_field(build_discriminator(small(resolution, discriminator="global")), resolution)
    assert dilated.covers_image and glob.covers_image
    assert not patch.covers_image and patch.coverage < 0.25
    assert min(dilated.size) > 2 * resolution
    assert max(patch.size) < resolution
    if resolution == 128:
        assert patch.size == (70, 70)  # pix2pix's 70 x 70 PatchGAN
        assert dilated.output_shape == (16, 16)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 64, 64, generator=g)
    assert torch.allclose(ms_ssim(a, a), torch.ones(4), atol=1e-5)
    noise = torch.randn(4, 3, 64, 64, generator=g)
    values = [ms_ssim(a, (a + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0.95 and values[-1] < 0.6
    assert [usable_scales(s) for s in (32, 64, 128, 256)] == [3, 4, 5, 5]
    with pytest.raises(ValueError, match="smaller than the MS-SSIM window"):
        ms_ssim(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6))


def test_gan_and_feature_matching_losses():
    zero = torch.zeros(3, 1, 4, 4)
    assert gan_generator_loss(zero).item() == pytest.approx(math.log(2))
    assert gan_discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert gan_discriminator_loss(torch.full_like(zero, 9), torch.full_like(zero, -9)).item() < 1e-3
    assert gan_generator_loss(torch.ones_like(zero), "lsgan").item() == 0.0
    taps = [torch.rand(5, 2, 3, 3), torch.rand(5, 4)]
    assert feature_matching_loss(taps, [t.clone() for t in taps]).item() == 0.0
    shifted = [t + 0.5 for t in taps]
    assert feature_matching_loss(taps, shifted).item() == pytest.approx(0.25)


def test_loss_normalizer_divides_by_a_scheduled_running_mean():
    norm = LossNormalizer(every=3, beta=0.5)
    assert norm("a", torch.tensor(8.0)).item() == pytest.approx(1.0)  # first sight: divided by itself
    values = [8.0, 4.0, 2.0, 10.0]
    running = []
    for v in values:
        norm.update({"a": v})
        running.append(norm.running["a"])
        if norm.steps < 3:
            assert norm.divisor["a"] == 8.0  # held fixed between refreshes
    assert running == [8.0, 6.0, 4.0, 7.0]
    assert norm.divisor["a"] == 4.0  # refreshed on step 3 to the running mean then
    assert norm("a", torch.tensor(2.0)).item() == pytest.approx(0.5)


def test_settings_name_the_field_and_the_allowed_values():
    with pytest.raises(
        ValueError, match="translation.discriminator: got 'pix2pix'; allowed: dilated, patch, global"
    ):
        TranslationSettings(discriminator="pix2pix")
    with pytest.raises(ValueError, match="translation.resolution"):
        TranslationSettings(resolution=36)  # not a multiple of 2**3
    with pytest.raises(UnknownNameError, match="known: dilated, global, patch"):
        DISCRIMINATORS.get("pix2pix")


def toy_data(resolution=32, n=12):
    g = torch.Generator().manual_seed(1)
    return UnpairedImages(
        torch.rand(n, 3, resolution, resolution, generator=g),
        torch.rand(n, 3, resolution, resolution, generator=g),
    )


def test_batches_are_a_pure_function_of_the_step_and_cover_each_epoch():
    data = toy_data(n=10)
    first = [data.indices("x", 0, step, 4) for step in range(5)]  # 20 draws: two epochs of 10
    again = [data.indices("x", 0, step, 4) for step in range(5)]
    assert all((a == b).all() for a, b in zip(first, again))
    flat = torch.as_tensor(sorted(torch.cat([torch.as_tensor(f) for f in first]).tolist()))
    assert flat.tolist() == sorted(list(range(10)) * 2)
    assert not (data.indices("x", 0, 0, 4) == data.indices("y", 0, 0, 4)).all()  # domains drawn apart


def test_resumed_training_continues_bit_for_bit():
    settings = TranslationSettings(
        resolution=32,
        width=2,
        disc_width=2,
        blocks=1,
        batch_size=2,
        normalize_every=2,
        discriminator="dilated",
    )
    data = toy_data()
    straight = TranslationTrainer(settings)
    history = straight.run(data, 3)
    assert [("d_loss" in m) for m in history] == [True, False, True]  # one D step per two G steps
    assert {"g_loss", "gan", "fm", "cycle_l1", "cycle_ssim"} <= set(history[0])

    first = TranslationTrainer(settings)
    first.run(data, 1)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = TranslationTrainer.from_state_dict(state)
    rest = resumed.run(data, 3)
    assert [m["g_loss"] for m in rest] == [m["g_loss"] for m in history[1:]]
    for name, net in straight.networks().items():
        for (key, a), b in zip(net.state_dict().items(), resumed.networks()[name].state_dict().values()):
            assert torch.equal(a, b), (name, key)
    assert resumed.normalizer.state_dict() == straight.normalizer.state_dict()
    assert resumed.opt_g.state_dict()["state"][0]["step"] == 3

    # A checkpoint written while the trainer used torch.optim.Adam (its state_dict layout, built here
    # without importing torch.optim, whose torch._dynamo import costs seconds) resumes the same way.
    def torch_layout(opt: dict) -> dict:
        per_param = {i: {**s, "step": torch.tensor(float(s["step"]))} for i, s in enumerate(opt["state"])}
        return {"state": per_param, "param_groups": [{"lr": opt["lr"], "params": list(per_param)}]}

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # afresh: `resumed` stepped the loaded tensors in place
    legacy = {**saved, "opt_g": torch_layout(saved["opt_g"]), "opt_d": torch_layout(saved["opt_d"])}
    again = TranslationTrainer.from_state_dict(legacy)
    assert [m["g_loss"] for m in again.run(data, 3)] == [m["g_loss"] for m in history[1:]]

    other = dataclasses.replace(settings, discriminator="patch")
    with pytest.raises(ValueError, match="other settings.*discriminator"):
        TranslationTrainer(other).load_state_dict(state)


def test_every_option_trains_a_step():
    data = toy_data()
    for kw in (
        {"discriminator": "patch", "cycle_loss": "l1"},
        {"discriminator": "global", "feature_matching": False, "normalize_losses": False},
        {"norm": "none", "activation": "relu", "gan_loss": "lsgan"},
    ):
        metrics = TranslationTrainer(small(32, batch_size=2, **kw)).run(data, 1)[0]
        assert math.isfinite(metrics["g_loss"]) and math.isfinite(metrics["d_loss"])
        assert ("fm" in metrics) == kw.get("feature_matching", True)
        assert ("cycle_ssim" in metrics) == (kw.get("cycle_loss", "ms_ssim_l1") == "ms_ssim_l1")


def test_generator_weights_can_be_masked_like_a_base_network():
    torch.manual_seed(0)
    g = Generator(small(32))
    x = torch.rand(2, 3, 32, 32)
    weights = maskable_weights(g)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(weights) == len(convs)
    ones = {name: w * torch.ones_like(w) for name, w in weights.items()}
    assert torch.equal(functional_call(g, ones, (x,)), g(x))
    half = {name: w * (torch.rand_like(w) < 0.5) for name, w in weights.items()}
    assert not torch.allclose(functional_call(g, half, (x,)), g(x))


def test_probes_follow_each_network_and_measure_where_scaling_reaches():
    """Supermask generators over frozen networks, trained discriminators: both kinds in one trainer."""
    from supermask.core.masks import MaskSpec
    from supermask.core.probes.probe import ProbeConfig
    from supermask.core.translation.probe import TranslationProbe

    settings = TranslationSettings(
        resolution=32,
        width=2,
        disc_width=2,
        blocks=1,
        batch_size=2,
        normalize_every=2,
        steps=3,
        method="supermask",
        mask_discriminator=False,
    )
    trainer = TranslationTrainer(settings, mask=MaskSpec("topk", 0.5))
    g = torch.Generator().manual_seed(0)
    data = UnpairedImages(torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g))
    sent = []
    images = {"x": data.x, "y": data.y}
    probe = TranslationProbe(trainer, ProbeConfig(every=2, batch=2), images, "t", sent.extend)
    probe.start()
    trainer.run(data, 3, hooks=[probe])
    assert sorted({r["task"] for r in sent}) == ["t/d_x", "t/d_y", "t/g_xy", "t/g_yx"]
    assert [r["step"] for r in sent if r["network"] == "g_xy"] == [0.0, 2.0, 3.0]  # cadence, and the end
    last = {r["network"]: r for r in probe.last}

    def norm(tensors):
        return math.sqrt(sum(float(t.detach().pow(2).sum()) for t in tensors if t.numel() > 1))

    # A supermask network: its scores, and its masks' churn and density; a trained one: every
    # trainable tensor (conv weights and biases, norm scales and shifts).
    assert last["g_xy"]["norm"] == pytest.approx(norm(trainer.g_xy.method.scores), rel=1e-5)
    assert last["g_xy"]["density"] == pytest.approx(0.5, abs=0.01) and "churn" in last["g_xy"]
    trained = [p for p in trainer.d_y.parameters() if p.requires_grad]
    assert last["d_y"]["norm"] == pytest.approx(norm(trained), rel=1e-5) and "churn" not in last["d_y"]
    assert all(k in last["d_y"] for k in ("direction", "alignment", "step_size", "loss"))
    # Hidden states come back under their own module's name. The frozen biases are zero, so the first
    # conv is 1-homogeneous and a normed unit behind it ignores c; the merge that concatenates the
    # unnormalised first conv's output does not, and the sigmoid output saturates.
    sat = last["g_xy"]
    assert sat["saturation_cosine/enc_groups.0.0.inner.1"] == pytest.approx(1.0, abs=1e-4)
    assert sat["saturation_cosine/enc_groups.0.0.merge"] < 0.99
    assert sat["saturation_output_cosine"] < 0.99
