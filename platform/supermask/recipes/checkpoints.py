"""Search checkpoints: one way to write them (atomically) and one way to read them (tensors only, no pickle).

A checkpoint may sit on a shared file system that other people write to, so it is read with
`torch.load(weights_only=True)`: plain tensors, numbers, strings, lists and dicts, never code.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import torch

from supermask.core.files import atomic_write
from supermask.recipes.recipe import stale_tasks


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely or belongs to other settings; the message says what to do."""


def save_checkpoint(state: dict, path: str | os.PathLike[str]) -> None:
    """Write a checkpoint atomically: after a crash the file is the old checkpoint or the new one."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict | None:
    """The checkpoint at `path` (None if there is none), read as tensors and plain values only."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors and plain values, so it is not read (it could run "
            "code); it was not written by this program: delete it to learn those tasks from the start"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); it is "
            "damaged: delete it to learn those tasks from the start"
        ) from None


def check_checkpoints(recipe, folder: Path, relearn: bool) -> None:
    """Refuse (ProvenanceError) or, with relearn, delete the checkpoints in `folder` made with other
    settings than the recipe's (any recipe with a `provenance`)."""
    checkpoints = {
        path.stem: (load_checkpoint(path) or {}).get("provenance") or {}
        for path in sorted(folder.glob("*.pt"))
    }
    for name in stale_tasks(recipe, checkpoints, str(folder), relearn, what="checkpoint(s)"):
        (folder / f"{name}.pt").unlink(missing_ok=True)
