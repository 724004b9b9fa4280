"""Exact top-k per row without a full sort: a histogram of the float bits, then a small top-k in one bin.

edge-popup keeps the top fraction of |score| in every layer at every step; for a million scores a
`torch.topk` with k = n/2 is the most expensive part of the step. Non-negative float32 values order
exactly as their bit patterns read as integers, so one histogram of the high 16 bits (one int32
pass and a `bincount`) finds the bin that holds each row's k-th largest value; only that bin's
members (a fraction of a percent of the row) are then ranked exactly. Everything above the k-th
value is kept and ties at it go to the lower positions, so exactly k values are kept per row: the
set `torch.topk` keeps when values are distinct.
"""

from __future__ import annotations

import torch

_HIGH_BINS = 1 << 15  # high 16 bits of a non-negative float32: the sign bit is 0


def _reference(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The same selection by a full stable sort (for tiny rows and for checking)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    ranks = torch.arange(values.shape[1], device=values.device).expand_as(order)
    keep = torch.zeros_like(values, dtype=torch.bool)
    keep.scatter_(1, order, ranks < k.unsqueeze(1))
    return keep


def topk_rows(values: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Boolean mask keeping the k largest of each row of non-negative float32 `values` (rows, n).

    `k` is one count for every row or a (rows,) tensor.
    """
    if values.dim() != 2 or values.dtype != torch.float32:
        raise ValueError(
            f"topk_rows takes a 2-D float32 tensor (rows, n), got {values.dtype} {tuple(values.shape)}"
        )
    rows, n = values.shape
    device = values.device
    k = torch.as_tensor(k, device=device, dtype=torch.int64).expand(rows).contiguous()
    if bool(((k < 0) | (k > n)).any()):
        raise ValueError(f"k must be in [0, {n}], got {k.tolist()}")
    if n < 4096:
        return _reference(values, k)
    bits = values.contiguous().view(torch.int32)
    high = bits >> 16  # a negative value has its sign bit set: bincount refuses it below
    keys = (
        high
        if rows == 1
        else high + torch.arange(rows, device=device, dtype=torch.int32).unsqueeze(1) * _HIGH_BINS
    )
    try:
        counts = torch.bincount(keys.flatten(), minlength=rows * _HIGH_BINS).view(rows, _HIGH_BINS)
    except RuntimeError as e:
        raise ValueError("topk_rows needs non-negative values (pass |scores|)") from e
    at_or_above = counts.flip(1).cumsum(1).flip(1)  # [r, b]: values whose high bits are >= b
    # The bin of the k-th largest: the highest b with at least k values at or above it.
    kth_bin = ((at_or_above >= k.clamp(min=1).unsqueeze(1)).sum(1) - 1).to(torch.int32)
    above = at_or_above.gather(1, (kth_bin.long() + 1).clamp(max=_HIGH_BINS - 1).unsqueeze(1)).squeeze(1)
    above = torch.where(kth_bin >= _HIGH_BINS - 1, torch.zeros_like(above), above)
    keep = high > kth_bin.unsqueeze(1)
    # Rank the members of that bin (row, then bits descending, then position) and keep what is still needed.
    row, col = (high == kth_bin.unsqueeze(1)).nonzero(as_tuple=True)
    member = bits[row, col]
    order = torch.sort(member, descending=True, stable=True).indices
    order = order[torch.sort(row[order], stable=True).indices]
    row, col = row[order], col[order]
    per_row = torch.bincount(row, minlength=rows)
    rank = torch.arange(len(row), device=device) - (torch.cumsum(per_row, 0) - per_row)[row]
    chosen = rank < (k - above)[row]
    keep[row[chosen], col[chosen]] = True
    if bool((k == 0).any()):
        keep &= (k > 0).unsqueeze(1)
    return keep
