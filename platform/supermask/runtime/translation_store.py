"""The translation store on Ray: `TranslationStore`, the client of a store's translation shard actors.

A translation run keeps each learned task (`TranslationRecord`: its two generators) in OUT/store, laid
out as a mask store is (store.json, shard-00i.h5: `store.translation_file.TranslationFile`), behind the
shard actors every store kind uses (`runtime.shard_store`): journaled and fsync'ed puts, checked
reads, restart after a crash, revival after a lost node, `verify`. A folder written by an earlier
supermask (one file per task) is refused with the command that migrates it, so a rerun never trains
its stored tasks again.
"""

from __future__ import annotations

from pathlib import Path

from supermask.runtime.shard_actor import ShardFiles
from supermask.runtime.shard_store import ShardedStore
from supermask.store.partitioning import shard_path
from supermask.store.translation_file import TranslationFile
from supermask.store.translation_legacy import legacy_error, legacy_translation_files


def translation_files(compact_bytes: int | None = None) -> ShardFiles:
    """How a translation store's shard files are opened."""
    settings = {} if compact_bytes is None else {"compact_bytes": compact_bytes}
    return ShardFiles("translation", TranslationFile, shard_path, settings)


class TranslationStore(ShardedStore):
    """Client of a sharded translation store; picklable, so Ray Train workers can put records in it.

    `open(root, num_shards=None, *, actor_options=None, compact_bytes=None)`; `put`/`put_many` take and
    `get`/`get_many` return `TranslationRecord`s.
    """

    batch = 2  # translation records per actor call: each is a pair of generators

    @classmethod
    def shard_files(cls, compact_bytes: int | None = None) -> ShardFiles:
        return translation_files(compact_bytes)

    @classmethod
    def check_root(cls, root: Path) -> None:
        """Refuse a folder of an earlier version's translation records (migrate it first)."""
        old = legacy_translation_files(root)
        if old:
            raise legacy_error(root, old)
