"""Bit packing on a torch device (the same layout as `np.packbits`), so K masks leave a GPU as bits."""

from __future__ import annotations

import torch


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """`np.packbits` on the tensor's device: (K, n) bool -> (K, ceil(n / 8)) uint8, big-endian bit order."""
    rows, n = bits.shape
    padded = torch.zeros(rows, (n + 7) // 8 * 8, dtype=torch.uint8, device=bits.device)
    padded[:, :n] = bits
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    return (padded.view(rows, -1, 8) * weights).sum(2, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of `pack_bits` on the tensor's device: (K, bytes) uint8 -> (K, n) bool."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :n].bool()
