"""Learning without task ids (SupSup's NNs): masks are allocated when the data fits none of them.

Batches arrive with class labels but never a task id. Every `check_every` batches the current batch
is tested against the known masks with one superposed gradient: with k candidates (the masks learned
so far, padded up to `min_candidates` with the untrained masks the next slots would start from, as
SupSup pads with its untrained slots), p = softmax(-dH/dalpha) at uniform alpha. When
k * max(p) < 1 + epsilon no mask is clearly better than the rest, so a new mask is allocated;
otherwise the inferred mask goes on training (an untrained candidate winning also means "new").
Between checks every batch trains the current mask, with its own optimizer state and BN statistics,
at a constant learning rate (a stream without ids has no known length to schedule over).

Checks are every `check_every` batches, wherever task boundaries fall: batches of a new task that
arrive before the next check train the old mask, which can then claim the new task. SupSup's loader
checks at the start of each task's epoch, so align `check_every` with the batches per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from supermask.core.bases.networks import BaseNetwork
from supermask.core.bases.stacked import stacked_forward
from supermask.core.fields import check_fields, in_range
from supermask.core.inference.mask_bank import PackedMasks
from supermask.core.inference.one_shot import InferenceConfig, mean_masks, superposed_scores
from supermask.core.masks import MaskSpec, build_mask_method
from supermask.core.records.packing import TaskMask, pack_masks
from supermask.core.search.stacked_search import SearchConfig, build_optimizer, task_seed

PAD_PREFIX = "untrained-"


@dataclass(frozen=True)
class NNsConfig:
    """When to test the data against the known masks, and how sure a match must be: the `nns` spec section.

    The objective and the working chunk of the checks are the `inference` section's.
    """

    check_every: int = field(default=100, metadata=in_range(1))  # training batches between checks
    # a new mask when k * max softmax(-dH/dalpha) < 1 + epsilon (SupSup: 0.125)
    epsilon: float = field(default=0.125, metadata=in_range(0.0, lo_open=True))
    min_candidates: int = field(default=5, metadata=in_range(2))  # untrained masks pad k up to this
    max_masks: int | None = field(default=None, metadata=in_range(1))  # never allocate more than this

    def __post_init__(self) -> None:
        check_fields(self, "nns.")


@dataclass
class Check:
    """One test of the data against the known masks."""

    batch: int
    candidates: int
    confidence: float  # k * max softmax(-dH/dalpha): 1 means no preference, k a sure match
    chosen: str
    allocated: bool


@dataclass
class NNsResult:
    """The masks learned without task ids, and every check that decided which one to train."""

    masks: list[TaskMask]
    checks: list[Check] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0


class _Slot:
    """One mask being learned: its scores, optimizer and BN statistics."""

    def __init__(
        self, base: BaseNetwork, mask: MaskSpec, search: SearchConfig, seed: int, device: str
    ) -> None:
        self.method = build_mask_method(mask, base.layer_shapes, [seed]).to(device)  # a stack of one
        self.optimizer = build_optimizer(search, self.method.parameters())
        self.bn_state = {k: v.unsqueeze(0) for k, v in base.fresh_bn_state(device).items()}
        self.steps = 0


class NNsLearner:
    """Feed it batches (x, y) with no task id; it decides which mask each one trains."""

    def __init__(
        self,
        base: BaseNetwork,
        mask: MaskSpec,
        search: SearchConfig,
        config: NNsConfig,
        num_classes: int,
        *,
        inference: InferenceConfig | None = None,
        id_prefix: str = "mask",
        device: str = "cpu",
    ) -> None:
        self.base, self.mask_spec, self.search, self.config = base, mask, search, config
        self.num_classes = num_classes
        self.id_prefix, self.device = id_prefix, device
        self.slots: list[_Slot] = []
        self.current: int | None = None
        self.checks: list[Check] = []
        self.batches = 0
        self._candidates = PackedMasks()  # learned masks plus untrained padding, refreshed at checks
        self._inference = inference or InferenceConfig()

    def mask_id(self, i: int) -> str:
        return f"{self.id_prefix}-{i:04d}"

    def _seed(self, i: int) -> int:
        return task_seed(self.search.seed, i)

    def _packed(self, task_id: str, method) -> TaskMask:
        hard = [m[0].cpu().numpy() for m in method.hard_masks()]
        return TaskMask(
            task_id=task_id,
            packed=pack_masks(hard),
            layer_names=list(self.base.masked_names),
            layer_shapes=[tuple(s) for s in self.base.layer_shapes],
            layer_density=[float(m.mean()) for m in hard],
            base_fingerprint=self.base.fingerprint,
        )

    def _refresh_candidates(self) -> None:
        """Put the current mask's latest bits in the candidate bank and pad it with untrained masks."""
        if self.current is not None:
            self._candidates.put(
                self._packed(self.mask_id(self.current), self.slots[self.current].method), overwrite=True
            )
        for i in range(len(self.slots)):
            self._candidates.delete(f"{PAD_PREFIX}{i:04d}")
        for i in range(len(self.slots), self.config.min_candidates):
            pad = f"{PAD_PREFIX}{i:04d}"
            if pad not in self._candidates:
                init = build_mask_method(self.mask_spec, self.base.layer_shapes, [self._seed(i)])
                self._candidates.put(self._packed(pad, init))

    def _allocate(self) -> int:
        self.slots.append(
            _Slot(self.base, self.mask_spec, self.search, self._seed(len(self.slots)), self.device)
        )
        return len(self.slots) - 1

    def _check(self, x: torch.Tensor) -> None:
        full = self.config.max_masks is not None and len(self.slots) >= self.config.max_masks
        if not self.slots:
            self.current = self._allocate()
            self.checks.append(Check(self.batches, 0, 0.0, self.mask_id(self.current), True))
            return
        self._refresh_candidates()
        mean, k = mean_masks(self._candidates, self.base.fingerprint, device=self.device)
        ids, scores = superposed_scores(
            self.base,
            [x],
            self._candidates,
            self._inference,
            self.num_classes,
            mean,
            fingerprint=self.base.fingerprint,
        )
        p = torch.softmax(torch.as_tensor(scores[:, 0]), 0)
        best = int(p.argmax())
        confidence = k * float(p[best])
        unsure = confidence < 1.0 + self.config.epsilon or ids[best].startswith(PAD_PREFIX)
        if unsure and not full:
            self.current = self._allocate()
        elif ids[best].startswith(PAD_PREFIX):
            self.current = self._closest_learned(ids, scores[:, 0])
        else:
            self.current = int(ids[best].rsplit("-", 1)[1])
        allocated = unsure and not full
        self.checks.append(Check(self.batches, k, confidence, self.mask_id(self.current), allocated))

    @staticmethod
    def _closest_learned(ids: list[str], scores: np.ndarray) -> int:
        learned = [(s, t) for s, t in zip(scores, ids, strict=True) if not t.startswith(PAD_PREFIX)]
        return int(max(learned)[1].rsplit("-", 1)[1])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Check (every `check_every` batches) which mask the batch belongs to, then train that mask on it."""
        x, y = x.to(self.device), y.to(self.device)
        if self.batches % self.config.check_every == 0:
            self._check(x)
        slot = self.slots[self.current]
        self.base.train()
        logits = stacked_forward(self.base, x.unsqueeze(0), slot.method(), slot.bn_state)[0]
        loss = F.cross_entropy(logits, y)
        slot.optimizer.zero_grad()
        loss.backward()
        slot.optimizer.step()
        slot.method.after_step()
        slot.steps += 1
        self.batches += 1
        return float(loss.detach())

    def masks(self) -> list[TaskMask]:
        """Every allocated mask, packed, with its BN statistics and step count."""
        out = []
        for i, slot in enumerate(self.slots):
            mask = self._packed(self.mask_id(i), slot.method)
            mask.bn_stats = {
                k: v[0].detach().cpu().numpy().astype(np.float32) for k, v in slot.bn_state.items()
            }
            mask.metrics = {"steps": slot.steps}
            mask.created = time.time()
            out.append(mask)
        return out


def learn_without_ids(
    base: BaseNetwork,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    mask: MaskSpec,
    search: SearchConfig,
    config: NNsConfig,
    num_classes: int,
    *,
    inference: InferenceConfig | None = None,
    id_prefix: str = "mask",
    device: str = "cpu",
) -> NNsResult:
    """Learn masks from a stream of (x, y) batches that carries no task ids."""
    started = time.perf_counter()
    learner = NNsLearner(
        base, mask, search, config, num_classes, inference=inference, id_prefix=id_prefix, device=device
    )
    for x, y in batches:
        learner.step(x, y)
    return NNsResult(learner.masks(), learner.checks, learner.batches, time.perf_counter() - started)


def allocation_summary(checks: list[Check]) -> dict:
    """How many checks allocated, matched, and the range of confidences seen."""
    conf = [c.confidence for c in checks if c.candidates]
    return {
        "checks": len(checks),
        "allocations": sum(c.allocated for c in checks),
        "confidence_min": min(conf) if conf else math.nan,
        "confidence_max": max(conf) if conf else math.nan,
    }
