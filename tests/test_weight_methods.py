"""Trained-weight methods beside supermasks: STR on weights, magnitude pruning, the weights record, FLOPs."""

import math

import numpy as np
import pytest
import torch

from supermask.core.flops import inference_flops, weights_flops
from supermask.core.masks import MaskSpec, build_mask_method, kept_count, layer_densities
from supermask.core.nets import BaseSpec, build_base
from supermask.core.registry import UnknownNameError
from supermask.core.weight_methods import (
    WEIGHT_METHODS,
    DenseWeights,
    MagnitudePruning,
    STRWeights,
    WeightSpec,
    build_weight_method,
    cubic_sparsity,
)
from supermask.core.weight_training import TrainConfig, evaluate, train_weights
from supermask.core.weights_record import TaskWeights, encoded_bytes, require_kind, task_weights


def teacher_task(n=1200, dim=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x @ torch.randn(dim, classes, generator=g)).argmax(1)
    return x, y


def mlp_base(widths=(64, 64), init="kaiming_normal", dim=20, classes=4, seed=0):
    spec = BaseSpec(
        arch="mlp", init=init, seed=seed, input_shape=(dim,), num_outputs=classes, options={"widths": widths}
    )
    return build_base(spec)


def test_registry_lists_the_methods_and_rejects_unknown_ones():
    assert WEIGHT_METHODS.names() == ["dense", "magnitude", "str"]
    with pytest.raises(UnknownNameError, match="known: dense, magnitude, str"):
        build_weight_method(WeightSpec("lottery"), [torch.ones(2, 2)])
    with pytest.raises(
        ValueError, match="weights.options.init_threshold: not an option of weight method 'str'"
    ):
        build_weight_method(WeightSpec("str", {"init_threshold": 0.1}), [torch.ones(2, 2)])
    with pytest.raises(ValueError, match="target_sparsity: got 1.0"):
        STRWeights([torch.ones(2, 2)], target_sparsity=1.0)
    with pytest.raises(ValueError, match="policy: got 'random'"):
        MagnitudePruning([torch.ones(2, 2)], policy="random")


def test_str_effective_weights_and_gradients_match_a_hand_computation():
    w = torch.tensor([[0.5, -0.2], [0.05, -1.0]])
    s0 = math.log(0.1 / 0.9)  # sigmoid(s) = 0.1
    method = STRWeights([w], init_s=s0)
    (w_hat,) = method()
    # sign(W) * relu(|W| - 0.1)
    assert torch.allclose(w_hat, torch.tensor([[0.4, -0.1], [0.0, -0.9]]), atol=1e-6)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (w_hat * c).sum().backward()
    # dL/dW = c where |W| > 0.1, else 0 (relu's gradient; sign's is zero)
    assert torch.allclose(method.weights[0].grad, torch.tensor([[1.0, 2.0], [0.0, 4.0]]))
    # dL/ds = -sum(c * sign(W) over kept) * sigmoid'(s) = -(1 - 2 - 4) * 0.1 * 0.9 = 0.45
    assert method.s.grad.shape == (1,)
    assert method.s.grad.item() == pytest.approx(0.45, abs=1e-6)
    assert method.layer_sparsity() == [0.25]


def test_str_weight_decay_applies_to_s_and_can_be_set_apart():
    method = STRWeights([torch.ones(3, 3), torch.ones(2, 3)], init_s=-5.0)
    groups = method.param_groups()
    assert groups[1]["params"][0] is method.s and "weight_decay" not in groups[1]  # the optimizer's, as on W
    opt = torch.optim.SGD(groups, lr=0.1, weight_decay=0.01)
    opt.zero_grad()
    sum(w.sum() * 0 for w in method()).backward()  # no loss gradient reaches s
    opt.step()
    # only decay moves s: s - lr * wd * s = -5 * (1 - 0.001), which raises the threshold
    assert torch.allclose(method.s.detach(), torch.full((2,), -4.995))
    apart = STRWeights([torch.ones(3, 3)], s_weight_decay=0.5).param_groups()
    assert apart[1]["weight_decay"] == 0.5


def test_cubic_schedule():
    assert cubic_sparsity(0, 100, 0.9, 0.0, 1.0) == 0.0
    assert cubic_sparsity(50, 100, 0.9, 0.0, 1.0) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity(10, 100, 0.9, 0.2, 0.6) == 0.0
    assert cubic_sparsity(40, 100, 0.9, 0.2, 0.6) == pytest.approx(0.9 * 0.875)
    assert cubic_sparsity(60, 100, 0.9, 0.2, 0.6) == cubic_sparsity(99, 100, 0.9, 0.2, 0.6) == 0.9


@pytest.mark.parametrize("target", [0.9, 0.97])
def test_str_target_sparsity_is_reached_and_budgets_are_not_uniform(target):
    torch.manual_seed(0)
    x, y = teacher_task()
    base = mlp_base()
    method = STRWeights(base.weights(), target_sparsity=target, ramp_end=0.6)
    result = train_weights(
        base, method, x, y, TrainConfig(lr=0.1, epochs=30, weight_decay=1e-4), log_every=10
    )
    assert result.steps == 300
    assert abs(method.sparsity() - target) < 0.005
    zeros = sum(int((w == 0).sum()) for w in method.effective_weights())
    assert abs(zeros / sum(method.sizes) - target) < 0.005
    # the ramp is followed: half way up it the sparsity is the schedule's, and it holds after the end
    curve = dict(zip(result.curve["step"], result.curve["sparsity"], strict=True))
    assert abs(curve[100] - cubic_sparsity(100, 300, target, 0.0, 0.6)) < 0.005
    assert all(abs(curve[s] - target) < 0.005 for s in (200, 250))
    per_layer = method.layer_sparsity()
    assert max(per_layer) - min(per_layer) > 0.05  # STR's own budgets: layers differ
    assert evaluate(base, method, x, y) > 0.5  # 4 classes: still learned well above chance


def test_str_without_target_learns_its_own_budget_from_weight_decay_on_s():
    x, y = teacher_task()
    sparsity = {}
    for decay in (0.0, 0.05):
        base = mlp_base()
        method = STRWeights(base.weights(), init_s=-6.0, s_weight_decay=decay)
        result = train_weights(base, method, x, y, TrainConfig(lr=0.1, epochs=10, weight_decay=1e-4))
        assert result.final["sparsity"] == result.final["sparsity_before_calibration"]  # never calibrated
        sparsity[decay] = method.sparsity()
    assert sparsity[0.0] < 0.05
    assert sparsity[0.05] > sparsity[0.0] + 0.2


@pytest.mark.parametrize("policy", ["uniform", "erdos_renyi"])
@pytest.mark.parametrize("schedule", ["gradual", "one_shot"])
def test_magnitude_pruning_hits_per_layer_budgets_exactly(policy, schedule):
    x, y = teacher_task(n=640)
    base = mlp_base(widths=(48, 32))
    method = MagnitudePruning(base.weights(), target_sparsity=0.8, policy=policy, schedule=schedule, every=3)
    result = train_weights(base, method, x, y, TrainConfig(lr=0.05, epochs=8, weight_decay=1e-4), log_every=1)
    densities = layer_densities(method.shapes, 0.2, policy)
    expected = [kept_count(n, d) for n, d in zip(method.sizes, densities)]
    assert [int(m.sum()) for m in method.masks()] == expected
    assert [int((w != 0).sum()) for w in method.effective_weights()] == expected
    if policy == "erdos_renyi":
        # ER: density_l = eps * (rows + cols) / (rows * cols), eps = 0.2 * 2624 / (68 + 80 + 36)
        assert expected == [194, 228, 103]  # 20.2%, 14.8% and 80.2% of 960, 1536 and 128 weights
    sparsity = result.curve["sparsity"]
    if schedule == "gradual":
        assert all(b >= a for a, b in zip(sparsity, sparsity[1:]))  # pruning never undoes itself
        assert sparsity[29] == pytest.approx(0.8, abs=0.01)  # the ramp ends at 0.75 of 40 steps
    else:
        assert max(sparsity[:-1]) == 0.0  # one shot at the end: trained dense, pruned after the last step
        assert sparsity[-1] == pytest.approx(0.8, abs=0.01)


def test_global_magnitude_keeps_the_largest_weights_over_all_layers():
    layers = [torch.tensor([[0.1, -0.9], [0.3, 0.05]]), torch.tensor([[-0.5, 0.2, 0.01]])]
    method = MagnitudePruning(layers, target_sparsity=4 / 7, policy="global")
    method.begin(1)
    method.finalize()
    assert [m.tolist() for m in method.masks()] == [[[False, True], [True, False]], [[True, False, False]]]


def train_on_tasks(base, method, tasks, config):
    accuracy = []
    for x, y in tasks:
        train_weights(base, method, x, y, config)
        accuracy.append(evaluate(base, method, tasks[0][0], tasks[0][1]))
    return accuracy


def test_fine_tuning_forgets_while_separate_masks_do_not():
    x, y = teacher_task(n=1500, dim=20, classes=4, seed=1)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    tasks = [(x[:1000], y[:1000]), (x[:1000, perm], y[:1000])]  # the same labels, inputs permuted
    config = TrainConfig(lr=0.05, epochs=15, weight_decay=1e-4)

    base = mlp_base(widths=(64, 64))
    tuned = DenseWeights(base.weights())
    after_own, after_next = train_on_tasks(base, tuned, tasks, config)
    assert after_own > 0.8
    assert after_next < after_own - 0.2  # fine-tuning through the stream forgets task 0

    frozen = mlp_base(widths=(256, 256), init="signed_constant")
    before = [w.clone() for w in frozen.weights()]
    masks = [build_mask_method(MaskSpec("topk", density=0.5), frozen.layer_shapes, seeds=t) for t in range(2)]
    mask_config = TrainConfig(lr=0.5, epochs=15)
    train_weights(frozen, masks[0], *tasks[0], mask_config)
    own = evaluate(frozen, masks[0], *tasks[0])
    train_weights(frozen, masks[1], *tasks[1], mask_config)
    assert own > 0.7
    assert evaluate(frozen, masks[0], *tasks[0]) == own  # task 0's mask and the base are untouched
    assert evaluate(frozen, masks[1], *tasks[1]) > 0.7
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.weights()))


def make_record(dtype="float32"):
    base = mlp_base(widths=(40, 30), classes=3)
    method = MagnitudePruning(base.weights(), target_sparsity=0.95, policy="erdos_renyi")
    method.begin(1)
    method.finalize()
    bn = {"2.running_mean": torch.arange(3.0)}
    record = task_weights(
        "t0", "magnitude", base, method.effective_weights(), bn, dtype=dtype, metrics={"acc": 0.5}
    )
    return base, method, record


@pytest.mark.parametrize("fmt", ["auto", "dense", "bitmap", "csr"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_task_weights_round_trip_in_every_format(fmt, dtype):
    _, method, record = make_record(dtype)
    arrays, meta = record.to_arrays(fmt)
    assert meta["kind"] == "weights" and meta["dtype"] == dtype
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    back = TaskWeights.from_arrays(arrays, meta)
    assert back.checksum == record.checksum == meta["checksum"]
    for a, b in zip(back.values, record.values):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert back.layer_sparsity == pytest.approx(
        method.layer_sparsity(), abs=1e-12 if dtype == "float32" else 1e-3
    )
    assert sum(a.nbytes for k, a in arrays.items() if k.startswith("layer")) == meta["stored_bytes"]
    if fmt == "auto":
        assert meta["stored_bytes"] <= min(record.stored_bytes(f) for f in ("dense", "bitmap", "csr"))


def test_sparse_formats_pay_where_they_should():
    layer = np.zeros((100, 200), np.float16)
    layer[np.arange(100), np.arange(100) * 2] = 1.0  # 0.5% nonzero
    assert encoded_bytes(layer, "dense") == 40_000
    assert encoded_bytes(layer, "bitmap") == 2_500 + 200
    assert encoded_bytes(layer, "csr") == 101 * 2 + 100 * (2 + 2)  # uint16 row pointers and columns
    half = np.ones((100, 200), np.float32)
    half[:, ::2] = 0
    assert (
        encoded_bytes(half, "bitmap")
        == 2_500 + 40_000
        < encoded_bytes(half, "csr")
        < encoded_bytes(half, "dense")
    )


def test_a_weights_record_is_never_read_as_a_mask():
    _, _, record = make_record()
    arrays, meta = record.to_arrays()
    with pytest.raises(ValueError, match="record of task 't0' holds weights, not a mask"):
        require_kind(meta, "mask")
    require_kind(meta, "weights")
    with pytest.raises(TypeError, match="holds trained weights"):
        record.masks()
    with pytest.raises(TypeError, match="not a mask"):
        record.packed  # noqa: B018
    with pytest.raises(ValueError, match="holds mask, not a weights"):
        TaskWeights.from_arrays(arrays, {**meta, "kind": "mask"})
    with pytest.raises(ValueError, match="holds mask"):
        TaskWeights.from_arrays(arrays, {k: v for k, v in meta.items() if k != "kind"})  # unmarked: a mask
    broken = dict(arrays)
    key = next(k for k in broken if k.endswith("values"))
    broken[key] = broken[key] * 2
    with pytest.raises(ValueError, match="corrupt"):
        TaskWeights.from_arrays(broken, meta)


def test_a_record_runs_like_its_method():
    x, y = teacher_task(n=300, classes=3)
    base, method, record = make_record()
    assert evaluate(base, record, x, y) == evaluate(base, method, x, y)
    assert record.tensors()[0].dtype == torch.float32


def test_flops_dense_and_sparse():
    lenet = build_base(BaseSpec(arch="lenet300", input_shape=(784,), num_outputs=10))
    flops = inference_flops(lenet, [0.1, 0.2, 0.5])
    assert flops.dense_per_layer == [784 * 300, 300 * 100, 100 * 10]
    assert flops.sparse_per_layer == [23_520, 6_000, 500]
    assert flops.fraction == pytest.approx(30_020 / 266_200)
    conv = build_base(BaseSpec(arch="conv4", input_shape=(3, 32, 32), num_outputs=10))
    dense = inference_flops(conv).dense_per_layer
    # 3x3 convs at 32x32 (twice), then 16x16 after the pool; linear layers once
    assert dense[:4] == [3 * 64 * 9 * 1024, 64 * 64 * 9 * 1024, 64 * 128 * 9 * 256, 128 * 128 * 9 * 256]
    assert dense[4:] == [128 * 8 * 8 * 256, 256 * 256, 256 * 10]
    zeros = [w * 0 for w in lenet.weights()]
    assert weights_flops(lenet, zeros).sparse == 0


@pytest.mark.parametrize("controller", ["decay", "offset"])
def test_str_controller_moves_land_on_a_sparsity_by_hand(controller):
    layers = [torch.tensor([0.01, -0.02, 0.03, -0.04]), torch.tensor([[0.2, -0.5]])]
    method = STRWeights(layers, init_s=-4.0, controller=controller)
    method.s.data = torch.tensor([-4.0, -2.0])  # thresholds 0.018 and 0.119: 1 + 0 of 6 weights are zero
    assert method.sparsity() == pytest.approx(1 / 6)
    method._steer(0.5)
    # Three zeros: only a layer-0 threshold in [0.03, 0.04) with layer 1's under 0.2 gives them, in both
    # forms (sigmoid(-2 * 0.869) = 0.15 for the decay step, sigmoid(-2 + 0.614) = 0.2 for the shift).
    assert method.layer_sparsity() == [0.75, 0.0]
    s0, s1 = method.s.tolist()
    assert 0.03 <= torch.sigmoid(torch.tensor(s0)) < 0.04
    if controller == "decay":
        assert s1 / s0 == pytest.approx(0.5)  # a decay step scales every s_l by the same factor
    else:
        assert s1 - s0 == pytest.approx(2.0)  # a shift keeps their differences
