"""The translation store on Ray: `TranslationStore`, the client of a store's translation shard actors.

A translation run keeps each learned task (`TranslationRecord`: its two generators) in OUT/store, laid
out as a mask store is (store.json, shard-00i.h5: `store.translation_file.TranslationFile`), behind the
shard actors every store kind uses (`runtime.shard_store`): journaled and fsync'ed puts, checked
reads, restart after a crash, revival after a lost node, `verify`. A folder written by an earlier
supermask (one file per task) is refused with the command that migrates it, so a rerun never trains
its stored tasks again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from supermask.core.records.translation import TranslationRecord
from supermask.runtime.shard_actor import ShardFiles
from supermask.runtime.shard_store import ShardedStore, revives_shards
from supermask.store.partitioning import open_layout, shard_path
from supermask.store.translation_file import TranslationFile
from supermask.store.translation_legacy import legacy_error, legacy_translation_files
from supermask.store.validation import validate_record

BATCH = 2  # translation records per actor call: each is a pair of generators


def translation_files(compact_bytes: int | None = None) -> ShardFiles:
    """How a translation store's shard files are opened."""
    settings = {} if compact_bytes is None else {"compact_bytes": compact_bytes}
    return ShardFiles("translation", TranslationFile, shard_path, settings)


class TranslationStore(ShardedStore):
    """Client of a sharded translation store; picklable, so Ray Train workers can put records in it."""

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        num_shards: int | None = None,
        *,
        actor_options: dict | None = None,
        compact_bytes: int | None = None,
    ) -> TranslationStore:
        """Open (creating if absent) the translation store at `root`, starting or joining its shard actors."""
        root = Path(root).expanduser().resolve()
        old = legacy_translation_files(root)
        if old:
            raise legacy_error(root, old)
        root.mkdir(parents=True, exist_ok=True)
        return cls.start(root, open_layout(root, num_shards), translation_files(compact_bytes), actor_options)

    @revives_shards
    def put(self, record: TranslationRecord, *, overwrite: bool = False) -> bool:
        """Durably store a task's record on the shard that owns it; False if this exact record is stored."""
        validate_record(record)
        return self._one(record.task_id, "put_many", [record], overwrite)[0]

    def put_many(self, records: Sequence[TranslationRecord], *, overwrite: bool = False) -> list[bool]:
        """Store many records, each shard's share written concurrently; one bool per record, in order."""
        records = list(records)
        for r in records:
            validate_record(r)
        return super().put_many(records, overwrite=overwrite, batch=BATCH)

    @revives_shards
    def get(self, task_id: str, fingerprint: str | None = None) -> TranslationRecord:
        """The verified record of one task."""
        return self._one(task_id, "get_many", [task_id], fingerprint)[0]

    def get_many(self, ids: Iterable[str], fingerprint: str | None = None) -> list[TranslationRecord]:
        """The verified records of these tasks, in input order."""
        return super().get_many(ids, fingerprint, batch=BATCH)
