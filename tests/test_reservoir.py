"""Hopfield reservoir maths, neuron masks, the dense memory and recovery without a task id."""

import io
import json

import numpy as np
import pytest
import torch

from dense_memory import DenseMemory
from supermask.core.bases.networks import ARCHITECTURES, BaseSpec, build_base, gate_names
from supermask.core.bases.stacked import stacked_forward
from supermask.core.hopfield.recovery import (
    RecoveryConfig,
    hamming,
    nearest_pattern,
    output_entropy,
    recover_batch,
    recover_patterns,
)
from supermask.core.hopfield.reservoir import (
    Reservoir,
    estimated_capacity,
    hebbian_increment,
    projection_increment,
    storkey_increment,
    sync_descent,
    to_state,
)
from supermask.core.masks import MASK_METHODS, MaskSpec, build_mask_method
from supermask.core.masks.neuron import (
    NeuronMask,
    expand_neuron_masks,
    masks_from_patterns,
    neuron_dims,
    neuron_forward,
    patterns_from_masks,
)

# Two patterns over d = 4 neurons: z1 = (+1, +1, -1, -1), z2 = (+1, +1, +1, -1).
M1 = np.array([1, 1, 0, 0], dtype=bool)
M2 = np.array([1, 1, 1, 0], dtype=bool)

# Hebbian, by hand: (z1 z1^T + z2 z2^T) / 4.
HEBBIAN_4 = (
    np.array(
        [
            [2, 2, 0, -2],
            [2, 2, 0, -2],
            [0, 0, 2, 0],
            [-2, -2, 0, 2],
        ]
    )
    / 4.0
)

# Storkey, by hand: Psi1 = (z1 z1^T - I) / 4; h = Psi1 z2 = (1, 1, -3, -1) / 4;
# Psi2 = Psi1 + (z2 z2^T - I - z2 h^T - h z2^T) / 4.
STORKEY_4 = np.array(
    [
        [-0.125, 0.375, 0.125, -0.375],
        [0.375, -0.125, 0.125, -0.375],
        [0.125, 0.125, 0.375, -0.125],
        [-0.375, -0.375, -0.125, -0.125],
    ]
)
# int8 keeps the off-diagonal as multiples of its scale 1/d = 0.25, rounding half to even
# (0.375 -> 0.5, 0.125 -> 0); the diagonal is kept in fp32.
STORKEY_4_INT8 = np.array(
    [
        [-0.125, 0.5, 0.0, -0.5],
        [0.5, -0.125, 0.0, -0.5],
        [0.0, 0.0, 0.375, 0.0],
        [-0.5, -0.5, 0.0, -0.125],
    ]
)

# Projection, by hand: Psi1 = z1 z1^T / 4; e = z2 - Psi1 z2 = (1, 1, 3, -1) / 2, e^T e = 3;
# Psi2 = Psi1 + e e^T / 3: the projection onto span(z1, z2), so Psi2 z1 = z1 and Psi2 z2 = z2.
PROJECTION_4 = np.array([[1, 1, 0, -1], [1, 1, 0, -1], [0, 0, 3, 0], [-1, -1, 0, 1]]) / 3.0


def random_patterns(k: int, d: int, seed: int, p: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(d) < p for _ in range(k)]


def corrupt(pattern: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = pattern.copy()
    out[rng.choice(pattern.size, int(round(fraction * pattern.size)), replace=False)] ^= True
    return out


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_hebbian_update_matches_hand_computed_matrix(dtype):
    r = Reservoir([4], "hebbian", dtype)
    r.store([M1])
    np.testing.assert_array_equal(r.matrix(0), np.outer(to_state(M1), to_state(M1)) / 4)
    r.store([M2])
    np.testing.assert_array_equal(r.matrix(0), HEBBIAN_4)  # exact in every dtype: counts of 1/4
    assert r.count == 2
    np.testing.assert_array_equal(r.mean_state()[0], [1.0, 1.0, 0.0, -1.0])


@pytest.mark.parametrize(
    "dtype,expected", [("fp32", STORKEY_4), ("fp16", STORKEY_4), ("int8", STORKEY_4_INT8)]
)
def test_storkey_update_matches_hand_computed_matrix(dtype, expected):
    r = Reservoir([4], "storkey", dtype)
    r.store([M1])
    first = (np.outer(to_state(M1), to_state(M1)) - np.eye(4)) / 4
    np.testing.assert_array_equal(r.matrix(0), first)
    r.store([M2])
    np.testing.assert_array_equal(r.matrix(0), expected)


def test_projection_update_matches_hand_computed_matrix():
    r = Reservoir([4], "projection")
    r.store([M1])
    np.testing.assert_allclose(r.matrix(0), np.outer(to_state(M1), to_state(M1)) / 4, atol=1e-7)
    r.store([M2])
    np.testing.assert_allclose(r.matrix(0), PROJECTION_4, atol=1e-6)
    for m in (M1, M2):
        np.testing.assert_allclose(r.matrix(0) @ to_state(m), to_state(m), atol=1e-6)
    r.store([M1])  # already in the span: the matrix stays, the count and the sum move
    np.testing.assert_allclose(r.matrix(0), PROJECTION_4, atol=1e-6)
    assert r.count == 3


@pytest.mark.parametrize(
    "rule,formula",
    [("hebbian", hebbian_increment), ("storkey", storkey_increment), ("projection", projection_increment)],
)
def test_in_place_updates_match_the_literal_rule(rule, formula):
    d = 64
    r, psi = Reservoir([d], rule), np.zeros((d, d))
    for p in random_patterns(12, d, seed=3):
        psi += formula(psi, to_state(p))
        r.store([p])
    np.testing.assert_allclose(r.matrix(0), psi, atol=1e-6)
    np.testing.assert_allclose(r.matrix(0), r.matrix(0).T, rtol=0, atol=1e-7)


def test_energy_is_minus_half_quadratic_form():
    r = Reservoir([4], "storkey")
    r.store([M1])
    r.store([M2])
    z = to_state(M2).astype(np.float64)
    assert r.energy([M2]) == pytest.approx(-0.5 * z @ STORKEY_4 @ z)
    s = [torch.tensor(z, dtype=torch.float32)]
    assert float(r.torch_energy(s)) == pytest.approx(r.energy([M2]), abs=1e-6)


def test_capacity_estimates_and_bytes():
    assert estimated_capacity(2048, "hebbian") == 286  # 0.14 d
    assert estimated_capacity(2048, "storkey") == 524  # d / sqrt(2 ln d)
    assert estimated_capacity(2048, "projection") == 1024  # d / 2
    r = Reservoir([2048, 2048], "storkey", "fp32")
    assert r.capacity() == 524
    per_layer = 2048 * 2048 * 4 + 2048 * 4 + 2048 * 8 + 8  # matrix, fp32 diagonal, int64 sum, scale
    assert r.nbytes == 2 * per_layer + 8
    assert Reservoir([2048], "storkey", "int8").nbytes == 2048 * 2048 + 2048 * 12 + 16
    # The same bytes as packed bits: 8 bytes-per-entry x d masks (plus a little for the side arrays).
    assert r.packed_bits_equivalent() == r.nbytes * 8 // 4096 == 65_632


@pytest.mark.parametrize("rule", ["hebbian", "storkey", "projection"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_stored_patterns_are_fixed_points_below_capacity(rule, dtype):
    patterns = random_patterns(5, 256, seed=1)
    r = Reservoir([256, 256], rule, dtype)
    for p in patterns:
        r.store([p, ~p])
    assert all(r.is_fixed_point([p, ~p]) for p in patterns)
    # A random pattern is not one of them.
    other = random_patterns(1, 256, seed=99)[0]
    assert not r.is_fixed_point([other, other])


@pytest.mark.parametrize("rule", ["hebbian", "storkey", "projection"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_recall_from_ten_percent_corruption(rule, mode):
    patterns = random_patterns(5, 256, seed=2)
    r = Reservoir([256], rule)
    for p in patterns:
        r.store([p])
    for i, p in enumerate(patterns):
        start = corrupt(p, 0.10, seed=10 + i)
        assert hamming([start], [p]) == 26
        result = r.recall([start], mode=mode, seed=i)
        assert result.converged == [True]
        np.testing.assert_array_equal(result.patterns[0], p)
        assert 1 <= result.steps[0] <= 3


def correlated_patterns(k: int, d: int, flip: float, seed: int) -> list[np.ndarray]:
    """k patterns that each differ from one common pattern in a `flip` fraction of bits (overlaps ~0.5)."""
    common = random_patterns(1, d, seed)[0]
    return [corrupt(common, flip, seed + 1 + i) for i in range(k)]


def test_projection_keeps_correlated_patterns_fixed_where_storkey_does_not():
    # Like SplitMNIST's learned second-layer patterns (overlaps 0.5-0.6): Storkey loses stored patterns
    # as fixed points; under the projection rule every one is a fixed point of the lowest energy, -d/2.
    d = 256
    patterns = correlated_patterns(5, d, 0.15, seed=60)
    fixed = {}
    for rule in ("storkey", "projection"):
        r = Reservoir([d], rule)
        for p in patterns:
            r.store([p])
        fixed[rule] = [r.is_fixed_point([p]) for p in patterns]
    assert not all(fixed["storkey"])
    assert all(fixed["projection"])
    assert all(r.energy([p]) == pytest.approx(-d / 2, abs=1e-3) for p in patterns)
    # The attractors found from random starts, by the matrix alone, are the stored patterns.
    found = r.attractors(starts=256, seed=1)[0]
    assert sorted(map(bytes, np.packbits(found, axis=1))) == sorted(
        map(bytes, np.packbits(np.stack(patterns), axis=1))
    )


def test_one_shot_recovery_keeps_the_lowest_entropy_candidate():
    base = small_swish(widths=(48, 48))
    patterns = [
        [p, q] for p, q in zip(correlated_patterns(3, 48, 0.15, 70), correlated_patterns(3, 48, 0.15, 80))
    ]
    r = Reservoir([48, 48], "projection")
    for p in patterns:
        r.store(p)
    x = torch.randn(16, 20, generator=torch.Generator().manual_seed(3))
    config = RecoveryConfig(steps=3)
    got = recover_batch(base, r, x, config, num_classes=5)
    assert got.candidates >= 9 and got.fixed_point  # the settled annealed end and 3 x 3 combinations
    assert r.is_fixed_point(got.patterns)
    forward = neuron_forward(base)
    with torch.no_grad():
        combos = [[a, b] for a in (p[0] for p in patterns) for b in (p[1] for p in patterns)]
        entropies = [
            float(output_entropy(forward(x, [torch.as_tensor(c).float() for c in cs]))) for cs in combos
        ]
    assert got.entropy <= min(entropies) + 1e-6
    alone = recover_batch(base, r, x, RecoveryConfig(steps=3, one_shot=False), num_classes=5)
    assert alone.candidates == 1 and alone.from_annealing and got.entropy <= alone.entropy + 1e-6


def test_sync_descent_detects_two_cycles():
    # Two units coupled negatively swing together under synchronous updates: (+,+) -> (-,-) -> (+,+).
    off = np.array([[0.0, -1.0], [-1.0, 0.0]], dtype=np.float32)
    states, steps, converged = sync_descent(off, np.array([[1.0, 1.0], [1.0, -1.0]], dtype=np.float32))
    assert converged.tolist() == [False, True]
    assert steps.tolist() == [2, 0]
    np.testing.assert_array_equal(states[1], [1.0, -1.0])


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_low_precision_storage_stays_close_to_fp32(rule):
    # Stated tolerance: fp16 entries within 2^-11 relative per update; int8 within scale/2 per update
    # (Hebbian int8 is exact while counts fit in int8); recall from 10% corruption at k = 20, d = 256
    # (below both capacity estimates, 35 and 77) is identical.
    d, k = 256, 20
    patterns = random_patterns(k, d, seed=4)
    res = {dt: Reservoir([d], rule, dt) for dt in ("fp32", "fp16", "int8")}
    for p in patterns:
        for r in res.values():
            r.store([p])
    exact = res["fp32"].matrix(0)
    scale = res["int8"]._scale[0]
    assert scale == 1 / d  # never had to grow at this k
    int8_error = np.abs(res["int8"].matrix(0) - exact).max()
    fp16_error = np.abs(res["fp16"].matrix(0) - exact).max()
    if rule == "hebbian":
        assert int8_error == 0.0 and fp16_error == 0.0
    else:
        assert 0 < int8_error <= k * scale / 2
        assert 0 < fp16_error <= k * 2.0**-11 * np.abs(exact).max()
    starts = np.stack([to_state(corrupt(p, 0.10, seed=20 + i)) for i, p in enumerate(patterns)])
    target = np.stack([to_state(p) for p in patterns])
    recovered = {}
    for dt, r in res.items():
        final, _, _ = sync_descent(r.off_diagonal(0), starts)
        recovered[dt] = (final == target).all(axis=1)
    assert recovered["fp32"].all()
    np.testing.assert_array_equal(recovered["int8"], recovered["fp32"])
    np.testing.assert_array_equal(recovered["fp16"], recovered["fp32"])


def test_hebbian_int8_is_exact_until_a_count_overflows_then_rounds():
    d = 16
    r = Reservoir([d], "hebbian", "int8")
    same = np.ones(d, dtype=bool)
    for _ in range(127):
        r.store([same])
    assert r._scale[0] == 1 / d
    np.testing.assert_array_equal(r.matrix(0)[0, 1:], 127 / d)  # exact: Q holds the count
    for _ in range(3):  # counts 128..130 overflow int8: the scale grows to 2 counts per step
        r.store([same])
    assert r._scale[0] == 2 / d
    # 128 -> Q 64; +1 count is half a step and rounds to even (64 or 65 -> back): 130 is stored as 128.
    np.testing.assert_array_equal(r.matrix(0)[0, 1:], 128 / d)
    np.testing.assert_array_equal(r.matrix(0).diagonal(), 130 / d)  # the fp32 diagonal stays exact


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_state_round_trip_through_npz(dtype):
    patterns = random_patterns(6, 32, seed=5)
    r = Reservoir([32, 16], "storkey", dtype)
    for p in patterns:
        r.store([p, p[:16]])
    state = r.state_dict()
    buffer = io.BytesIO()
    np.savez(buffer, meta=json.dumps(state["meta"]), **state["arrays"])
    buffer.seek(0)
    loaded = np.load(buffer, allow_pickle=False)
    again = Reservoir.from_state(
        {
            "meta": json.loads(str(loaded["meta"])),
            "arrays": {k: loaded[k] for k in loaded.files if k != "meta"},
        }
    )
    assert (again.rule, again.dtype, again.dims, again.count) == ("storkey", dtype, [32, 16], 6)
    for i in range(2):
        np.testing.assert_array_equal(again.matrix(i), r.matrix(i))
        np.testing.assert_array_equal(again.mean_state()[i], r.mean_state()[i])
    # Storing continues identically after the round trip.
    nxt = random_patterns(1, 32, seed=6)[0]
    r.store([nxt, nxt[:16]])
    again.store([nxt, nxt[:16]])
    np.testing.assert_array_equal(again.matrix(0), r.matrix(0))


def test_damaged_state_is_refused():
    r = Reservoir([8], "hebbian")
    r.store([np.arange(8) % 2 == 0])
    state = r.state_dict()
    state["arrays"]["off_0"] = state["arrays"]["off_0"].copy()
    state["arrays"]["off_0"][0, 1] += 1.0
    with pytest.raises(ValueError, match="checksum"):
        Reservoir.from_state(state)


def test_bad_settings_name_the_choices():
    with pytest.raises(ValueError, match="known: hebbian, storkey"):
        Reservoir([8], "oja")
    with pytest.raises(ValueError, match="known: fp32, fp16, int8"):
        Reservoir([8], "storkey", "bf16")
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        Reservoir([8]).store([np.ones(7, bool)])


def test_dense_memory_recalls_and_round_trips():
    patterns = random_patterns(40, 96, seed=7)
    mem = DenseMemory([64, 32])
    for p in patterns:
        mem.store([p[:64], p[64:]])
    assert mem.nbytes == 40 * 12 + 96 * 8  # packed bits plus the running sum
    for i in (0, 17, 39):
        start = corrupt(patterns[i], 0.10, seed=i)
        got = mem.recall([start[:64], start[64:]])
        assert got.converged == [True, True] and got.steps == [1, 1]
        np.testing.assert_array_equal(np.concatenate(got.patterns), patterns[i])
        got_exact = mem.patterns(i)
        np.testing.assert_array_equal(np.concatenate(got_exact), patterns[i])
    again = DenseMemory.from_state(mem.state_dict())
    np.testing.assert_array_equal(again.states(), mem.states())
    # Energy is lowest at a stored pattern.
    assert mem.energy([patterns[3][:64], patterns[3][64:]]) < mem.energy([start[:64], start[64:]])


# Neuron masks ---------------------------------------------------------------------------------


def small_swish(widths=(32, 16), seed=0):
    return build_base(
        BaseSpec(
            arch="swish_mlp", seed=seed, input_shape=(20,), num_outputs=5, options={"widths": list(widths)}
        )
    )


def test_registered_names():
    assert "neuron" in MASK_METHODS and "swish_mlp" in ARCHITECTURES
    base = build_base(BaseSpec(arch="swish_mlp", input_shape=(784,), num_outputs=10))
    assert base.layer_shapes == [(2048, 784), (2048, 2048), (10, 2048)]
    assert [type(m).__name__ for m in base.net][1:5] == ["Linear", "Identity", "SiLU", "Linear"]


def test_neuron_mask_is_stacked_and_expands_to_rows_and_output_layer_of_ones():
    base = small_swish()
    method = build_mask_method(MaskSpec(method="neuron"), base.layer_shapes, seeds=[0, 1])
    assert isinstance(method, NeuronMask) and method.dims == [32, 16] and method.produces == "neurons"
    assert [tuple(s.shape) for s in method.scores] == [(2, 32), (2, 16)]
    assert all(m.all() for m in method.hard_masks())  # scores start at zero: every neuron kept
    keep = [np.arange(32) % 3 != 0, np.arange(16) < 5]
    method.load_patterns([np.stack([keep[0], ~keep[0]]), np.stack([keep[1], keep[1]])])
    bits = method()
    assert [tuple(b.shape) for b in bits] == [(2, 32), (2, 16)]
    masks = method.hard_masks()
    assert [tuple(m.shape) for m in masks] == [(2, *s) for s in base.layer_shapes]
    for m, p in zip(masks[:2], keep):
        np.testing.assert_array_equal(m[0].numpy(), np.repeat(p[:, None], m.shape[2], axis=1))
    np.testing.assert_array_equal(masks[0][1, :, 0].numpy(), ~keep[0])
    assert bool(masks[2].all())
    assert [p[0].tolist() for p in method.patterns()] == [p.tolist() for p in keep]
    assert [p.tolist() for p in patterns_from_masks([m[0] for m in masks])] == [p.tolist() for p in keep]
    density = method.after_step()["neuron_density"]
    assert density.tolist() == pytest.approx([(21 + 5) / 48, (11 + 5) / 48])


def test_neuron_mask_rejects_density_and_non_neuron_masks():
    with pytest.raises(ValueError, match="no density target"):
        build_mask_method(MaskSpec(method="neuron", density=0.5), [(4, 3), (2, 4)])
    with pytest.raises(ValueError, match="one of them"):
        stacked_forward(small_swish(), torch.zeros(1, 2, 20))
    with pytest.raises(ValueError, match="score_init"):
        build_mask_method(MaskSpec(method="neuron", options={"score_init": "ones"}), [(4, 3), (2, 4)])
    bad = [np.ones((4, 3), bool), np.ones((2, 4), bool)]
    bad[0][1, 2] = False
    with pytest.raises(ValueError, match="not a neuron mask"):
        patterns_from_masks(bad)
    with pytest.raises(ValueError, match="at least two"):
        neuron_dims([(4, 3)])


def test_gradient_reaches_every_neuron_score_on_swish():
    base = small_swish()
    method = NeuronMask(base.layer_shapes, score_init="uniform", seeds=[1])
    x = torch.randn(1, 8, 20, generator=torch.Generator().manual_seed(0))
    logits = stacked_forward(base, x, neurons=method())
    torch.nn.functional.cross_entropy(logits[0], torch.arange(8) % 5).backward()
    for s in method.scores:
        assert s.grad is not None and s.grad.shape == s.shape
        off = s.detach() < 0
        assert off.any() and (s.grad[off] != 0).all()  # Swish'(0) = 1/2: switched-off neurons still learn


@pytest.mark.parametrize("arch", ["swish_gated_mlp", "swish_mlp"])
def test_stacked_neurons_match_each_task_alone_and_its_row_masks(arch):
    spec = BaseSpec(arch=arch, input_shape=(20,), num_outputs=5, options={"widths": [32, 16]})
    base = build_base(spec)
    method = NeuronMask(base.layer_shapes, seeds=[1, 2, 3], score_init="uniform")
    x = torch.randn(3, 8, 20, generator=torch.Generator().manual_seed(5))
    stacked = stacked_forward(base, x, neurons=method())
    alone = neuron_forward(base)
    for k in range(3):
        torch.testing.assert_close(stacked[k], alone(x[k], [b[k] for b in method()]), rtol=1e-5, atol=1e-5)
    # Stored as row masks, a neuron mask gives the same outputs, gated base included.
    torch.testing.assert_close(stacked_forward(base, x, method.hard_masks()), stacked, rtol=0, atol=1e-6)
    # On the gated base the gradient reaches the scores through the gates, not the (scale-invariant) rows.
    stacked.logsumexp(-1).sum().backward()
    assert all(s.grad.abs().sum() > 0 for s in method.scores)


def activation_masked_forward(base, patterns, x):
    """Mask each hidden activation's output channels with forward hooks: the definition of a neuron mask."""
    acts = [m for m in base.net if isinstance(m, (torch.nn.SiLU, torch.nn.ReLU))]
    assert len(acts) == len(patterns)
    hooks = []
    for act, p in zip(acts, patterns):
        m = torch.as_tensor(p, dtype=torch.float32)

        def hook(module, inputs, output, m=m):
            return output * m.view(1, -1, *([1] * (output.dim() - 2)))

        hooks.append(act.register_forward_hook(hook))
    try:
        return base(x)
    finally:
        for h in hooks:
            h.remove()


def test_row_masks_equal_activation_masks_on_swish_mlp():
    base = small_swish()
    patterns = random_patterns(1, 32, seed=8) + random_patterns(1, 16, seed=9)
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(1))
    via_rows = base(x, masks_from_patterns(patterns, base.layer_shapes))
    via_activations = activation_masked_forward(base, patterns, x)
    torch.testing.assert_close(via_rows, via_activations, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(via_rows, base(x))  # the mask does something


def test_channel_masks_equal_activation_masks_on_conv4():
    base = build_base(BaseSpec(arch="conv4", input_shape=(3, 8, 8), num_outputs=4))
    dims = neuron_dims(base.layer_shapes)
    assert dims == [64, 64, 128, 128, 256, 256]
    patterns = [random_patterns(1, d, seed=20 + i)[0] for i, d in enumerate(dims)]
    masks = masks_from_patterns(patterns, base.layer_shapes)
    assert masks[0].shape == (64, 3, 3, 3) and bool((masks[0][~torch.as_tensor(patterns[0])] == 0).all())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        base(x, masks), activation_masked_forward(base, patterns, x), rtol=1e-5, atol=1e-6
    )


def test_gated_base_masks_standardised_neurons_with_gradient():
    spec = BaseSpec(arch="swish_gated_mlp", input_shape=(20,), num_outputs=5, options={"widths": [32, 16]})
    base = build_base(spec)
    assert gate_names(base) == ["3.gate", "7.gate"]
    assert base.bn_names == [] and base.layer_shapes == [(32, 20), (16, 32), (5, 16)]
    patterns = random_patterns(1, 32, seed=11) + random_patterns(1, 16, seed=12)
    bits = [torch.tensor(p, dtype=torch.float32, requires_grad=True) for p in patterns]
    x = torch.randn(8, 20, generator=torch.Generator().manual_seed(4))
    logits = neuron_forward(base)(x, bits)
    w1, w2, w3 = base.weights()
    h = torch.nn.functional.silu(
        (x @ w1.T - (x @ w1.T).mean(0)) / (x @ w1.T).var(0, unbiased=False).add(1e-5).sqrt() * bits[0]
    )
    h = torch.nn.functional.silu(
        (h @ w2.T - (h @ w2.T).mean(0)) / (h @ w2.T).var(0, unbiased=False).add(1e-5).sqrt() * bits[1]
    )
    torch.testing.assert_close(logits, h @ w3.T, rtol=1e-4, atol=1e-5)
    logits.logsumexp(1).sum().backward()
    # Switched-off neurons get a gradient too (Swish'(0) = 1/2). Exception: a last hidden neuron whose
    # output-layer column has one sign throughout gets exactly 0 through a softmax loss (zero-mean batch).
    assert (bits[0].grad[torch.as_tensor(~patterns[0])] != 0).all()
    same_sign = (w3.sign() == w3.sign()[:1]).all(0)
    off = torch.as_tensor(~patterns[1])
    assert ((bits[1].grad != 0) == ~same_sign)[off].all()
    assert torch.equal(base(x), neuron_forward(base)(x, [torch.ones(32), torch.ones(16)]))
    with pytest.raises(ValueError, match="batch statistics already"):
        build_base(BaseSpec(arch="swish_gated_mlp", batchnorm=True, input_shape=(20,), num_outputs=5))


def test_expansion_gradient_sums_over_the_row():
    bits = [torch.tensor([1.0, 0.0], requires_grad=True)]
    masks = expand_neuron_masks(bits, [(2, 3), (1, 2)])
    (masks[0] * torch.arange(6.0).view(2, 3)).sum().backward()
    assert bits[0].grad.tolist() == [3.0, 12.0]


# Recovery -------------------------------------------------------------------------------------


def test_nearest_pattern_and_hamming():
    stored = [[np.array([1, 0, 1], bool)], [np.array([0, 0, 0], bool)]]
    assert hamming(stored[0], stored[1]) == 2
    assert nearest_pattern([np.array([1, 0, 0], bool)], stored) == (0, 1, [1, 1])  # a tie goes to the first
    assert nearest_pattern([np.array([0, 1, 0], bool)], stored) == (1, 1, [3, 1])


def test_recovery_starts_and_energy_descent_land_on_a_stored_attractor():
    base = small_swish(widths=(48, 48))
    patterns = [[p, q] for p, q in zip(random_patterns(3, 48, seed=30), random_patterns(3, 48, seed=31))]
    r = Reservoir([48, 48], "storkey")
    for p in patterns:
        r.store(p)
    x = torch.randn(16, 20, generator=torch.Generator().manual_seed(3))
    batches = [x] * 12
    # From a 10%-corrupted copy of task 1 (as the start), energy alone (entropy weight ~0 after step 0)
    # must pull the pattern back to task 1.
    start = [corrupt(patterns[1][0], 0.1, seed=40), corrupt(patterns[1][1], 0.1, seed=41)]

    class StartAt(Reservoir):
        def mean_state(self):
            return [np.where(s, 0.5, -0.5).astype(np.float32) for s in start]

    memory = StartAt.from_state(r.state_dict())
    config = RecoveryConfig(gamma=1.0)
    result = recover_patterns(base, memory, batches, config, reference=patterns[1])
    assert nearest_pattern(result.patterns, patterns)[:2] == (1, 0)
    assert result.steps == 12 and len(result.history) == 13 and len(result.trace) == 12
    assert 1 <= result.converged_step < 12
    assert result.trace[-1]["distance"] == 0.0
    # Any forward(x, bits) serves; the base's own is the row-mask one.
    again = recover_patterns(neuron_forward(base), memory, batches, config)
    assert all((a == b).all() for h, g in zip(again.history, result.history) for a, b in zip(h, g))
    # Zero start is every neuron kept; random start is seeded.
    zero = recover_patterns(base, r, batches[:1], RecoveryConfig(start="zero"))
    assert all(h.all() for h in zero.history[0])
    a = recover_patterns(base, r, batches[:2], RecoveryConfig(start="random", seed=5))
    b = recover_patterns(base, r, batches[:2], RecoveryConfig(start="random", seed=5))
    assert all((x == y).all() for x, y in zip(a.patterns, b.patterns))


def test_recovery_config_is_validated():
    base = small_swish()
    r = Reservoir([32, 16])
    with pytest.raises(ValueError, match="recovery.start"):
        recover_patterns(base, r, [torch.zeros(1, 20)], RecoveryConfig(start="middle"))
    with pytest.raises(ValueError, match="memory is empty"):
        recover_patterns(base, r, [torch.zeros(1, 20)])
    with pytest.raises(ValueError, match="sizes"):
        recover_patterns(base, Reservoir([8, 8]), [torch.zeros(1, 20)], RecoveryConfig(start="zero"))
