"""`supermask store ls|info|verify` for the Hopfield reservoirs of a store (no Ray: each file opened directly)."""

from __future__ import annotations

from pathlib import Path

from supermask.store.errors import MaskFileError
from supermask.store.reservoir_file import ReservoirFile
from supermask.store.reservoir_layout import read_reservoir_layout, reservoir_path


def reservoir_root(path: Path) -> Path | None:
    """The store folder under `path` (a run folder or a store folder) that holds reservoirs, or None."""
    for candidate in (path / "store", path):
        if candidate.is_dir() and read_reservoir_layout(candidate) is not None:
            return candidate
    return None


def inspect_reservoirs(command: str, root: Path) -> list:
    """Each reservoir's part of `ls` (a list of rows), `info` or `verify` (a dict); files are never rewritten."""
    layout = read_reservoir_layout(root)
    out: list = []
    for i in range(layout.num_shards):
        path = reservoir_path(root, i)
        try:
            f = ReservoirFile(
                path, dims=layout.dims, rule=layout.rule, dtype=layout.dtype, fingerprint=layout.fingerprint
            )
        except MaskFileError as e:
            if command != "verify":
                raise
            out.append(
                {"file": str(path), "kind": "reservoir", "checked": 0, "ok": False, "problems": [str(e)]}
            )
            continue
        try:
            if command == "ls":
                out.append(
                    [
                        {"file": str(path), "kind": "reservoir", "task": t, **d}
                        for t, d in f.describe().items()
                    ]
                )
            elif command == "info":
                out.append({"shard": i, **f.stats()})
            else:
                out.append({**f.verify().as_dict(), "kind": "reservoir"})
        finally:
            f.close(compact=False)
    return out


def print_reservoir_row(command: str, row: dict) -> None:
    """One reservoir row of `ls`, `info` or `verify`, for a person."""
    if command == "ls":
        prov = (row["provenance"] or {}).get("hash") or "none"
        print(
            f"{row['task']:<28} pattern  digest {row['digest'][:12]}  provenance {prov[:12]}  "
            f"(reservoir {Path(row['file']).name})"
        )
    elif command == "verify":
        status = "OK" if row["ok"] else f"{len(row['problems'])} problem(s)"
        print(
            f"{row['file']}: {row['checked']} patterns; matrices rebuilt from snapshot and journal: {status}"
        )
        for p in row["problems"]:
            print(f"  - {p}")
    else:
        dims = " + ".join(f"{d}x{d}" for d in row["dims"])
        print(
            f"{row['file']}: Hopfield reservoir {dims} ({row['rule']}, {row['dtype']}): {row['count']} patterns "
            f"stored, estimated capacity {row['estimated_capacity']}; {row['state_bytes']:,} bytes of state "
            f"(file {row['file_bytes']:,}, journal {row['journal_bytes']:,}, index {row['index_bytes']:,}); "
            f"the same bytes as packed bits would hold {row['packed_bits_masks_same_bytes']:,} neuron masks, "
            f"and its {row['count']} patterns take {row['packed_bits_bytes_of_stored']:,} bytes as packed bits"
        )
