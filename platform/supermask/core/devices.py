"""Choosing the torch device a process computes on: the one place that decides, and refuses clearly."""

from __future__ import annotations

import socket

import torch


class DeviceUnavailable(RuntimeError):
    """A GPU was asked for on a machine that has none; the message names the machine and the fix."""


def pick_device(use_gpu: bool, index: int | None = None) -> str:
    """'cpu', or the CUDA device `index` (default the current one) when `use_gpu`; never a silent fallback."""
    if not use_gpu:
        return "cpu"
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"run.use_gpu is true but host {socket.gethostname()} has no usable CUDA device (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}): set run.use_gpu=false, or run "
            "on nodes with GPUs and a CUDA build of torch"
        )
    return f"cuda:{torch.cuda.current_device() if index is None else index}"
