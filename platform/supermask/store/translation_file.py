"""TranslationFile: one shard of a translation store, many translation records in one mask file.

A translation task's record (`core.records.translation.TranslationRecord`, kind "translation") is kept
as a named-arrays record (`store.array_records`) in the mask file's format, so it has every guarantee
a mask has: a put is journaled and fsync'ed before it returns, compaction replaces the snapshot whole,
every read checks the record checksum (naming the field or array that changed), `verify` re-reads
them all, a restart rebuilds the index from the file, and `supermask store ls|info|verify|reshard`
work on it as on a mask store. Only translation records go in, and only they come out.
"""

from __future__ import annotations

from collections.abc import Iterable

from supermask.core.records.translation import TranslationRecord
from supermask.store.maskfile import MaskFile
from supermask.store.records import KIND_TRANSLATION


class TranslationFile(MaskFile):
    """A shard file of translation records (a MaskFile that takes and gives translation records only)."""

    kind = "translation"

    def put(self, record: TranslationRecord, *, overwrite: bool = False) -> bool:
        """Durably store a translation record; False if this exact record is stored already."""
        if not isinstance(record, TranslationRecord):
            raise ValueError(
                f"{self.path} is a translation store: it takes TranslationRecord, not {type(record).__name__}"
            )
        return super().put(record, overwrite=overwrite)

    def get(self, task_id: str, *, fingerprint: str | None = None) -> TranslationRecord:
        """The verified translation record of one task (WrongKindError for a record of another kind)."""
        return self.get_kind_many([task_id], KIND_TRANSLATION, fingerprint)[0]

    def get_many(self, ids: Iterable[str], *, fingerprint: str | None = None) -> list[TranslationRecord]:
        """The verified translation records of these tasks, in order."""
        return self.get_kind_many(ids, KIND_TRANSLATION, fingerprint)
