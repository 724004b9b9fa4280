"""Task inference without Ray: the superposed gradient, the mask banks, binary search, and 50 tasks."""

import tracemalloc

import numpy as np
import pytest
import torch
from torch.func import functional_call

from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.inference.mask_bank import PackedMasks
from supermask.core.inference.nns import NNsConfig, learn_without_ids
from supermask.core.inference.one_shot import (
    InferenceConfig,
    entropy,
    infer_groups,
    inference_groups,
    mean_masks,
    superfluous_logsumexp,
    superposed_scores,
)
from supermask.core.masks import MaskSpec
from supermask.core.records.packing import TaskMask, pack_masks, packed_dot, query_matrix
from supermask.core.search.stacked_search import SearchConfig, search_mask
from supermask.data import build_stream
from supermask.recipes.task_inference import evaluate_inference
from supermask.store.maskfile import MaskFile


def random_masks(base, k, seed=0, prefix="t"):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        hard = [rng.random(s) < 0.5 for s in base.layer_shapes]
        out.append(
            TaskMask(
                task_id=f"{prefix}{i:03d}",
                packed=pack_masks(hard),
                layer_names=list(base.masked_names),
                layer_shapes=[tuple(s) for s in base.layer_shapes],
                layer_density=[float(m.mean()) for m in hard],
                base_fingerprint=base.fingerprint,
                bn_stats={k: v.numpy() for k, v in base.fresh_bn_state().items()},
            )
        )
    return out


def alpha_gradient(base, masks, x, objective, num_classes, batchnorm=False):
    """-dObjective/dalpha at uniform alpha, by autograd through alpha itself (the definition)."""
    k = len(masks)
    alpha = torch.full((k,), 1.0 / k, requires_grad=True)
    dense = [[torch.from_numpy(m.astype(np.float32)) for m in mask.masks()] for mask in masks]
    weights = base.weights()
    effective = {
        name: w * sum(alpha[i] * dense[i][layer] for i in range(k))
        for layer, (name, w) in enumerate(zip(base.masked_names, weights))
    }
    effective.update(base.fresh_bn_state())
    base.train(batchnorm)
    logits = functional_call(base.net, effective, (x,))
    base.eval()
    value = {"H": entropy, "G": superfluous_logsumexp}[objective](logits, num_classes).mean()
    (grad,) = torch.autograd.grad(value, alpha)
    return (-grad).numpy()


@pytest.mark.parametrize("objective", ["H", "G"])
def test_superposed_scores_equal_the_gradient_over_alpha(objective):
    torch.manual_seed(0)
    base = build_base(BaseSpec(arch="mlp", input_shape=(20,), num_outputs=12, options={"widths": [16, 16]}))
    masks = random_masks(base, 7)
    bank = PackedMasks(masks)
    x = torch.randn(5, 20)
    mean, count = mean_masks(bank, base.fingerprint)
    assert count == 7
    config = InferenceConfig(objective=objective, chunk=3)
    ids, scores = superposed_scores(base, [x, x[:2]], bank, config, 4, mean)
    assert ids == [m.task_id for m in masks] and scores.shape == (7, 2)
    np.testing.assert_allclose(
        scores[:, 0], alpha_gradient(base, masks, x, objective, 4), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        scores[:, 1], alpha_gradient(base, masks, x[:2], objective, 4), rtol=1e-4, atol=1e-6
    )


def test_batchnorm_superposition_uses_batch_statistics_and_changes_no_stored_state():
    torch.manual_seed(1)
    base = build_base(
        BaseSpec(arch="mlp", input_shape=(10,), num_outputs=4, batchnorm=True, options={"widths": [8]})
    )
    masks = random_masks(base, 4)
    bank = PackedMasks(masks)
    buffers = {k: v.clone() for k, v in base.net.named_buffers()}
    stats = {m.task_id: {k: v.copy() for k, v in m.bn_stats.items()} for m in masks}
    x = torch.randn(6, 10) * 3 + 1
    mean, _ = mean_masks(bank, base.fingerprint)
    _, scores = superposed_scores(base, [x], bank, InferenceConfig(), 4, mean)
    np.testing.assert_allclose(
        scores[:, 0], alpha_gradient(base, masks, x, "H", 4, batchnorm=True), rtol=1e-4
    )
    for k, v in base.net.named_buffers():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, buffers[k]), k
    for m in masks:
        for k, v in m.bn_stats.items():
            np.testing.assert_array_equal(v, stats[m.task_id][k])
    with pytest.raises(ValueError, match="batch_images >= 2"):
        superposed_scores(base, [x[:1]], bank, InferenceConfig(mode="per_sample"), 4, mean)


def test_G_needs_superfluous_outputs():
    with pytest.raises(ValueError, match="num_outputs above the classes"):
        superfluous_logsumexp(torch.randn(3, 10), 10)


def test_packed_dot_equals_dense_products_for_many_queries():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (9, 37), dtype=np.uint8)
    bits = np.unpackbits(rows, axis=1).astype(np.float64)
    queries = rng.standard_normal((4, 37 * 8)).astype(np.float32)
    np.testing.assert_allclose(packed_dot(rows, queries), bits @ queries.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(packed_dot(rows, queries[0]), bits @ queries[0], rtol=1e-5, atol=1e-4)
    flat, views = query_matrix(2, [(3, 5), (7,)])
    views[1][1] = 1.0
    assert flat.shape == (2, 24) and flat[1, 15:22].sum() == 7 and flat[:, 22:].sum() == 0


def test_mask_file_and_packed_masks_answer_alike_over_subsets(tmp_path):
    base = build_base(BaseSpec(arch="mlp", input_shape=(12,), num_outputs=3, options={"widths": [9]}))
    masks = random_masks(base, 11, seed=3)
    bank = PackedMasks(masks)
    rng = np.random.default_rng(1)
    queries = [rng.standard_normal((3, *s)).astype(np.float32) for s in base.layer_shapes]
    subset = ["t007", "t002", "t010"]
    with MaskFile(tmp_path / "m.h5") as store:
        for m in masks:
            store.put(m)
        for ids in (None, subset):
            got_ids, got = store.query_scores(queries, 4, ids=ids)
            want_ids, want = bank.query_scores(queries, 2, ids=ids)
            assert got_ids == want_ids == (ids or [m.task_id for m in masks])
            np.testing.assert_allclose(got, want, rtol=1e-6)
            dense = np.stack(
                [np.concatenate([b.ravel() for b in masks[int(t[1:])].masks()]) for t in got_ids]
            )
            flat = np.concatenate([q.reshape(3, -1) for q in queries], axis=1)
            np.testing.assert_allclose(got, dense @ flat.T.astype(np.float64), rtol=1e-4, atol=1e-4)
            sums, n = store.mask_sum(ids=ids)
            want_sums, want_n = bank.mask_sum(ids=ids)
            assert n == want_n == len(got_ids)
            for a, b in zip(sums, want_sums):
                np.testing.assert_array_equal(a, b)
        with pytest.raises(KeyError):
            store.query_scores(queries, ids=["nope"])


def test_binary_halves_the_candidates_for_ceil_log2_k_rounds():
    base = build_base(BaseSpec(arch="mlp", input_shape=(16,), num_outputs=5, options={"widths": [12]}))
    bank = PackedMasks(random_masks(base, 10, seed=5))
    calls = []

    class Counting:
        def mask_sum(self, fingerprint=None, *, ids=None):
            calls.append(("sum", None if ids is None else len(ids)))
            return bank.mask_sum(fingerprint, ids=ids)

        def query_scores(self, queries, chunk=64, *, fingerprint=None, ids=None):
            got = bank.query_scores(queries, chunk, fingerprint=fingerprint, ids=ids)
            calls.append(("score", len(got[0])))
            return got

    x = torch.randn(3, 16)
    (picked,) = infer_groups(base, [x], Counting(), InferenceConfig(method="binary"), 5)
    assert [c for c in calls if c[0] == "score"] == [("score", n) for n in (10, 5, 3, 2)]
    assert [c for c in calls if c[0] == "sum"] == [("sum", None), ("sum", 5), ("sum", 3), ("sum", 2)]
    assert picked in bank


def test_scoring_memory_stays_near_the_packed_bits():
    base = build_base(BaseSpec(arch="mlp", input_shape=(200,), num_outputs=10, options={"widths": [400]}))
    weights = sum(int(w.numel()) for w in base.weights())  # 84,000
    k = 300
    tracemalloc.start()
    bank = PackedMasks(random_masks(base, k, seed=2))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    mean, _ = mean_masks(bank, base.fingerprint)
    infer_groups(base, [torch.randn(2, 200)], bank, InferenceConfig(), 10, mean=mean)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert bank.mask_bytes == k * weights // 8
    assert held < 2 * bank.mask_bytes + 200 * 2**10  # the packed bits, the running sum and the masks' records
    # Scoring reads chunks of 64 packed masks: never the k * weights floats (100 MB) of dense masks.
    assert peak - held < 4 * 2**20 + 64 * weights // 8 + 8 * 4 * weights
    assert peak - held < k * weights * 4 / 20


@pytest.fixture(scope="module")
def fifty_tasks(tmp_path_factory):
    """50 PermutedMNIST tasks on lenet300 (500 outputs), 20 search steps each, in one MaskFile."""
    stream = build_stream("permuted_mnist", num_tasks=50, seed=0)
    base = build_base(BaseSpec(arch="lenet300", input_shape=(784,), num_outputs=500))
    path = tmp_path_factory.mktemp("fifty") / "shard.h5"
    with MaskFile(path) as store:
        for t in range(50):
            task = stream.task(t)
            config = SearchConfig(optimizer="rmsprop", lr=1e-4, schedule="constant", iterations=20, seed=t)
            store.put(
                search_mask(
                    base,
                    task.train_x,
                    task.train_y,
                    MaskSpec("threshold"),
                    config,
                    task_id=task.task_id,
                    num_classes=10,
                )
            )
    return stream, base, path


def test_fifty_tasks_per_batch_one_shot_finds_the_task(fifty_tasks):
    stream, base, path = fifty_tasks
    config = InferenceConfig(batch_images=4)
    right = total = 0
    with MaskFile(path) as store:
        mean, count = mean_masks(store, base.fingerprint)
        assert count == 50
        for t in range(50):
            task = stream.task(t)
            groups, _ = inference_groups(task.test_x[:256], config, 128)  # two batches of 128 per task
            inferred = infer_groups(base, groups, store, config, 10, mean=mean)
            right += sum(i == task.task_id for i in inferred)
            total += len(inferred)
    assert total == 100
    assert right / total >= 0.95


def test_gnu_and_gns_count_task_and_class(fifty_tasks):
    stream, base, path = fifty_tasks
    task = stream.task(3)
    with MaskFile(path) as store:
        config = InferenceConfig(batch_images=4)
        gnu = evaluate_inference(
            base,
            store,
            task.test_x,
            task.test_y,
            task.task_id,
            config,
            num_classes=10,
            batch_size=100,
            unshared=True,
        )
        gns = evaluate_inference(
            base,
            store,
            task.test_x,
            task.test_y,
            task.task_id,
            config,
            num_classes=10,
            batch_size=100,
            unshared=False,
        )
    assert gnu.samples == 1000 and gnu.inferences == 10
    assert gnu.task_inference_accuracy == 1.0 and sum(gnu.inferred.values()) == 1000
    assert gnu.correct == gns.correct == gnu.gg_correct  # every batch found its own mask
    assert gnu.accuracy > 0.3  # 20 search steps: far above chance (0.1)


def test_nns_recognises_a_returning_task_and_respects_max_masks():
    stream = build_stream("permuted_mnist", num_tasks=2, seed=0)
    base = build_base(BaseSpec(arch="lenet300", input_shape=(784,), num_outputs=500))
    search = SearchConfig(optimizer="rmsprop", lr=1e-4, batch_size=128, seed=0)
    mask = MaskSpec("threshold")
    tasks = [stream.task(0), stream.task(1)]

    def batches(order, per_task=64):
        for t in order:
            x, y = tasks[t].train_x, tasks[t].train_y
            for b in range(per_task):
                i = (b * 128) % (len(x) - 128)
                yield x[i : i + 128], y[i : i + 128]

    result = learn_without_ids(base, batches([0, 1, 0]), mask, search, NNsConfig(check_every=32), 10)
    assert len(result.masks) == 2 and result.batches == 192
    chosen = [(c.batch, c.chosen, c.allocated) for c in result.checks]
    assert chosen[0] == (0, "mask-0000", True)
    assert (64, "mask-0001", True) in chosen  # task 1 arrives: nothing fits, a new mask
    assert [c for c in chosen if c[0] >= 128] == [(128, "mask-0000", False), (160, "mask-0000", False)]
    assert all(c.candidates == 5 for c in result.checks[1:])  # padded with untrained masks up to 5
    capped = learn_without_ids(
        base, batches([0, 1], 32), mask, search, NNsConfig(check_every=32, max_masks=1), 10
    )
    assert len(capped.masks) == 1 and [c.allocated for c in capped.checks] == [True, False]


def test_a_device_bank_answers_as_the_packed_bank_does():
    """Task inference on the device: sums, scores and picks equal the host bank's, queries never on the host."""
    from supermask.core.inference.device_bank import DeviceMasks

    base = build_base(BaseSpec(arch="mlp", input_shape=(12,), num_outputs=6, options={"widths": [10]}))
    masks = random_masks(base, 9, seed=4)
    host, device = PackedMasks(masks), DeviceMasks(masks, chunk=4)
    resident = DeviceMasks(masks, resident_bytes=2**30)
    for ids in (None, ["t003", "t007"]):
        a, na = host.mask_sum(ids=ids)
        b, nb = device.mask_sum(ids=ids)
        assert na == nb and all(np.array_equal(x, y.numpy()) for x, y in zip(a, b))
    queries = torch.randn(3, sum(int(np.prod(s)) for s in base.layer_shapes))
    padded = np.zeros((3, -(-queries.shape[1] // 8) * 8), np.float32)
    padded[:, : queries.shape[1]] = queries.numpy()
    ids, want = host.query_scores(padded)
    for bank in (device, resident):
        got_ids, got = bank.query_scores(queries)
        assert got_ids == ids
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    groups = [torch.randn(2, 12) for _ in range(5)]
    config = InferenceConfig()
    assert infer_groups(base, groups, device, config, 6) == infer_groups(base, groups, host, config, 6)
    with pytest.raises(ValueError, match="keep one bank per base"):
        DeviceMasks(
            masks
            + random_masks(
                build_base(
                    BaseSpec(arch="mlp", input_shape=(12,), num_outputs=6, seed=9, options={"widths": [10]})
                ),
                1,
            )
        )
