import os

import pytest
import ray
import torch

# One thread per test process keeps timings sane on the 2-core CI machine.
torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def teacher_data(n: int, dim: int, classes: int, seed: int, shift: float = 0.0):
    """Gaussian inputs labelled by a random linear teacher: learnable, seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    teacher = torch.randn(dim, classes, generator=g)
    y = (x @ teacher).argmax(1)
    return x + shift, y


@pytest.fixture
def make_teacher_data():
    return teacher_data


@pytest.fixture(scope="module")
def ray_cluster():
    """One embedded Ray per test module: 2 CPUs, a small object store, no dashboard."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        log_to_driver=False,
    )
    yield
    ray.shutdown()
