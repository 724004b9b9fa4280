"""Core engine: bases, mask methods, packing, mask search (no Ray, no data files)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from supermask.core.bases.networks import ARCHITECTURES, BaseSpec, build_base
from supermask.core.evaluate import evaluate_mask
from supermask.core.masks import MASK_METHODS, MaskSpec, build_mask_method, kept_count, layer_densities
from supermask.core.records.packing import pack_masks, unpack_masks
from supermask.core.registry import UnknownNameError
from supermask.core.search.stacked_search import SearchConfig, StackedSearch, StackedTensors, search_mask


def method(name, shapes, density=None, **kw):
    return build_mask_method(MaskSpec(name, density, **kw), shapes)


def one_task(base, x, y, spec, config, task_id="task", **kw):
    """A stacked search of one task."""
    data = StackedTensors.of([x], [y], "cpu")
    return StackedSearch(base, data, spec, config, seeds=[config.seed], task_ids=[task_id], **kw)


FC1024 = BaseSpec(arch="fc1024", input_shape=(784,), num_outputs=500)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(UnknownNameError) as e:
        build_base(BaseSpec(arch="fc2048", input_shape=(784,), num_outputs=10))
    for name in ("fc1024", "lenet300", "conv4", "conv6", "resnet18"):
        assert name in str(e.value)


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("fc1024", (784,)),
        ("lenet300", (784,)),
        ("conv4", (3, 32, 32)),
        ("conv6", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
    ],
)
def test_every_architecture_builds_and_runs(arch, shape):
    base = build_base(BaseSpec(arch=arch, input_shape=shape, num_outputs=500))
    assert all(not p.requires_grad for p in base.parameters())
    masks = [m[0] for m in method("topk", base.layer_shapes, 0.5)()]
    assert base(torch.randn(2, *shape), masks, base.fresh_bn_state()).shape == (2, 500)


def test_conv_arch_rejects_flat_input():
    with pytest.raises(ValueError, match="image input"):
        build_base(BaseSpec(arch="conv4", input_shape=(784,), num_outputs=10))


def test_signed_constant_init_values():
    base = build_base(FC1024)
    for w in base.weights():
        expected = np.sqrt(2.0) / np.sqrt(w.shape[1])
        assert torch.allclose(w.abs(), torch.full_like(w, expected))
        assert 0.45 < float((w > 0).float().mean()) < 0.55


def test_base_rebuilt_bit_for_bit_and_seed_matters():
    a, b = build_base(FC1024), build_base(FC1024)
    assert all(torch.equal(x, y) for x, y in zip(a.weights(), b.weights()))
    assert a.fingerprint == b.fingerprint
    assert (
        build_base(BaseSpec(arch="fc1024", seed=1, input_shape=(784,), num_outputs=500)).fingerprint
        != a.fingerprint
    )
    assert (
        build_base(
            BaseSpec(arch="fc1024", init="kaiming_normal", input_shape=(784,), num_outputs=500)
        ).fingerprint
        != a.fingerprint
    )


def test_fingerprint_identical_in_a_separate_process():
    code = (
        "import torch; torch.set_num_threads(2);"
        "from supermask.core.bases.networks import BaseSpec, build_base;"
        "print(build_base(BaseSpec(arch='fc1024', input_shape=(784,), num_outputs=500)).fingerprint,"
        " build_base(BaseSpec(arch='resnet18', input_shape=(3,32,32), num_outputs=5)).fingerprint)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    here = [
        build_base(FC1024).fingerprint,
        build_base(BaseSpec(arch="resnet18", input_shape=(3, 32, 32), num_outputs=5)).fingerprint,
    ]
    assert out == here


@pytest.mark.parametrize("density", [0.01, 0.1, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("policy", ["uniform", "erdos_renyi"])
def test_topk_density_is_fraction_kept_within_one_weight_per_layer(density, policy):
    shapes = build_base(BaseSpec(arch="lenet300", input_shape=(784,), num_outputs=10)).layer_shapes
    masks = [m[0].numpy() for m in method("topk", shapes, density, policy=policy).hard_masks()]
    wanted = layer_densities(shapes, density, policy)
    for m, d in zip(masks, wanted):
        assert abs(int(m.sum()) - d * m.size) <= 1.0
    total = sum(m.size for m in masks)
    assert abs(sum(int(m.sum()) for m in masks) - density * total) <= len(masks)


def test_erdos_renyi_gives_small_layers_more_density():
    shapes = [(300, 784), (100, 300), (10, 100)]
    d = layer_densities(shapes, 0.1, "erdos_renyi")
    assert d[0] < d[1] < d[2] <= 1.0
    assert np.isclose(sum(di * np.prod(s) for di, s in zip(d, shapes)), 0.1 * sum(np.prod(s) for s in shapes))


def test_density_outside_range_is_rejected():
    with pytest.raises(ValueError, match="fraction of weights kept"):
        layer_densities([(4, 4)], 0.0)
    with pytest.raises(ValueError, match="fraction of weights kept"):
        layer_densities([(4, 4)], 1.5)


def test_kept_count_keeps_at_least_one():
    assert kept_count(1000, 0.0001) == 1
    assert kept_count(1000, 0.5) == 500


@pytest.mark.parametrize("name", ["topk", "threshold", "learned_threshold"])
def test_straight_through_gradient_reaches_every_score(name):
    shapes = [(8, 6), (3, 8)]
    m = method(name, shapes, None if name == "threshold" else 0.3)
    masks = [mask[0] for mask in m()]
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(s, generator=g) for s in shapes]
    x = torch.randn(5, 6, generator=g)
    # Linear on purpose: a ReLU would zero the gradient of dead units' weights, masked or not.
    out = (x @ (weights[0] * masks[0]).T) @ (weights[1] * masks[1]).T
    out.square().sum().backward()
    for scores, mask in zip(m.scores, masks):
        assert scores.grad is not None
        pruned = mask.detach() == 0
        assert pruned.any()
        # Pruned weights get a gradient too: the straight-through estimator, not the mask's zero derivative.
        assert (scores.grad[0][pruned] != 0).float().mean() > 0.5
    if name == "learned_threshold":
        assert m.s.grad is not None and (m.s.grad != 0).all()


def test_threshold_mask_keeps_nonnegative_scores():
    m = method("threshold", [(10, 10)])
    (mask,) = m.hard_masks()
    assert np.array_equal(mask[0].numpy(), m.scores[0][0].detach().numpy() >= 0)


def test_unknown_mask_method_lists_known_ones():
    with pytest.raises(UnknownNameError) as e:
        method("magnitude", [(2, 2)], 0.5)
    assert all(n in str(e.value) for n in MASK_METHODS.names())


def test_packing_round_trip_and_one_bit_per_weight():
    rng = np.random.default_rng(0)
    shapes = [(7, 3), (5,), (2, 3, 3, 3)]
    masks = [rng.random(s) < 0.4 for s in shapes]
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8
    assert packed.nbytes == -(-sum(m.size for m in masks) // 8)
    for a, b in zip(masks, unpack_masks(packed, shapes)):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="different base"):
        unpack_masks(packed[:-1], shapes)


def _mlp_base(batchnorm=False, outputs=4, dim=16):
    return build_base(
        BaseSpec(
            arch="mlp",
            input_shape=(dim,),
            num_outputs=outputs,
            batchnorm=batchnorm,
            options={"widths": [64, 64]},
        )
    )


def test_search_learns_and_packs_fc1024_at_one_bit_per_weight(make_teacher_data):
    base = build_base(FC1024)
    x, y = make_teacher_data(256, 784, 10, seed=0)
    mask = search_mask(
        base,
        x,
        y,
        MaskSpec("topk", 0.5),
        SearchConfig(lr=0.5, iterations=3, batch_size=64),
        num_classes=10,
    )
    assert mask.mask_bytes == 2_363_392 // 8 == 295_424
    assert mask.base_fingerprint == base.fingerprint
    assert abs(mask.density - 0.5) < 1e-5


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 0.01), ("rmsprop", 0.01)])
def test_search_beats_chance_with_each_optimizer(make_teacher_data, optimizer, lr):
    base = _mlp_base()
    x, y = make_teacher_data(1024, 16, 4, seed=1)
    config = SearchConfig(optimizer=optimizer, lr=lr, epochs=15, batch_size=64)
    mask = search_mask(base, x[:768], y[:768], MaskSpec("topk", 0.5), config, num_classes=4)
    acc = evaluate_mask(base, mask, x[768:], y[768:], num_classes=4).real_classes
    assert acc > 0.6, acc  # chance is about 0.25
    assert mask.metrics["train_curve"]["loss"][-1] < mask.metrics["train_curve"]["loss"][0]


def test_search_is_deterministic_on_cpu(make_teacher_data):
    base = _mlp_base()
    x, y = make_teacher_data(256, 16, 4, seed=2)
    spec = MaskSpec("topk", 0.3)
    config = SearchConfig(lr=0.5, epochs=3, batch_size=32, seed=7)
    a = search_mask(base, x, y, spec, config)
    b = search_mask(base, x, y, spec, config)
    assert np.array_equal(a.packed, b.packed)
    c = search_mask(base, x, y, spec, SearchConfig(lr=0.5, epochs=3, batch_size=32, seed=8))
    assert not np.array_equal(a.packed, c.packed)


def test_learned_threshold_controller_reaches_target_density(make_teacher_data):
    base = _mlp_base()
    x, y = make_teacher_data(1024, 16, 4, seed=3)
    config = SearchConfig(optimizer="adam", lr=0.01, epochs=10, batch_size=64)
    mask = search_mask(base, x, y, MaskSpec("learned_threshold", 0.1), config, num_classes=4)
    assert abs(mask.density - 0.1) <= 0.01
    # The controller, not only the final calibration, holds it near the target ...
    assert abs(mask.metrics["density_before_calibration"] - 0.1) <= 0.02
    # ... while the per-layer budgets are learned, not uniform.
    assert max(mask.layer_density) - min(mask.layer_density) > 0.02


def test_per_task_batchnorm_statistics_are_kept_per_task(make_teacher_data):
    base = _mlp_base(batchnorm=True)
    config = SearchConfig(lr=0.5, epochs=10, batch_size=64)
    tasks = [make_teacher_data(1024, 16, 4, seed=10 + t, shift=8.0 * t) for t in range(3)]
    masks = [
        search_mask(base, x[:768], y[:768], MaskSpec("topk", 0.5), config, task_id=f"t{t}", num_classes=4)
        for t, (x, y) in enumerate(tasks)
    ]
    own = [
        evaluate_mask(base, m, x[768:], y[768:], num_classes=4).real_classes
        for m, (x, y) in zip(masks, tasks)
    ]
    assert min(own) > 0.6, own
    # The failure of one BN shared across tasks: task 0 evaluated with the last task's statistics.
    x0, y0 = tasks[0]
    shared = masks[0]
    shared.bn_stats = masks[-1].bn_stats
    assert evaluate_mask(base, shared, x0[768:], y0[768:], num_classes=4).real_classes < own[0] - 0.2


def test_mask_from_another_base_is_an_error(make_teacher_data):
    base = _mlp_base()
    x, y = make_teacher_data(128, 16, 4, seed=4)
    mask = search_mask(base, x, y, MaskSpec("topk", 0.5), SearchConfig(iterations=2, batch_size=32))
    other = build_base(
        BaseSpec(arch="mlp", seed=5, input_shape=(16,), num_outputs=4, options={"widths": [64, 64]})
    )
    with pytest.raises(ValueError, match="learned on base"):
        evaluate_mask(other, mask, x, y)


def test_wrong_input_shape_is_a_clear_error(make_teacher_data):
    base = _mlp_base()
    x, y = make_teacher_data(32, 20, 4, seed=0)
    with pytest.raises(ValueError, match="base expects"):
        search_mask(base, x, y, MaskSpec(), SearchConfig(iterations=1))


def test_registry_names():
    assert {"fc1024", "lenet300", "conv4", "conv6", "resnet18"} <= set(ARCHITECTURES.names())


@pytest.mark.parametrize("name", ["topk", "learned_threshold"])
def test_interrupted_search_resumes_bit_for_bit(make_teacher_data, name):
    base = _mlp_base(batchnorm=True)
    x, y = make_teacher_data(300, 16, 4, seed=6)
    spec = MaskSpec(name, 0.3)
    config = SearchConfig(optimizer="adam", lr=0.01, epochs=4, batch_size=64)
    (whole,) = one_task(base, x, y, spec, config).run()

    first = one_task(base, x, y, spec, config)
    saved = []
    with pytest.raises(KeyboardInterrupt):
        first.run(
            should_checkpoint=lambda search: search.step % 5 == 0,
            on_checkpoint=lambda state: (saved.append(state), len(saved) == 2 and _interrupt()),
        )
    state = torch.load(_roundtrip(saved[-1]), weights_only=True)  # as a worker reads it from disk
    second = one_task(base, x, y, spec, config)
    second.load_state_dict(state)
    (resumed,) = second.run()
    assert resumed.metrics["resumed_at_steps"] == [10]
    assert np.array_equal(resumed.packed, whole.packed)
    for k in whole.bn_stats:
        assert np.array_equal(resumed.bn_stats[k], whole.bn_stats[k])


def test_checkpoint_of_another_task_is_refused(make_teacher_data):
    base = _mlp_base()
    x, y = make_teacher_data(128, 16, 4, seed=6)
    config = SearchConfig(iterations=4, batch_size=32)
    state = one_task(base, x, y, MaskSpec(), config, task_id="a").state_dict()
    with pytest.raises(ValueError, match="stale checkpoint"):
        one_task(base, x, y, MaskSpec(), config, task_id="b").load_state_dict(state)


def test_checkpoint_of_other_settings_is_refused(make_teacher_data):
    """A top-k checkpoint must not load into a threshold search of the same task (it used to)."""
    base = _mlp_base()
    x, y = make_teacher_data(128, 16, 4, seed=6)
    config = SearchConfig(iterations=4, batch_size=32)
    topk = one_task(base, x, y, MaskSpec("topk", 0.5), config, provenance={"hash": "topk-settings"})
    topk.run_step()
    threshold = one_task(base, x, y, MaskSpec("threshold"), config, provenance={"hash": "threshold-settings"})
    with pytest.raises(ValueError, match="other settings"):
        threshold.load_state_dict(topk.state_dict())


def test_fingerprint_covers_batchnorm_and_outputs():
    """A mask learned with BatchNorm must be refused on the same weights without it, and the reverse."""
    plain, with_bn = _mlp_base(batchnorm=False), _mlp_base(batchnorm=True)
    assert all(torch.equal(a, b) for a, b in zip(plain.weights(), with_bn.weights()))  # same weights
    assert plain.fingerprint != with_bn.fingerprint
    assert _mlp_base(outputs=5).fingerprint != plain.fingerprint
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    learned_with_bn = search_mask(
        with_bn, x, y, MaskSpec("topk", 0.5), SearchConfig(iterations=2, batch_size=32)
    )
    with pytest.raises(ValueError, match="learned on base"):
        evaluate_mask(plain, learned_with_bn, x, y)
    # Even with the fingerprint forged, BatchNorm statistics that do not fit the base are refused.
    learned_with_bn.base_fingerprint = plain.fingerprint
    with pytest.raises(ValueError, match="BatchNorm statistics"):
        evaluate_mask(plain, learned_with_bn, x, y)


@pytest.mark.parametrize(
    "spec,words",
    [
        (MaskSpec("threshold", 0.1), "has no density target"),
        (MaskSpec("topk", 0.5, options={"policy": "erdos_renyi"}), "set mask.policy instead"),
        (MaskSpec("learned_threshold", 0.1, options={"init_threshold": 5}), "must be in (0, 1)"),
        (MaskSpec("learned_threshold", 0.1, options={"init_threshold": "high"}), "must be a number"),
        (MaskSpec("topk", 0.5, options={"temperature": 2}), "not an option of mask method 'topk'"),
        (MaskSpec("learned_threshold", 0.1, policy="erdos_renyi"), "apply to method topk only"),
    ],
)
def test_mask_settings_that_would_be_ignored_or_clamped_are_errors(spec, words):
    with pytest.raises(ValueError) as e:
        build_mask_method(spec, [(4, 4)])
    assert words in str(e.value)


def _interrupt():
    raise KeyboardInterrupt


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
