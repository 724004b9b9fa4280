"""Base-network actors: each rebuilds the frozen base from its spec, checks the fingerprint, and
serves forward passes and evaluations with masks fetched from the store next to it."""

from __future__ import annotations

import os

import numpy as np
import ray
import torch
from ray.util import ActorPool

from supermask.core.search import bn_tensors, check_compatible, mask_tensors
from supermask.learn import evaluate_task, make_base, make_stream
from supermask.runtime.mask_store import MaskStore
from supermask.spec import Spec
from supermask.task_inference import InferenceOutcome, evaluate_gn_task


class BaseFingerprintError(RuntimeError):
    """A rebuilt base whose weights differ from the ones the run was started with."""


@ray.remote
class BaseActor:
    """Hosts one frozen base network (rebuilt bit-for-bit from the spec)."""

    def __init__(self, spec: Spec, fingerprint: str, store: MaskStore) -> None:
        torch.set_num_threads(spec.run.threads_per_worker)
        self.spec, self.store = spec, store
        self.device = "cuda" if spec.run.use_gpu and torch.cuda.is_available() else "cpu"
        self.stream = make_stream(spec)
        self.base = make_base(spec, self.stream, self.device)
        if self.base.fingerprint != fingerprint:
            raise BaseFingerprintError(
                f"base rebuilt on pid {os.getpid()} has fingerprint {self.base.fingerprint}, expected "
                f"{fingerprint}: this node's torch/NumPy draw different weights; pin the same versions on every node"
            )

    def fingerprint(self) -> str:
        return self.base.fingerprint

    def evaluate(self, t: int, split: str = "test") -> tuple[int, float]:
        """GG accuracy of task t with its stored mask (read from its shard's file)."""
        mask = self.store.get(self.stream.task_id(t), fingerprint=self.base.fingerprint)
        return t, evaluate_task(self.spec, t, mask, device=self.device, split=split)

    def infer(self, t: int) -> InferenceOutcome:
        """Scenario GNs/GNu on task t: each test batch's task inferred among every stored mask (scored in the shards)."""
        return evaluate_gn_task(self.spec, t, self.store, device=self.device)

    def forward(self, x: np.ndarray, task_ids: list[str]) -> dict[str, np.ndarray]:
        """Logits of the base on one batch under each listed task's stored mask (and BN statistics)."""
        self.base.eval()
        out = {}
        xb = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        for mask in self.store.get_many(task_ids, fingerprint=self.base.fingerprint):
            check_compatible(self.base, mask)
            with torch.inference_mode():
                logits = self.base(xb, mask_tensors(mask, self.device), bn_tensors(mask, self.device))
            out[mask.task_id] = logits.cpu().numpy()
        return out


def base_pool(spec: Spec, fingerprint: str, store: MaskStore, size: int) -> ActorPool:
    """A pool of `size` base actors (one CPU, or one GPU, each)."""
    options = {"num_cpus": spec.run.threads_per_worker}
    if spec.run.use_gpu:
        options["num_gpus"] = 1
    actors = [BaseActor.options(**options).remote(spec, fingerprint, store) for _ in range(max(1, size))]
    return ActorPool(actors)
