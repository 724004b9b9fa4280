"""Probes: norm, direction, alignment, churn against hand computations; saturation; fits; overhead timing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from supermask.core.masks import MaskSpec, build_mask_method
from supermask.core.nets import BaseSpec, build_base
from supermask.core.probes import (
    Probe,
    ProbeConfig,
    argmax_agreement,
    base_runner,
    mask_search_hook,
    module_runner,
    norm_fits,
    probe_overhead,
    row_cosine,
)

NAMES = ["fc1.weight", "fc2.weight", "temperature"]


def two_layer(w1, w2, temperature=7.0) -> list[torch.Tensor]:
    return [
        torch.tensor(w1, dtype=torch.float32),
        torch.tensor(w2, dtype=torch.float32),
        torch.tensor(temperature),
    ]


def test_norm_direction_alignment_and_step_size_match_hand_computation():
    probe = Probe(names=NAMES, config=ProbeConfig(every=1))
    # theta_0 = (3, 0, 0, 0 | 0, 4): norm 5; the scalar temperature is left out.
    first = probe.observe(0, two_layer([[3, 0], [0, 0]], [[0, 4]]))
    assert first["norm"] == pytest.approx(5.0, abs=1e-12)
    assert first["norm/fc1.weight"] == pytest.approx(3.0) and first["norm/fc2.weight"] == pytest.approx(4.0)
    assert "norm/temperature" not in first and "alignment" not in first
    # theta_1 = (6, 0, 0, 0 | 0, 4), delta = (3, 0, 0, 0 | 0, 0).
    second = probe.observe(1, two_layer([[6, 0], [0, 0]], [[0, 4]], temperature=-100.0))
    assert second["norm"] == pytest.approx(math.sqrt(52.0), abs=1e-12)
    assert second["step_size"] == pytest.approx(3.0, abs=1e-12)
    assert second["alignment"] == pytest.approx(9.0 / 15.0, abs=1e-12)  # <theta_0, delta> / (5 * 3)
    assert second["direction"] == pytest.approx(34.0 / (5.0 * math.sqrt(52.0)), abs=1e-12)
    # A step straight back toward the origin: alignment -1, direction 1.
    third = probe.observe(2, two_layer([[3, 0], [0, 0]], [[0, 2]]))
    assert third["alignment"] == pytest.approx(-1.0, abs=1e-12)
    assert third["direction"] == pytest.approx(1.0, abs=1e-12)
    assert third["step_size"] == pytest.approx(math.sqrt(52.0) / 2, abs=1e-12)


def test_churn_counts_flipped_mask_bits_since_the_last_probe():
    probe = Probe(names=NAMES[:2], config=ProbeConfig(every=1))
    trained = two_layer([[1, 2], [3, 4]], [[5, 6]])[:2]
    first = probe.observe(0, trained, masks=[torch.tensor([[1.0, 0], [1, 1]]), torch.tensor([[1.0, 0]])])
    assert first["density"] == pytest.approx(4 / 6) and "churn" not in first
    second = probe.observe(1, trained, masks=[torch.tensor([[0.0, 0], [1, 1]]), torch.tensor([[0.0, 1]])])
    assert second["churn"] == pytest.approx(3 / 6)
    assert second["churn/fc1.weight"] == pytest.approx(1 / 4) and second["churn/fc2.weight"] == pytest.approx(
        1.0
    )
    assert second["density"] == pytest.approx(3 / 6)
    third = probe.observe(2, trained, masks=[torch.tensor([[0.0, 0], [1, 1]]), torch.tensor([[0.0, 1]])])
    assert third["churn"] == 0.0


def homogeneous_mlp(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 5, bias=bias),
    )


@pytest.mark.parametrize("scale", [1000.0, 3.0])
def test_saturation_of_a_one_homogeneous_relu_net_is_exactly_one(scale):
    net = homogeneous_mlp(bias=False)
    names = [n for n, _ in net.named_parameters()]
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    run = module_runner(net, x, names, hidden=["1", "3"])
    probe = Probe(run, names=names, config=ProbeConfig(every=1, scale=scale))
    record = probe.observe(0, list(net.parameters()))
    assert record["saturation_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert record["saturation_output_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert record["saturation_agreement"] == 1.0


def test_biases_break_homogeneity_so_saturation_is_below_one():
    net = homogeneous_mlp(bias=True)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.bias.fill_(0.5)
    names = [n for n, _ in net.named_parameters() if n.endswith("weight")]  # only weights scaled
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    probe = Probe(module_runner(net, x, names, hidden=["1", "3"]), config=ProbeConfig(every=1, scale=1000.0))
    record = probe.observe(0, [p for n, p in net.named_parameters() if n.endswith("weight")])
    assert record["saturation_output_cosine"] < 0.999


def test_mask_probe_scales_effective_weights_of_the_base():
    spec = BaseSpec(
        arch="mlp",
        seed=3,
        init="signed_constant",
        num_outputs=4,
        input_shape=(8,),
        options={"widths": [16, 16]},
    )
    base = build_base(spec)
    method = build_mask_method(MaskSpec("topk", density=0.5), base.layer_shapes, seeds=[0])
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    probe = Probe(
        base_runner(base, x), names=base.masked_names, frozen=base.weights(), config=ProbeConfig(every=1)
    )
    with torch.no_grad():
        masks = [m[0] for m in method()]  # the one task of the stack
    record = probe.observe(0, [s[0] for s in method.scores], masks=masks)
    assert record["density"] == pytest.approx(0.5, abs=1e-3)
    assert record["saturation_cosine"] == pytest.approx(1.0, abs=1e-12)  # the mlp base is 1-homogeneous
    # Scaling the scores leaves a top-k mask unchanged: why the probe scales W * M instead.
    with torch.no_grad():
        for s in method.scores:
            s.mul_(1000.0)
        assert all(torch.equal(a, b[0]) for a, b in zip(masks, method()))
    with pytest.raises(ValueError, match="frozen"):
        Probe(base_runner(base, x)).observe(0, [s[0] for s in method.scores], masks=masks)


def test_mask_search_hook_probes_on_the_cadence_only():
    spec = BaseSpec(arch="mlp", seed=1, num_outputs=3, input_shape=(5,), options={"widths": [8]})
    base = build_base(spec)
    method = build_mask_method(MaskSpec("topk", density=0.25), base.layer_shapes, seeds=[0])
    probe = Probe(names=base.masked_names, frozen=base.weights(), config=ProbeConfig(every=3))
    hook = mask_search_hook(probe)
    records = [hook(SimpleNamespace(step=step, method=method)) for step in range(1, 8)]
    assert [bool(r) for r in records] == [False, False, True, False, False, True, False]
    assert records[2]["density"] == pytest.approx(0.25, abs=0.02) and records[5]["churn"] == 0.0
    assert records[2]["norm"] == pytest.approx(
        math.sqrt(sum(float((s.detach() ** 2).sum()) for s in method.scores)), rel=1e-6
    )


def test_sweep_and_saturation_cadence():
    net = homogeneous_mlp(bias=False)
    names = [n for n, _ in net.named_parameters()]
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    config = ProbeConfig(every=5, saturation_every=2, sweep=(1.0, 2.0, 10.0), sweep_every=3)
    probe = Probe(module_runner(net, x, names), config=config)
    assert [s for s in range(12) if probe.due(s)] == [0, 5, 10]
    records = [probe.observe(s, list(net.parameters())) for s in range(0, 30, 5)]
    assert ["saturation_cosine" in r for r in records] == [True, False, True, False, True, False]
    assert ["sweep_cosine@10" in r for r in records] == [True, False, False, True, False, False]
    assert records[0]["sweep_agreement@2"] == 1.0
    steps, norms = probe.series("norm")
    assert steps.tolist() == [0, 5, 10, 15, 20, 25] and np.allclose(norms, norms[0])


def test_row_cosine_treats_two_zero_rows_as_equal_and_one_zero_row_as_orthogonal():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert row_cosine(a, b) == pytest.approx(1.0 / 3.0)
    assert (
        argmax_agreement(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([[0.0, 5.0], [0.0, 1.0]]))
        == 0.5
    )


def test_norm_fits_recover_a_sqrt_law_and_rank_it_first():
    t = np.arange(0, 200, 10, dtype=np.float64)
    fits = norm_fits(t, 2.0 + 3.0 * np.sqrt(t))
    assert fits["sqrt_t"]["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fits["sqrt_t"]["slope"] == pytest.approx(3.0) and fits["sqrt_t"]["intercept"] == pytest.approx(2.0)
    assert fits["t"]["r2"] < 0.97 and fits["t^1/4"]["r2"] < 0.99
    linear = norm_fits(t, 1.0 + 0.5 * t)
    assert max(linear, key=lambda k: linear[k]["r2"]) == "t"
    with pytest.raises(ValueError, match="at least 3"):
        norm_fits([0, 1], [1, 2])


def test_probe_overhead_calls_the_probe_on_the_cadence():
    calls = {"train": 0, "probe": []}

    def train_step():
        calls["train"] += 1

    result = probe_overhead(train_step, calls["probe"].append, steps=40, every=10, warmup=2)
    assert calls["train"] == 42 and calls["probe"] == [0, 10, 20, 30, 40]
    assert result["every"] == 10 and result["overhead"] >= 0 and result["step_seconds"] > 0


def test_mismatched_names_are_an_error_that_says_so():
    with pytest.raises(ValueError, match="one name per tensor"):
        Probe(names=["a"]).observe(0, two_layer([[1, 0], [0, 0]], [[0, 1]]))
