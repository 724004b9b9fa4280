"""Base-network actors: each builds the recipe's frozen base once, checks its fingerprint, and serves
evaluations, task inference and forward passes with masks read from the store next to it."""

from __future__ import annotations

import numpy as np
import ray
import torch
from ray.util import ActorPool

from supermask.core.evaluate import bn_tensors, check_compatible, mask_tensors
from supermask.core.inference.device_bank import DeviceMasks
from supermask.recipes.recipe import Recipe, Workbench
from supermask.recipes.results import InferenceOutcome
from supermask.recipes.task_inference import evaluate_gn_tasks
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import actor_options, process_device


@ray.remote
class BaseActor:
    """Hosts one frozen base network, rebuilt bit-for-bit from the recipe."""

    def __init__(self, recipe: Recipe, store: MaskStore) -> None:
        self.bench = Workbench(recipe, process_device(recipe.run))
        self.store = store
        self.device_bank: DeviceMasks | None = None

    def fingerprint(self) -> str:
        return self.bench.base.fingerprint

    def evaluate(self, t: int, split: str = "test") -> tuple[int, float, float]:
        """(t, GG accuracy over the real classes, over every output) of task t with its stored mask."""
        mask = self.store.get(self.bench.stream.task_id(t), fingerprint=self.bench.base.fingerprint)
        accuracy = self.bench.evaluate(t, mask, split)
        return t, accuracy.real_classes, accuracy.all_outputs

    def infer(self, ts: list[int]) -> list[InferenceOutcome]:
        """Scenario GNs/GNu on tasks ts: each test batch's task inferred among every stored mask.

        On a CPU the masks are scored in the shards, next to their files; on a GPU they are read once
        into this actor's device memory and scored there.
        """
        return evaluate_gn_tasks(self.bench, ts, self._bank())

    def _bank(self):
        if self.bench.device == "cpu":
            return self.store
        if self.device_bank is None:
            ids = self.store.list()
            masks = self.store.get_many(ids, fingerprint=self.bench.base.fingerprint)
            free = torch.cuda.mem_get_info()[0] if self.bench.device.startswith("cuda") else 0
            self.device_bank = DeviceMasks(masks, self.bench.device, resident_bytes=free // 4)
        return self.device_bank

    def forward(self, x: np.ndarray, task_ids: list[str]) -> dict[str, np.ndarray]:
        """Logits of the base on one batch under each listed task's stored mask (and BN statistics)."""
        base, device = self.bench.base, self.bench.device
        base.eval()
        out = {}
        xb = torch.as_tensor(x, dtype=torch.float32, device=device)
        for mask in self.store.get_many(task_ids, fingerprint=base.fingerprint):
            check_compatible(base, mask)
            with torch.inference_mode():
                logits = base(xb, mask_tensors(mask, device), bn_tensors(mask, device))
            out[mask.task_id] = logits.cpu().numpy()
        return out


def base_pool(recipe: Recipe, store: MaskStore, size: int) -> ActorPool:
    """A pool of `size` base actors (one CPU slot, or one GPU, each)."""
    options = actor_options(recipe.run)
    return ActorPool([BaseActor.options(**options).remote(recipe, store) for _ in range(max(1, size))])


def close_pool(pool: ActorPool) -> None:
    """End every actor of a pool (once its work is collected)."""
    for actor in pool._idle_actors:
        ray.kill(actor)
