"""CIFAR-100 from torchvision's files; a clear error, never a silent substitute, when they are absent."""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

from supermask.data.datasets import DATA_ROOT_ENV, DatasetUnavailable, ImageDataset, resolve_root

logger = logging.getLogger(__name__)

CIFAR100_FOLDER = "cifar-100-python"


def load_cifar100(root: str | os.PathLike[str] | None, download: bool = False) -> ImageDataset:
    """CIFAR-100 as uint8 (N, 32, 32, 3) images with fine labels; loaded once per process."""
    return _load_cifar100(resolve_root(root), bool(download))


@functools.lru_cache(maxsize=2)
def _load_cifar100(root: str, download: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR100

    start = time.perf_counter()
    try:
        train = CIFAR100(root, train=True, download=False)
        test = CIFAR100(root, train=False, download=False)
    except RuntimeError as missing:
        if not download:
            raise DatasetUnavailable(_missing_message(root, "data.download is false")) from missing
        try:
            train = CIFAR100(root, train=True, download=True)
            test = CIFAR100(root, train=False, download=True)
        except Exception as err:  # no network, a mirror down, a full disk
            raise DatasetUnavailable(_missing_message(root, f"the download failed ({err})")) from err
    dataset = ImageDataset(
        train_x=np.asarray(train.data, dtype=np.uint8),
        train_y=np.asarray(train.targets, dtype=np.int64),
        test_x=np.asarray(test.data, dtype=np.uint8),
        test_y=np.asarray(test.targets, dtype=np.int64),
        source=f"torchvision:{os.path.join(root, CIFAR100_FOLDER)}",
        num_classes=100,
    )
    logger.info("loaded CIFAR-100 from %s in %.1f s", dataset.source, time.perf_counter() - start)
    return dataset


def _missing_message(root: str, why: str) -> str:
    return (
        f"CIFAR-100 is not in {os.path.join(root, CIFAR100_FOLDER)} and {why}. To provide it: put torchvision's "
        f"{CIFAR100_FOLDER!r} folder under {root}, or set data.download=true on a machine with internet, "
        f"or point data.root or ${DATA_ROOT_ENV} at a folder that holds {CIFAR100_FOLDER!r}"
    )
