"""The examples of a stack of K tasks on one device, gathered by index: what a stacked search and a
stacked evaluation read from (streams provide them; see `Stream.stacked`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class TaskBatches(Protocol):
    """The examples of K tasks on one device (the same number per task), gathered by index."""

    num_tasks: int
    size: int  # examples per task

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (K, B, *input shape), y (K, B)) for example indices (K, B), one row per task."""
        ...


@dataclass
class StackedTensors:
    """K tasks' examples as two stacked tensors, x (K, N, *input shape) and y (K, N)."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(
        cls, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], device: torch.device | str
    ) -> StackedTensors:
        sizes = {len(x) for x in xs}
        if len(sizes) != 1:
            raise ValueError(f"tasks stacked together need the same number of examples, got {sorted(sizes)}")
        return cls(torch.stack(list(xs)).to(device), torch.stack(list(ys)).to(device))

    @property
    def num_tasks(self) -> int:
        return self.x.shape[0]

    @property
    def size(self) -> int:
        return self.x.shape[1]

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(self.num_tasks, device=index.device).unsqueeze(1)
        return self.x[rows, index], self.y[rows, index]


def index_chunks(batches: TaskBatches, chunk: int, device: torch.device | str) -> Iterator[torch.Tensor]:
    """Every example of every task in order, as (K, b) index tensors of at most `chunk` columns."""
    for start in range(0, batches.size, chunk):
        stop = min(start + chunk, batches.size)
        yield torch.arange(start, stop, device=device).expand(batches.num_tasks, stop - start)
