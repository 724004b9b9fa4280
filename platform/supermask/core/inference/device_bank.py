"""A mask bank on a torch device: task inference over thousands of masks without leaving the GPU.

The masks are kept packed (one bit per weight) on the device, or unpacked as float when they fit
in the memory allowed (`resident_bytes`), with one int32 running sum for the mean mask. Scoring Q
queries against k masks is one matrix product per chunk of masks, the queries never copied to the
host: (chunk, weights) @ (weights, Q). On a GPU with TF32 allowed
(`torch.set_float32_matmul_precision("high")`) the product runs on tensor cores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from supermask.core.masks.bits import unpack_bits
from supermask.core.records.packing import TaskMask, split_layers


class DeviceMasks:
    """Masks of one base on a device, scored with torch; answers what task inference asks of a bank."""

    accepts_tensors = True  # query_scores takes (Q, weights) tensors on the bank's device

    def __init__(
        self,
        masks: Sequence[TaskMask],
        device: torch.device | str = "cpu",
        *,
        resident_bytes: int = 0,
        chunk: int = 256,
    ) -> None:
        if not masks:
            raise ValueError("a device bank needs at least one mask")
        first = masks[0]
        self.fingerprint = first.base_fingerprint
        self.shapes = [tuple(int(d) for d in s) for s in first.layer_shapes]
        self.weights = int(sum(np.prod(s) for s in self.shapes))
        for m in masks:
            if m.base_fingerprint != self.fingerprint or [tuple(s) for s in m.layer_shapes] != self.shapes:
                raise ValueError(
                    f"mask {m.task_id!r} was learned on base {m.base_fingerprint}, not {self.fingerprint}; "
                    "keep one bank per base"
                )
        self.device, self.chunk = torch.device(device), chunk
        self.ids = [m.task_id for m in masks]
        self._row = {tid: i for i, tid in enumerate(self.ids)}
        self._records = {m.task_id: m for m in masks}
        self.packed = torch.from_numpy(np.stack([m.packed for m in masks])).to(self.device)
        self.sum = torch.zeros(self.weights, dtype=torch.int32, device=self.device)
        for i in range(0, len(self.ids), chunk):
            self.sum += unpack_bits(self.packed[i : i + chunk], self.weights).sum(0, dtype=torch.int32)
        self.dense: torch.Tensor | None = None
        if len(self.ids) * self.weights * 4 <= resident_bytes:
            self.dense = unpack_bits(self.packed, self.weights).float()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._row

    def list(self) -> list[str]:
        return sorted(self.ids)

    def get(self, task_id: str, *, fingerprint: str | None = None) -> TaskMask:
        self._check(fingerprint)
        try:
            return self._records[task_id]
        except KeyError:
            raise KeyError(f"no mask for task {task_id!r} in this bank of {len(self)} masks") from None

    def _check(self, fingerprint: str | None) -> None:
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise ValueError(f"this bank holds masks of base {self.fingerprint}, not {fingerprint}")

    def _rows(self, ids: Iterable[str] | None) -> tuple[list[str], torch.Tensor | None]:
        if ids is None:
            return list(self.ids), None
        ids = list(ids)
        missing = [t for t in ids if t not in self._row]
        if missing:
            raise KeyError(f"no mask for task(s) {missing[:10]} in this bank of {len(self)} masks")
        return ids, torch.tensor([self._row[t] for t in ids], device=self.device)

    def mask_sum(
        self, fingerprint: str | None = None, *, ids: Iterable[str] | None = None
    ) -> tuple[list[torch.Tensor], int]:
        """(per-layer int32 count of masks keeping each weight, as device tensors; number of masks)."""
        self._check(fingerprint)
        chosen, rows = self._rows(ids)
        if rows is None:
            total = self.sum
        else:
            total = torch.zeros_like(self.sum)
            for i in range(0, len(rows), self.chunk):
                total += self._bits(rows[i : i + self.chunk]).sum(0, dtype=torch.int32)
        pieces = torch.split(total, [int(np.prod(s)) for s in self.shapes])
        return [p.view(s) for p, s in zip(pieces, self.shapes, strict=True)], len(chosen)

    def _bits(self, rows: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            return self.dense[rows]
        return unpack_bits(self.packed[rows], self.weights).float()

    def query_scores(
        self,
        queries: torch.Tensor | np.ndarray,
        chunk: int | None = None,
        *,
        fingerprint: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores <query q, mask i>) for queries (Q, weights [padded to whole bytes])."""
        self._check(fingerprint)
        queries = torch.as_tensor(queries, device=self.device)[:, : self.weights].float()
        chosen, rows = self._rows(ids)
        index = torch.arange(len(self.ids), device=self.device) if rows is None else rows
        step = chunk or self.chunk
        out = torch.empty(len(chosen), queries.shape[0], dtype=torch.float64, device=self.device)
        for i in range(0, len(index), step):
            out[i : i + step] = (self._bits(index[i : i + step]) @ queries.T).double()
        return chosen, out.cpu().numpy()

    def layer_sums(self) -> list[np.ndarray]:
        """The running sum as per-layer NumPy arrays."""
        return split_layers(self.sum.cpu().numpy(), self.shapes)
