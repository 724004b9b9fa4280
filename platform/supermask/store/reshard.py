"""Resharding a closed store: moving whole partitions' masks between its shard files, crash-safe.

This works on the shard files directly with MaskFile (no Ray): no shard actor may be running,
and the files' write locks make sure of it. Each phase is recorded in store.json before it
starts (see `supermask.store.partitioning.StoreState`), so running a reshard that was cut short
again finishes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from supermask.store.errors import MaskFileError, StoreLockedError
from supermask.store.maskfile import MaskFile
from supermask.store.partitioning import (
    StoreLayout,
    StoreLayoutError,
    StoreState,
    layout_file,
    moved_partitions,
    read_state,
    shard_path,
    write_state,
)

logger = logging.getLogger(__name__)


def reshard_store(root: str | os.PathLike[str], num_shards: int) -> dict:
    """Move whole partitions' masks between the shard files at `root` so it has `num_shards` shards.

    Phases, each recorded in store.json first: "copy" puts every mask whose shard changes into its new
    shard file (put is idempotent, so a rerun redoes it harmlessly); the new layout is then written
    with phase "delete", which removes the old copies and the files of dropped shards. A crash at any
    point loses nothing, and running this again finishes the job. No process may hold the shard files
    open (a MaskStore's shard actors do): their write locks make this fail first, changing nothing.
    """
    root = Path(root)
    state = read_state(root)
    if state is None:
        raise StoreLayoutError(f"no mask store at {root} (no {layout_file(root)}); nothing to reshard")
    if state.pending_phase is None:
        old, new = state.layout, state.layout.reshard(num_shards)
    else:
        StoreLayout.initial(num_shards, state.layout.num_partitions)  # refuse a bad number up front
        pending = state.pending_layout
        old, new = (state.layout, pending) if state.pending_phase == "copy" else (pending, state.layout)
        logger.warning("finishing the reshard of %s to %d shards that was cut short", root, new.num_shards)
    moved = len(moved_partitions(old, new))
    summary = {"root": str(root), "from": old.num_shards, "to": new.num_shards, "moved_partitions": moved}
    summary["moved_masks"] = 0 if moved == 0 else _move_masks(root, old, new, state.pending_phase)
    write_state(root, StoreState(new))
    logger.info("resharded %s: %s", root, summary)
    if new.num_shards != num_shards:  # a cut-short reshard to another size was finished first
        return reshard_store(root, num_shards)
    return summary


def _move_masks(root: Path, old: StoreLayout, new: StoreLayout, phase: str | None) -> int:
    """Copy, switch the layout, then delete (the phases of reshard_store); returns masks copied."""
    files: dict[int, MaskFile] = {}
    try:
        for s in range(max(old.num_shards, new.num_shards)):
            if s < new.num_shards or shard_path(root, s).exists():
                files[s] = MaskFile(shard_path(root, s))
    except MaskFileError as e:
        for f in files.values():
            f.close(compact=False)
        if isinstance(e, StoreLockedError):
            raise StoreLockedError(
                f"{e}. Close every MaskStore on {root} before resharding; nothing was changed"
            ) from e
        raise
    copied = 0
    try:
        if phase != "delete":
            write_state(root, StoreState(old, "copy", new))
            for s, f in files.items():
                for tid in f.list():
                    if new.shard_of(tid) != s:
                        copied += files[new.shard_of(tid)].put(f.get_record(tid))
            write_state(root, StoreState(new, "delete", old))
        for s, f in files.items():
            for tid in f.list():
                owner = new.shard_of(tid)
                if owner != s and tid not in files[owner]:
                    raise MaskFileError(
                        f"mask {tid!r} is missing from {files[owner].path}; it was kept in {f.path}"
                    )
                if owner != s and s < new.num_shards:
                    f.delete(tid)
    finally:
        for s, f in files.items():
            f.close(compact=s < new.num_shards)
    for s in files:
        if s >= new.num_shards:  # every mask of a dropped shard is in its new shard (checked above)
            for p in (shard_path(root, s), Path(f"{shard_path(root, s)}.wal")):
                p.unlink(missing_ok=True)
    return copied
