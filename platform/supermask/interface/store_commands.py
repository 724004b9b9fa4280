"""`supermask store ...`: inspect, verify, export, reshard and migrate a mask store (no Ray needed)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

PATH_HELP = "a run folder (holding store/), a store folder, or one shard file"


def add_store_parser(subparsers) -> None:
    """Add the `store` command and its subcommands to the CLI's subparsers."""
    store = subparsers.add_parser("store", help="inspect, verify, export, reshard and migrate a mask store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    for name, help_text in (
        (
            "ls",
            "list the stored records: kind (mask or trained weights: method, dtype, sparsity, stored vs dense "
            "bytes), density, size, base and provenance of each",
        ),
        ("info", "summary of the store: counts per file, base, kind and provenance hash"),
        ("verify", "re-read every record and check its checksum over every field; exit 1 on any problem"),
    ):
        p = store_sub.add_parser(name, help=help_text)
        p.add_argument("path", type=Path, help=PATH_HELP)
        p.add_argument("--json", action="store_true", help="machine-readable output")
    export = store_sub.add_parser("export", help="write the store's masks into one standalone HDF5 file")
    export.add_argument("path", type=Path)
    export.add_argument("dest", type=Path)
    reshard = store_sub.add_parser(
        "reshard", help="move whole partitions between shard files so a store has N shards (store closed)"
    )
    reshard.add_argument("path", type=Path, help="the store folder (holding store.json)")
    reshard.add_argument("num_shards", type=int, help="the new number of shards")
    migrate = store_sub.add_parser(
        "migrate",
        help="rewrite mask files of an older format as the current one, and move an older version's "
        "translation records (one file per task) into a sharded store, verifying every record",
    )
    migrate.add_argument("path", type=Path, help=PATH_HELP)
    migrate.add_argument(
        "--drop-corrupt",
        action="store_true",
        help="migrate the masks that check out even if some do not (the old files are kept as *.v1)",
    )


def _store_files(path: Path, reservoirs: bool = False) -> list[Path]:
    if path.is_dir():
        from supermask.store.translation_legacy import legacy_error, legacy_translation_files

        folder = path / "store" if (path / "store").is_dir() else path
        old = legacy_translation_files(folder)
        if old:
            raise legacy_error(folder, old)
        files = sorted(folder.glob("*.h5"))
        if not files and not reservoirs:
            raise FileNotFoundError(
                f"no store files (*.h5, or reservoirs) under {path}; pass a run folder or a store file"
            )
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder or a store file")
    return [path]


def run_store_command(args: argparse.Namespace) -> int:
    """Run one `supermask store` subcommand; returns the exit code."""
    if args.store_command == "reshard":
        from supermask.store.reshard import reshard_store

        done = reshard_store(args.path.expanduser().resolve(), args.num_shards)
        print(
            f"resharded {done['root']} from {done['from']} to {done['to']} shards: "
            f"{done['moved_partitions']} partitions, {done['moved_masks']} masks moved"
        )
        return 0
    if args.store_command == "migrate":
        return _migrate(args.path, args.drop_corrupt)
    from supermask.store.maskfile import MaskFile

    if args.store_command == "export":
        files = _store_files(args.path)
        if len(files) != 1:
            raise ValueError(f"{args.path} holds {len(files)} store files; export one at a time")
        with MaskFile(files[0]) as store:
            store.export(args.dest)
            print(f"exported {len(store)} records to {args.dest}")
        return 0
    from supermask.interface.reservoir_commands import inspect_reservoirs, reservoir_root

    res_root = reservoir_root(args.path)
    report = []
    for path in _store_files(args.path, reservoirs=res_root is not None):
        store = MaskFile(path)
        try:
            report.append(_inspect(args.store_command, path, store))
        finally:
            store.close(compact=False)  # inspecting never rewrites a file
    if res_root is not None:
        report += inspect_reservoirs(args.store_command, res_root)
    if args.store_command == "ls":
        report = [row for rows in report for row in rows]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print(args.store_command, report)
    return 1 if args.store_command == "verify" and not all(r["ok"] for r in report) else 0


def _inspect(command: str, path: Path, store) -> dict | list[dict]:
    """One file's part of `ls` (a row per record, from the index alone), `info` or `verify`."""
    if command == "ls":
        return [{"file": str(path), "task": t, **d} for t, d in store.describe().items()]
    if command == "info":
        return {"file": str(path), **store.stats()}
    return store.verify().as_dict()


def _print(command: str, report: list[dict]) -> None:
    from supermask.interface.reservoir_commands import print_reservoir_row

    reservoirs = [r for r in report if r.get("kind") == "reservoir"]
    report = [r for r in report if r.get("kind") != "reservoir"]
    for row in reservoirs:
        print_reservoir_row(command, row)
    if command == "ls":
        for row in report:
            if row.get("problem"):
                print(f"{row['task']:<28} UNREADABLE: {row['problem']}")
                continue
            provenance = (row["provenance"] or {}).get("hash") or "none"
            if (
                row["kind"] == "weights"
            ):  # trained weights: method, dtype, sparsity, stored against dense bytes
                what = (
                    f"weights {row['method']} {row['dtype']} sparsity {row['sparsity']:.4f}  "
                    f"{row['stored_bytes']:>9,} B of {row['dense_bytes']:,} dense"
                )
            elif row["mask_bytes"] is None:  # a record of another kind (translation): what it cost to keep
                what = f"{row['kind']} {row.get('method', '')}  {row['stored_bytes']:>9,} B"
            else:
                what = f"{row['kind']:<6} density {row['density']:.4f}  {row['mask_bytes']:>9,} B"
            print(
                f"{row['task']:<28} {what}  base {row['base_fingerprint'][:12]}  provenance {provenance[:12]}"
            )
    elif command == "verify":
        for row in report:
            status = "OK" if row["ok"] else f"{len(row['problems'])} problem(s)"
            print(f"{row['file']}: {row['checked']} records checked, {status}")
            for p in row["problems"]:
                print(f"  - {p}")
    else:
        totals = {key: Counter() for key in ("kinds", "weights_methods", "provenance", "fingerprints")}
        for row in report:
            print("\n".join(f"{k}: {v}" for k, v in row.items()))
            for key, counter in totals.items():
                counter.update(row[key])
        if len(report) > 1:
            print(f"all {len(report)} files: {sum(r['count'] for r in report)} records")
            for key, counter in totals.items():
                print(f"  {key}: {dict(sorted(counter.items()))}")


def _migrate(path: Path, drop_corrupt: bool) -> int:
    from supermask.store.migrate import migrate_path
    from supermask.store.translation_legacy import TranslationMigration

    for result in migrate_path(path, drop_corrupt=drop_corrupt):
        if isinstance(result, TranslationMigration):
            print(
                f"{result.path}: migrated {len(result.records)} translation records from one file per task "
                "(an earlier supermask) into the sharded store (store.json, shard-*.h5): each checked against "
                "its checksum and read back before its old file was deleted"
            )
            continue
        if not result.migrated:
            print(f"{result.path}: already the current format")
            continue
        old = ", ".join(f"{k} v{v}" for k, v in result.old_versions.items() if v is not None)
        print(f"{result.path}: migrated from {old}: {result.masks} masks verified and rewritten")
        if result.dropped:
            print(f"  dropped {len(result.dropped)} damaged masks: {result.dropped[:10]}")
            print(f"  the old files are kept as {', '.join(map(str, result.backups))}")
    return 0
