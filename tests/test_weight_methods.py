"""Trained-weight methods in the stacked search loop: STR on weights, magnitude pruning, the record, FLOPs."""

import math

import numpy as np
import pytest
import torch

from conftest import teacher_data
from flops import inference_flops, weights_flops
from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.evaluate import evaluate_mask, stacked_accuracy
from supermask.core.masks import MaskSpec, kept_count, layer_densities
from supermask.core.records.weights import TaskWeights, encoded_bytes, require_kind, task_weights
from supermask.core.registry import UnknownNameError
from supermask.core.search.batches import StackedTensors
from supermask.core.search.optimizers import SGD
from supermask.core.search.stacked_search import SearchConfig, StackedSearch
from supermask.core.weights import WEIGHT_METHODS, WeightSpec, build_weight_method, cubic_sparsity
from supermask.core.weights.magnitude import MagnitudePruning
from supermask.core.weights.str import STRWeights


def mlp_base(widths=(64, 64), dim=20, classes=4, seed=0):
    spec = BaseSpec(
        arch="mlp", init="kaiming_normal", seed=seed, input_shape=(dim,), num_outputs=classes,
        options={"widths": list(widths)},
    )  # fmt: skip
    return build_base(spec)


def search(base, spec, tasks, config, seeds=None) -> StackedSearch:
    """A stacked search of weight method `spec` over `tasks` [(x, y), ...] (one seed per task)."""
    data = StackedTensors.of([x for x, _ in tasks], [y for _, y in tasks], "cpu")
    seeds = seeds or list(range(len(tasks)))
    return StackedSearch(
        base, data, spec, config, seeds=seeds, task_ids=[f"t{s}" for s in seeds], num_classes=4
    )


def test_registry_lists_the_methods_and_names_bad_options():
    assert WEIGHT_METHODS.names() == ["dense", "magnitude", "str"]
    w = [torch.ones(2, 2)]
    with pytest.raises(UnknownNameError, match="known: dense, magnitude, str"):
        build_weight_method(WeightSpec("lottery"), w)
    with pytest.raises(
        ValueError, match="weights.options.init_threshold: not an option of weight method 'str'"
    ):
        build_weight_method(WeightSpec("str", {"init_threshold": 0.1}), w)
    with pytest.raises(ValueError, match="weights.options.target_sparsity: got 1.0"):
        build_weight_method(WeightSpec("str", {"target_sparsity": 1.0}), w)
    with pytest.raises(ValueError, match="weights.options.init_s: got 'low'; must be a number"):
        build_weight_method(WeightSpec("str", {"init_s": "low"}), w)
    with pytest.raises(ValueError, match="weights.options.policy: got 'random'"):
        build_weight_method(WeightSpec("magnitude", {"policy": "random"}), w)
    with pytest.raises(ValueError, match="weights.dtype: got 'int8'; allowed: float32, float16"):
        build_weight_method(WeightSpec("dense", dtype="int8"), w)


def test_str_effective_weights_and_gradients_match_a_hand_computation():
    w = torch.tensor([[0.5, -0.2], [0.05, -1.0]])
    method = STRWeights([w], num_tasks=2)
    method.s.data = torch.tensor([[math.log(0.1 / 0.9)], [math.log(0.3 / 0.7)]])  # thresholds 0.1 and 0.3
    (w_hat,) = method()
    # sign(W) * relu(|W| - tau), each task with its own tau
    assert torch.allclose(w_hat[0], torch.tensor([[0.4, -0.1], [0.0, -0.9]]), atol=1e-6)
    assert torch.allclose(w_hat[1], torch.tensor([[0.2, 0.0], [0.0, -0.7]]), atol=1e-6)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (w_hat * c).sum().backward()
    # dL/dW = c where |W| > tau, else 0 (relu's gradient; sign's is zero)
    assert torch.equal(
        method.weights[0].grad, torch.tensor([[[1.0, 2.0], [0.0, 4.0]], [[1.0, 0.0], [0.0, 4.0]]])
    )
    # dL/ds = -sum(c * sign(W) over kept) * sigmoid'(s): -(1 - 2 - 4) * 0.1 * 0.9 and -(1 - 4) * 0.3 * 0.7
    assert method.s.grad[:, 0].tolist() == pytest.approx([0.45, 0.63], abs=1e-6)
    assert method.layer_sparsity().tolist() == [[0.25], [0.5]]


def test_s_decays_with_the_weights_unless_given_its_own():
    x, y = teacher_data(256, 20, 4, seed=0)
    base = mlp_base()
    config = SearchConfig(lr=0.1, epochs=1, weight_decay=0.01)
    same = search(base, WeightSpec("str"), [(x, y)], config)
    apart = search(base, WeightSpec("str", {"s_weight_decay": 0.5}), [(x, y)], config)
    for run, decay in ((same, 0.01), (apart, 0.5)):
        index = next(i for i, p in enumerate(run.optimizer.params) if p is run.method.s)
        assert run.optimizer.weight_decays[index] == decay
        others = run.optimizer.weight_decays[:index] + run.optimizer.weight_decays[index + 1 :]
        assert len(others) == 3 and set(others) == {0.01}  # the weights keep the search's
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = SGD([a, b], lr=0.1, weight_decay=0.01)
    opt.set_weight_decay(b, 0.5)
    a.grad, b.grad = torch.zeros(3), torch.zeros(2)
    opt.step()  # only decay moves them: p - lr * wd * p
    assert a.tolist() == pytest.approx([0.999] * 3) and b.tolist() == pytest.approx([0.95] * 2)


def test_cubic_schedule():
    assert cubic_sparsity(0, 100, 0.9, 0.0, 1.0) == 0.0
    assert cubic_sparsity(50, 100, 0.9, 0.0, 1.0) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity(10, 100, 0.9, 0.2, 0.6) == 0.0
    assert cubic_sparsity(40, 100, 0.9, 0.2, 0.6) == pytest.approx(0.9 * 0.875)
    assert cubic_sparsity(60, 100, 0.9, 0.2, 0.6) == cubic_sparsity(99, 100, 0.9, 0.2, 0.6) == 0.9


def test_str_target_sparsity_is_reached_with_learned_non_uniform_budgets():
    tasks = [teacher_data(1200, 20, 4, seed=s) for s in (0, 1)]
    base = mlp_base()
    target = 0.9
    run = search(base, WeightSpec("str", {"target_sparsity": target, "ramp_end": 0.6}), tasks,
                 SearchConfig(lr=0.1, epochs=30, weight_decay=1e-4))  # fmt: skip
    records = run.run()
    assert run.steps == 300
    for k, record in enumerate(records):
        assert abs(record.sparsity - target) < 0.005  # counted on the stored values
        # the ramp is followed: per epoch (10 steps) the sparsity is the schedule's, then held
        curve = dict(zip(run.curve["step"], [row[k] for row in run.extra["sparsity"]], strict=True))
        assert abs(curve[100] - cubic_sparsity(100, 300, target, 0.0, 0.6)) < 0.005
        assert all(abs(curve[s] - target) < 0.005 for s in (200, 250))
        assert max(record.layer_sparsity) - min(record.layer_sparsity) > 0.05  # STR's own budgets
        assert record.metrics["train_accuracy"] > 0.8
        assert evaluate_mask(base, record, *tasks[k], num_classes=4).real_classes > 0.8  # chance is 0.25


def test_str_without_target_learns_its_budget_from_weight_decay_on_s():
    x, y = teacher_data(1200, 20, 4, seed=0)
    sparsity = {}
    for decay in (0.0, 0.05):
        spec = WeightSpec("str", {"init_s": -6.0, "s_weight_decay": decay})
        (record,) = search(
            mlp_base(), spec, [(x, y)], SearchConfig(lr=0.1, epochs=10, weight_decay=1e-4)
        ).run()
        assert "calibration_move" not in record.metrics  # never calibrated to a target
        sparsity[decay] = record.sparsity
    assert sparsity[0.0] < 0.05
    assert sparsity[0.05] > sparsity[0.0] + 0.2


@pytest.mark.parametrize(
    "spec", [WeightSpec("dense"), WeightSpec("str", {"target_sparsity": 0.8, "ramp_end": 0.5})]
)
def test_a_task_trains_in_a_stack_exactly_as_alone(spec):
    tasks = [teacher_data(300, 20, 4, seed=s) for s in (0, 1)]
    config = SearchConfig(lr=0.1, epochs=4, weight_decay=1e-4)
    stacked = search(mlp_base(), spec, tasks, config, seeds=[7, 8]).run()
    alone = search(mlp_base(), spec, tasks[1:], config, seeds=[8]).run()
    assert all(np.array_equal(a, b) for a, b in zip(stacked[1].values, alone[0].values, strict=True))


@pytest.mark.parametrize("policy", ["uniform", "erdos_renyi"])
@pytest.mark.parametrize("schedule", ["gradual", "one_shot"])
def test_magnitude_pruning_hits_per_layer_budgets_exactly(policy, schedule):
    tasks = [teacher_data(640, 20, 4, seed=s) for s in (0, 1)]
    spec = WeightSpec(
        "magnitude", {"target_sparsity": 0.8, "policy": policy, "schedule": schedule, "every": 3}
    )
    run = search(mlp_base(widths=(48, 32)), spec, tasks, SearchConfig(lr=0.05, epochs=8, batch_size=128))
    records = run.run()
    densities = layer_densities(run.method.shapes, 0.2, policy)
    expected = [kept_count(n, d) for n, d in zip(run.method.sizes, densities)]
    for k, record in enumerate(records):
        assert [int(m[k].sum()) for m in run.method.masks()] == expected
        assert [int(np.count_nonzero(v)) for v in record.values] == expected
        sparsity = [row[k] for row in run.extra["sparsity"]]  # after each epoch of 5 steps
        if schedule == "gradual":
            assert all(b >= a for a, b in zip(sparsity, sparsity[1:]))  # pruning never undoes itself
            assert sparsity[5] == pytest.approx(0.8, abs=0.01)  # the ramp ends at 0.75 of 40 steps
        else:
            assert max(sparsity[:-1]) == 0.0  # one shot at the end: trained dense until the last step
    if policy == "erdos_renyi":
        # ER: density_l = eps * (rows + cols) / (rows * cols), eps = 0.2 * 2624 / (68 + 80 + 36)
        assert expected == [194, 228, 103]  # 20.2%, 14.8% and 80.2% of 960, 1536 and 128 weights


def test_global_magnitude_keeps_each_tasks_largest_weights_over_all_layers():
    layers = [torch.tensor([[0.1, -0.9], [0.3, 0.05]]), torch.tensor([[-0.5, 0.2, 0.01]])]
    method = MagnitudePruning(layers, num_tasks=2, target_sparsity=4 / 7, policy="global")
    with torch.no_grad():
        method.weights[1][1] = torch.tensor([[0.01, 0.2, -0.5]])  # task 1: the last layer reversed
    method.finalize()
    assert [m[0].tolist() for m in method.masks()] == [[[False, True], [True, False]], [[True, False, False]]]
    assert [m[1].tolist() for m in method.masks()] == [[[False, True], [True, False]], [[False, False, True]]]


@pytest.mark.parametrize("controller", ["decay", "offset"])
def test_str_controller_moves_each_task_onto_a_sparsity_by_hand(controller):
    layers = [torch.tensor([0.01, -0.02, 0.03, -0.04]), torch.tensor([[0.2, -0.5]])]
    method = STRWeights(layers, num_tasks=2, controller=controller)
    # thresholds 0.018 and 0.119: 1 + 0 of 6 weights are zero; task 1 starts elsewhere
    method.s.data = torch.tensor([[-4.0, -2.0], [-3.0, -3.0]])
    assert method.sparsity()[0].item() == pytest.approx(1 / 6)
    method.steer(0.5)
    # Three zeros: only a layer-0 threshold in [0.03, 0.04) with layer 1's under 0.2 gives them, in both forms.
    assert method.layer_sparsity().tolist() == [[0.75, 0.0], [0.75, 0.0]]
    (s0, s1), (t0, t1) = method.s.tolist()
    assert 0.03 <= torch.sigmoid(torch.tensor(s0)) < 0.04
    if controller == "decay":
        assert s1 / s0 == pytest.approx(0.5) and t1 / t0 == pytest.approx(1.0)  # one factor for every layer
    else:
        assert s1 - s0 == pytest.approx(2.0) and t1 - t0 == pytest.approx(0.0)  # a shift keeps differences


def make_record(dtype="float32"):
    base = mlp_base(widths=(40, 30), classes=3)
    method = MagnitudePruning(base.weights(), target_sparsity=0.95, policy="erdos_renyi")
    method.finalize()
    bn = {"2.running_mean": torch.arange(3.0)}
    weights = [w[0] for w in method.effective_weights()]
    record = task_weights("t0", "magnitude", base, weights, bn, dtype=dtype, metrics={"acc": 0.5})
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
    expected = method.layer_sparsity()[0].tolist()
    assert back.layer_sparsity == pytest.approx(expected, abs=1e-12 if dtype == "float32" else 1e-3)
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
    broken = dict(arrays)
    key = next(k for k in broken if k.endswith("values"))
    broken[key] = broken[key] * 2
    with pytest.raises(ValueError, match="corrupt"):
        TaskWeights.from_arrays(broken, meta)


def test_the_search_and_its_record_score_alike():
    tasks = [teacher_data(300, 20, 4, seed=s) for s in (0, 1)]
    base = mlp_base()
    run = search(base, WeightSpec("str", {"target_sparsity": 0.7}), tasks, SearchConfig(lr=0.1, epochs=3))
    records = run.run()
    stacked = stacked_accuracy(base, None, run.bn_state, run.data, 4, weights=run.method.effective_weights())
    for (x, y), record, accuracy in zip(tasks, records, stacked, strict=True):
        assert evaluate_mask(base, record, x, y, num_classes=4).real_classes == pytest.approx(
            accuracy.real_classes
        )
    with pytest.raises(ValueError, match="start_from is for weight methods"):
        StackedSearch(base, run.data, MaskSpec(), SearchConfig(), seeds=[0, 1], task_ids=["a", "b"],
                      start_from=records[0])  # fmt: skip


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
