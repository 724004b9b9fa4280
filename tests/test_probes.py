"""Probes of K stacked tasks: norm, direction, alignment, churn against hand computations; saturation; the
search hook; fits; overhead timing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from supermask.config.spec import spec_from_dict
from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.masks import MaskMethod, MaskSpec, build_mask_method
from supermask.core.probes.probe import (
    Probe,
    ProbeConfig,
    argmax_agreements,
    norm_fits,
    probe_overhead,
    row_cosines,
)
from supermask.core.probes.runner import stacked_runner
from supermask.core.probes.search_probe import SearchProbe, summary
from supermask.core.search.batches import StackedTensors
from supermask.core.search.stacked_search import SearchConfig, StackedSearch, build_optimizer
from supermask.recipes.learn import learn_block
from supermask.recipes.recipe import Recipe, Workbench

NAMES = ["fc1.weight", "fc2.weight", "temperature"]


def two_layer(*tasks) -> list[torch.Tensor]:
    """A stack of K two-layer nets' trained tensors (w1, w2, temperature), one (w1, w2, temp) per task."""
    return [torch.tensor([t[i] for t in tasks], dtype=torch.float32) for i in range(3)]


def test_norm_direction_alignment_and_step_size_match_hand_computation():
    probe = Probe(names=NAMES, config=ProbeConfig(every=1))
    # task 0: theta_0 = (3, 0, 0, 0 | 0, 4), norm 5; task 1: (0, 0, 0, 0 | 1, 0), norm 1. Temperatures are left out.
    first = probe.observe(0, two_layer(([[3, 0], [0, 0]], [[0, 4]], 7.0), ([[0, 0], [0, 0]], [[1, 0]], 2.0)))
    assert first[0]["norm"] == pytest.approx(5.0, abs=1e-12) and first[1]["norm"] == pytest.approx(1.0)
    assert first[0]["norm/fc1.weight"] == pytest.approx(3.0) and first[0]["norm/fc2.weight"] == pytest.approx(
        4.0
    )
    assert "norm/temperature" not in first[0] and "alignment" not in first[0]
    # task 0: theta_1 = (6, 0, 0, 0 | 0, 4), delta = (3, 0, 0, 0 | 0, 0); task 1 does not move.
    second = probe.observe(
        1, two_layer(([[6, 0], [0, 0]], [[0, 4]], -100.0), ([[0, 0], [0, 0]], [[1, 0]], 2.0))
    )
    assert second[0]["norm"] == pytest.approx(math.sqrt(52.0), abs=1e-6)
    assert second[0]["step_size"] == pytest.approx(3.0, abs=1e-6)
    assert second[0]["alignment"] == pytest.approx(9.0 / 15.0, abs=1e-6)  # <theta_0, delta> / (5 * 3)
    assert second[0]["direction"] == pytest.approx(34.0 / (5.0 * math.sqrt(52.0)), abs=1e-6)
    assert second[1]["step_size"] == 0.0 and second[1]["direction"] == pytest.approx(1.0)
    assert "alignment" not in second[1]  # cos with a zero step is undefined: left out, not made up
    # A step straight back toward the origin: alignment -1, direction 1.
    third = probe.observe(2, two_layer(([[3, 0], [0, 0]], [[0, 2]], 0.0), ([[0, 0], [0, 0]], [[-1, 0]], 2.0)))
    assert third[0]["alignment"] == pytest.approx(-1.0, abs=1e-6)
    assert third[0]["direction"] == pytest.approx(1.0, abs=1e-6)
    assert third[0]["step_size"] == pytest.approx(math.sqrt(52.0) / 2, abs=1e-6)
    assert third[1]["direction"] == pytest.approx(-1.0) and third[1]["alignment"] == pytest.approx(-1.0)
    assert [r["step"] for r in probe.history[1]] == [0.0, 1.0, 2.0]


def test_churn_counts_flipped_mask_bits_since_the_last_probe():
    probe = Probe(names=NAMES[:2], config=ProbeConfig(every=1))
    trained = two_layer(([[1, 2], [3, 4]], [[5, 6]], 0.0), ([[1, 2], [3, 4]], [[5, 6]], 0.0))[:2]

    def masks(a, b):
        return [torch.tensor([a[0], b[0]]), torch.tensor([a[1], b[1]])]

    first = probe.observe(
        0, trained, masks=masks(([[1.0, 0], [1, 1]], [[1.0, 0]]), ([[0.0, 0], [0, 0]], [[0.0, 0]]))
    )
    assert (
        first[0]["density"] == pytest.approx(4 / 6) and first[1]["density"] == 0.0 and "churn" not in first[0]
    )
    second = probe.observe(
        1, trained, masks=masks(([[0.0, 0], [1, 1]], [[0.0, 1]]), ([[1.0, 1], [1, 1]], [[1.0, 1]]))
    )
    assert second[0]["churn"] == pytest.approx(3 / 6) and second[1]["churn"] == 1.0
    assert second[0]["churn/fc1.weight"] == pytest.approx(1 / 4) and second[0]["churn/fc2.weight"] == 1.0
    assert second[0]["density"] == pytest.approx(3 / 6)
    third = probe.observe(
        2, trained, masks=masks(([[0.0, 0], [1, 1]], [[0.0, 1]]), ([[1.0, 1], [1, 1]], [[1.0, 1]]))
    )
    assert third[0]["churn"] == 0.0 and third[1]["churn"] == 0.0


def homogeneous_mlp(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 5, bias=bias),
    )


def stacked(params, k: int = 2) -> list[torch.Tensor]:
    """K copies of a net's tensors, the second scaled (a different task of the same shape)."""
    return [torch.stack([p.detach() * (1 + i) for i in range(k)]) for p in params]


@pytest.mark.parametrize("scale", [1000.0, 3.0])
def test_saturation_of_a_one_homogeneous_relu_net_is_exactly_one(scale):
    net = homogeneous_mlp(bias=False)
    names = [n for n, _ in net.named_parameters()]
    x = torch.randn(2, 64, 6, generator=torch.Generator().manual_seed(1))
    run = stacked_runner(net, x, names, hidden=["1", "3"])
    probe = Probe(run, names=names, config=ProbeConfig(every=1, scale=scale))
    for record in probe.observe(0, stacked(net.parameters())):
        assert record["saturation_cosine"] == pytest.approx(1.0, abs=1e-12)
        assert record["saturation_output_cosine"] == pytest.approx(1.0, abs=1e-12)
        assert record["saturation_agreement"] == 1.0


def test_a_scaled_pass_that_overflows_float32_is_recomputed_in_float64_and_float64_overflow_is_reported():
    net = homogeneous_mlp(bias=False)  # 1-homogeneous: the exact saturation cosine is 1 at any c
    names = [n for n, _ in net.named_parameters()]
    x = torch.randn(2, 64, 6, generator=torch.Generator().manual_seed(1))
    run = stacked_runner(net, x, names, hidden=["1", "3"])
    # c^3 = 1e75 overflows float32 (3.4e38) but not float64; c^3 = 1e360 overflows float64 too
    for scale, overflow in ((1e25, False), (1e120, True)):
        probe = Probe(run, names=names, config=ProbeConfig(every=1, scale=scale))
        for record in probe.observe(0, stacked(net.parameters())):
            assert record["saturation_float64"] == 1.0
            assert record["saturation_overflow"] == float(overflow)
            if overflow:  # reported as an overflow, not as a NaN cosine
                assert not any(k.startswith(("saturation_cosine", "saturation_agreement")) for k in record)
            else:
                assert record["saturation_cosine"] == pytest.approx(1.0, abs=1e-12)
                assert record["saturation_agreement"] == 1.0


def test_biases_break_homogeneity_so_saturation_is_below_one():
    net = homogeneous_mlp(bias=True)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.bias.fill_(0.5)
    names = [n for n, _ in net.named_parameters() if n.endswith("weight")]  # only weights scaled
    x = torch.randn(1, 64, 6, generator=torch.Generator().manual_seed(1))
    probe = Probe(stacked_runner(net, x, names, hidden=["1", "3"]), config=ProbeConfig(every=1, scale=1000.0))
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    assert probe.observe(0, stacked(weights, k=1))[0]["saturation_output_cosine"] < 0.999


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
    method = build_mask_method(MaskSpec("topk", density=0.5), base.layer_shapes, seeds=[0, 1])
    x = torch.randn(2, 32, 8, generator=torch.Generator().manual_seed(2))
    frozen = [w.unsqueeze(0) for w in base.weights()]
    runner = stacked_runner(base.net, x, base.masked_names, hidden=["1", "3"])
    probe = Probe(runner, names=base.masked_names, frozen=frozen, config=ProbeConfig(every=1))
    with torch.no_grad():
        masks = method()
    for record in probe.observe(0, list(method.scores), masks=masks):
        assert record["density"] == pytest.approx(0.5, abs=1e-3)
        assert record["saturation_cosine"] == pytest.approx(1.0, abs=1e-12)  # the mlp base is 1-homogeneous
    # Scaling the scores leaves a top-k mask unchanged: why the probe scales W * M instead.
    with torch.no_grad():
        for s in method.scores:
            s.mul_(1000.0)
        assert all(torch.equal(a, b) for a, b in zip(masks, method()))
    with pytest.raises(ValueError, match="frozen"):
        Probe(runner).observe(0, list(method.scores), masks=masks)


def test_search_probe_follows_the_cadence_and_sends_every_task_to_the_sink():
    spec = BaseSpec(
        arch="mlp", seed=1, num_outputs=3, input_shape=(5,), options={"widths": [8]}, batchnorm=True
    )
    base = build_base(spec)
    g = torch.Generator().manual_seed(0)
    data = StackedTensors.of(
        [torch.randn(40, 5, generator=g)] * 2, [torch.randint(0, 3, (40,), generator=g)] * 2, "cpu"
    )
    config = SearchConfig(lr=0.1, iterations=6, batch_size=8)  # last probe: the final scores
    search = StackedSearch(
        base, data, MaskSpec("topk", density=0.25), config, seeds=[0, 1], task_ids=["a", "b"]
    )
    sink: list[dict] = []
    probe = SearchProbe(search, ProbeConfig(every=3, batch=16), sink.extend)
    probe.start()
    search.run([probe])
    assert [(r["task"], r["step"]) for r in sink] == [(t, s) for s in (0.0, 3.0, 6.0) for t in ("a", "b")]
    last = {r["task"]: r for r in sink if r["step"] == 6.0}
    for k, task in enumerate(("a", "b")):
        assert last[task]["norm"] == pytest.approx(
            math.sqrt(sum(float((s[k].detach() ** 2).sum()) for s in search.method.scores)), rel=1e-6
        )
        assert last[task]["density"] == pytest.approx(0.25, abs=0.02) and 0.0 <= last[task]["churn"] <= 1.0
        assert {"loss", "batch_accuracy", "lr", "saturation_agreement", "saturation_cosine/1"} <= set(
            last[task]
        )
    assert probe.probes == 3 and probe.seconds > 0 and probe.overhead() > 0
    assert summary(probe.last)["norm"] == pytest.approx((last["a"]["norm"] + last["b"]["norm"]) / 2)


def test_sweep_and_saturation_cadence():
    net = homogeneous_mlp(bias=False)
    names = [n for n, _ in net.named_parameters()]
    x = torch.randn(1, 16, 6, generator=torch.Generator().manual_seed(1))
    config = ProbeConfig(every=5, saturation_every=2, sweep_scales=(1.0, 2.0, 10.0), sweep_every=3)
    probe = Probe(stacked_runner(net, x, names), config=config)
    assert [s for s in range(12) if probe.due(s)] == [0, 5, 10]
    assert not any(Probe(config=ProbeConfig(every=0)).due(s) for s in range(5))  # every: 0 turns probes off
    records = [probe.observe(s, stacked(net.parameters(), k=1))[0] for s in range(0, 30, 5)]
    assert ["saturation_cosine" in r for r in records] == [True, False, True, False, True, False]
    assert ["sweep_cosine@10" in r for r in records] == [True, False, False, True, False, False]
    assert records[0]["sweep_agreement@2"] == 1.0
    steps, norms = probe.series("norm")
    assert steps.tolist() == [0, 5, 10, 15, 20, 25] and np.allclose(norms, norms[0])
    with pytest.raises(ValueError, match="sweep_scales"):
        ProbeConfig(sweep_scales=(1.0, -2.0))


def test_row_cosine_treats_two_zero_rows_as_equal_and_one_zero_row_as_orthogonal():
    a = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    assert row_cosines(a, b).tolist() == pytest.approx([1.0 / 3.0])
    assert row_cosines(a, b, keep=torch.tensor([[True, False, False]])).tolist() == [1.0]  # real rows only
    agree = argmax_agreements(
        torch.tensor([[[0.0, 1.0], [2.0, 1.0]]]), torch.tensor([[[0.0, 5.0], [0.0, 1.0]]])
    )
    assert agree.tolist() == [0.5]


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
        Probe(names=["a"]).observe(0, two_layer(([[1, 0], [0, 0]], [[0, 1]], 0.0)))


@pytest.mark.parametrize("every", [0, 4])
def test_learn_block_probes_on_the_spec_cadence_and_every_zero_turns_them_off(every):
    spec = spec_from_dict(
        {
            "stream": {"name": "synthetic", "num_tasks": 2, "options": {"input_dim": 8, "num_classes": 3}},
            "base": {"arch": "mlp", "options": {"widths": [16]}},
            "search": {"iterations": 8, "batch_size": 32},
            "probes": {"every": every, "batch": 8},
        }
    )
    sink: list[dict] = []
    outcome = learn_block(Workbench(Recipe.from_spec(spec)), [0, 1], probe_sink=sink.extend)
    if every == 0:
        assert sink == [] and outcome.probe_records == [] and "probes" not in outcome.records[0].metrics
        return
    assert sorted({r["step"] for r in sink}) == [0.0, 4.0, 8.0] and len(sink) == 6
    assert [r["task"] for r in outcome.probe_records] == ["synthetic-0000", "synthetic-0001"]
    assert outcome.records[0].metrics["probes"] == 3 and outcome.probe_seconds > 0  # with the one at step 0


def test_the_last_step_is_probed_off_the_cadence_too():
    spec = spec_from_dict(
        {
            "stream": {"name": "synthetic", "num_tasks": 1, "options": {"input_dim": 8, "num_classes": 3}},
            "base": {"arch": "mlp", "options": {"widths": [16]}},
            "search": {"iterations": 7, "batch_size": 32},
            "probes": {"every": 3, "batch": 8},
        }
    )
    sink: list[dict] = []
    learn_block(Workbench(Recipe.from_spec(spec)), [0], probe_sink=sink.extend, evaluate=False)
    assert [r["step"] for r in sink] == [0.0, 3.0, 6.0, 7.0]


class TrainedWeights(MaskMethod):
    """A stand-in for a trained-weight method: per-task copies of the base's weights, trained directly."""

    produces = "weights"

    def __init__(self, base, k: int) -> None:
        nn.Module.__init__(self)
        self.num_tasks = k
        self.weights = nn.ParameterList(
            nn.Parameter(w.detach().unsqueeze(0).repeat(k, 1, 1)) for w in base.weights()
        )

    def forward(self) -> list[torch.Tensor]:
        return list(self.weights)


def test_search_probe_of_a_method_that_produces_weights_probes_the_weights():
    spec = BaseSpec(arch="mlp", seed=2, num_outputs=3, input_shape=(5,), options={"widths": [8]})
    base = build_base(spec)
    g = torch.Generator().manual_seed(1)
    data = StackedTensors.of(
        [torch.randn(32, 5, generator=g)] * 2, [torch.randint(0, 3, (32,), generator=g)] * 2, "cpu"
    )
    config = SearchConfig(lr=0.05, iterations=4, batch_size=8)
    search = StackedSearch(base, data, MaskSpec("topk"), config, seeds=[0, 1], task_ids=["a", "b"])
    search.method = TrainedWeights(base, 2)
    search.optimizer = build_optimizer(config, search.method.parameters())
    sink: list[dict] = []
    probe = SearchProbe(search, ProbeConfig(every=2, batch=8), sink.extend)
    assert probe.names == ["weights.0", "weights.1"]
    probe.start()
    for _ in range(4):
        search.run_step([probe])
    last = [r for r in sink if r["step"] == 4.0]
    expected = math.sqrt(sum(float((w[1].detach() ** 2).sum()) for w in search.method.weights))
    assert last[1]["norm"] == pytest.approx(expected, rel=1e-6) and last[1]["step_size"] > 0
    assert "churn" not in last[1] and "density" not in last[1]  # no masks, no churn
    assert last[1]["saturation_cosine"] == pytest.approx(
        1.0, abs=1e-9
    )  # a bias-free ReLU MLP is 1-homogeneous


def test_neuron_masks_are_probed_for_norms_and_churn_without_saturation():
    spec = spec_from_dict(
        {
            "stream": {"name": "synthetic", "num_tasks": 2, "options": {"input_dim": 8, "num_classes": 3}},
            "base": {"arch": "swish_gated_mlp", "options": {"widths": [16, 16]}},
            "mask": {"method": "neuron"},
            "search": {"iterations": 4, "batch_size": 32},
            "probes": {"every": 2, "batch": 8},
        }
    )
    sink: list[dict] = []
    learn_block(Workbench(Recipe.from_spec(spec)), [0, 1], probe_sink=sink.extend, evaluate=False)
    assert sorted({r["step"] for r in sink}) == [0.0, 2.0, 4.0]
    last = sink[-1]
    assert last["norm"] > 0 and 0 <= last["churn"] <= 1 and 0 < last["density"] <= 1
    assert not any(k.startswith("saturation") for k in last)


def test_run_reports_count_the_scaled_passes_that_overflowed():
    from supermask.interface.probe_report import probe_lines, task_summary

    records = [
        {"step": 0.0, "norm": 1.0, "saturation_cosine": 0.5},
        {
            "step": 10.0,
            "norm": 1.1,
            "saturation_cosine": 0.9,
            "saturation_float64": 1.0,
            "saturation_overflow": 0.0,
        },
        {"step": 20.0, "norm": 1.2, "saturation_float64": 1.0, "saturation_overflow": 1.0},
    ]
    s = task_summary(records)
    assert (s["saturation_float64_probes"], s["saturation_overflow_probes"]) == (2, 1)
    assert s["saturation_cosine_end"] == 0.9  # the overflowed probe has no cosine
    summary = {"tasks": {0: s}, "overhead": None, "probe_seconds": None, "file": "metrics.jsonl"}
    text = "\n".join(probe_lines(summary, [], 10, 1000.0))
    assert "overflowed float32 in 2 probe(s)" in text and "where 1 overflowed too" in text
