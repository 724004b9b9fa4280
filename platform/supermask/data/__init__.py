"""Data layer: dataset loading and task streams (pure PyTorch and NumPy; no Ray)."""

from supermask.data import (  # noqa: F401  (each module registers its streams)
    formal_languages,
    image_streams,
    synthetic,
    text_streams,
    translation_streams,
)
from supermask.data.cifar import load_cifar100
from supermask.data.datasets import DataConfig, DatasetUnavailable, ImageDataset, default_data_root
from supermask.data.mnist import load_mnist
from supermask.data.streams import (
    STREAMS,
    Stream,
    StreamSpec,
    TaskData,
    build_stream,
    stream_of,
    stream_options,
)

__all__ = [
    "STREAMS",
    "DataConfig",
    "DatasetUnavailable",
    "ImageDataset",
    "Stream",
    "StreamSpec",
    "TaskData",
    "build_stream",
    "default_data_root",
    "load_cifar100",
    "load_mnist",
    "stream_of",
    "stream_options",
]
