"""ReservoirFile: one reservoir shard's Hopfield matrices on disk, safe against `kill -9` at any moment.

Files, for a shard at PATH (e.g. reservoir-000.npz):

- PATH: a snapshot (NumPy .npz, no pickles): the reservoir's arrays (`core.hopfield.reservoir.Reservoir`,
  one d x d matrix per hidden layer), and as JSON its settings, its state checksum and the index of
  the tasks it holds. Never modified in place: only replaced whole (`core.files.atomic_write`).
- PATH.wal: a journal (the mask file's record framing, `store.journal`, with its own file magic) of
  one record per stored task: its id, its neuron pattern (bit-packed), the pattern's digest, its
  provenance and metrics. `put` appends the record and fsyncs it before it updates the matrices and
  returns, so an acknowledged update survives a crash.

On open, the snapshot is read and checked, then the journal is replayed: a record whose task the
snapshot's index already holds is skipped (a compaction cut short after the new snapshot and before
the journal was emptied), every other is applied in order, so the matrices come back bit for bit
(the updates are deterministic). A torn tail (an append that never returned) is cut away; damage
before the tail raises `CorruptJournalError` and changes nothing. Compaction (on close, and when the
journal passes `compact_bytes`) writes the snapshot, then empties the journal: after it the patterns
themselves are gone and only the constant-size matrices remain.

The index keeps per task its pattern's digest (16 bytes, so a recovered attractor can be checked
against the pattern that was stored without keeping the pattern), provenance hash, metrics and
creation time: a few hundred bytes per task beside the d^2 numbers per layer. A pattern cannot be
taken back out of a Hopfield matrix, so there is no delete; `put` of a stored task returns False.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from supermask.core.files import atomic_write
from supermask.core.hopfield.reservoir import Reservoir, estimated_capacity
from supermask.store.errors import MaskFileError, MaskNotFoundError, NotSupportedError
from supermask.store.journal import KIND_PUT
from supermask.store.shard_file import ShardFile, VerifyReport

logger = logging.getLogger(__name__)

RESERVOIR_MAGIC = b"supermask-res-v1"
SNAPSHOT_VERSION = 1
_LEN = struct.Struct("<I")


class ReservoirSettingsError(MaskFileError, ValueError):
    """A reservoir file opened with other settings (sizes, rule, dtype, base) than it was made with."""


def pattern_digest(patterns: Sequence[np.ndarray]) -> str:
    """blake2b-128 of a neuron pattern (per-layer boolean vectors): its sizes and its packed bits."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([int(np.size(p)) for p in patterns]).encode())
    h.update(np.packbits(np.concatenate([np.asarray(p, dtype=bool).ravel() for p in patterns])).tobytes())
    return h.hexdigest()


def encode_record(task_id: str, patterns: Sequence[np.ndarray], meta: dict) -> bytes:
    """One journal payload: a length-prefixed JSON header, then the pattern's packed bits."""
    head = {"task_id": task_id, "digest": pattern_digest(patterns), **meta}
    raw = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
    flat = np.concatenate([np.asarray(p, dtype=bool).ravel() for p in patterns])
    return _LEN.pack(len(raw)) + raw + np.packbits(flat).tobytes()


def decode_record(payload: bytes | memoryview, dims: list[int]) -> tuple[dict, list[np.ndarray]]:
    """(header, per-layer patterns) of a journal payload; ValueError if its bits do not match its digest."""
    (n,) = _LEN.unpack_from(payload, 0)
    head = json.loads(bytes(payload[_LEN.size : _LEN.size + n]))
    bits = np.unpackbits(np.frombuffer(payload, np.uint8, offset=_LEN.size + n), count=sum(dims)).astype(bool)
    patterns = list(np.split(bits, np.cumsum(dims)[:-1]))
    if pattern_digest(patterns) != head["digest"]:
        raise ValueError(f"reservoir record of task {head['task_id']!r}: its bits do not match its digest")
    return head, patterns


class ReservoirFile(ShardFile):
    """One reservoir shard: a Hopfield matrix per hidden layer, an fsynced journal of updates, one writer."""

    kind = "reservoir"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dims: Sequence[int],
        rule: str,
        dtype: str,
        fingerprint: str,
        compact_bytes: int = 2**20,
    ) -> None:
        self.settings = {
            "dims": [int(d) for d in dims],
            "rule": rule,
            "dtype": dtype,
            "fingerprint": fingerprint,
        }
        self.compact_bytes = int(compact_bytes)
        super().__init__(path, RESERVOIR_MAGIC)
        try:
            self._remove_stale_temporaries()
            self.reservoir, self.index, self.provenance = self._read_snapshot()
            self.replayed = self._replay()
        except BaseException:
            self._release()
            raise

    # -- opening -------------------------------------------------------------

    def _read_snapshot(self) -> tuple[Reservoir, dict[str, dict], dict[str, dict]]:
        if not self.path.exists():
            s = self.settings
            return Reservoir(s["dims"], s["rule"], s["dtype"]), {}, {}
        meta, arrays = read_snapshot(self.path)
        stored = meta["settings"]
        differ = [
            f"{k}: file {stored[k]!r}, asked {self.settings[k]!r}"
            for k in self.settings
            if stored[k] != self.settings[k]
        ]
        if differ:
            raise ReservoirSettingsError(
                f"{self.path} is a reservoir made with other settings ({'; '.join(differ)}). Nothing was "
                "changed. Open it with the settings it was made with, or write this run to another folder "
                "(a pattern cannot be moved from one Hopfield matrix to another)"
            )
        try:
            reservoir = Reservoir.from_state({"meta": meta["reservoir"], "arrays": arrays})
        except ValueError as e:
            raise MaskFileError(f"{self.path}: {e}; restore the file from a backup") from None
        if reservoir.count != len(meta["index"]):
            raise MaskFileError(
                f"{self.path}: the matrices hold {reservoir.count} patterns but the index lists "
                f"{len(meta['index'])} tasks; restore the file from a backup"
            )
        return reservoir, meta["index"], meta["provenance"]

    def _replay(self) -> int:
        applied = 0
        for _rec, payload in self._journal.replay():
            head, patterns = decode_record(payload, self.settings["dims"])
            if head["task_id"] in self.index:
                continue  # folded into the snapshot by a compaction whose journal truncation was cut short
            self._apply(head, patterns)
            applied += 1
        return applied

    def _apply(self, head: dict, patterns: list[np.ndarray]) -> None:
        self.reservoir.store(patterns)
        prov = head.get("provenance") or {}
        key = prov.get("hash") or ""
        if key and key not in self.provenance:
            self.provenance[key] = prov.get("fields") or {}
        self.index[head["task_id"]] = {
            "digest": head["digest"],
            "provenance": key,
            "metrics": head.get("metrics") or {},
            "created": head.get("created", 0.0),
            "position": self.reservoir.count,
        }

    # -- writing -------------------------------------------------------------

    def put(
        self,
        task_id: str,
        patterns: Sequence[np.ndarray],
        *,
        fingerprint: str,
        provenance: dict | None = None,
        metrics: dict | None = None,
    ) -> bool:
        """Store one task's neuron pattern durably (journal fsynced first); False if the task is stored already."""
        journal = self._check_open()
        if fingerprint != self.settings["fingerprint"]:
            raise ReservoirSettingsError(
                f"task {task_id!r} was learned on base {fingerprint}, but the reservoir {self.path} holds "
                f"patterns of base {self.settings['fingerprint']}; a reservoir serves one base"
            )
        if task_id in self.index:
            return False
        patterns = [np.asarray(p, dtype=bool) for p in patterns]
        if [p.shape for p in patterns] != [(d,) for d in self.settings["dims"]]:
            raise ValueError(
                f"task {task_id!r}: pattern of sizes {[p.size for p in patterns]}, the reservoir holds "
                f"{self.settings['dims']}"
            )
        meta = {"provenance": provenance or {}, "metrics": metrics or {}, "created": time.time()}
        payload = encode_record(task_id, patterns, meta)
        journal.append(KIND_PUT, payload)
        self._apply({"task_id": task_id, "digest": pattern_digest(patterns), **meta}, patterns)
        if journal.record_bytes >= self.compact_bytes:
            self.compact()
        return True

    def put_many(self, records: Sequence[tuple], overwrite: bool = False) -> list[bool]:
        """Store (task id, per-layer pattern, provenance, metrics) records, each durable before the next;
        False for a task stored already."""
        if overwrite:
            raise NotSupportedError(
                f"a pattern cannot be taken out of the Hopfield reservoir {self.path}, so it cannot be "
                "overwritten; start the reservoirs anew (--relearn) to store other patterns"
            )
        fp = self.settings["fingerprint"]
        return [self.put(t, p, fingerprint=fp, provenance=prov, metrics=m) for t, p, prov, m in records]

    def get_many(self, ids: Iterable[str], *, fingerprint: str | None = None) -> list:
        """Refused: a reservoir keeps no pattern to give back (recovery finds attractors; describe() tells
        what it keeps of each task)."""
        raise NotSupportedError(
            f"the Hopfield reservoir {self.path} keeps no pattern to give back, only its matrices: recover "
            "attractors with ReservoirStore.recover_many, or read what it keeps of each task with describe()"
        )

    def delete(self, task_id: str) -> bool:
        """Refused: a pattern cannot be taken out of a Hopfield matrix."""
        raise NotSupportedError(
            f"a pattern cannot be taken out of the Hopfield reservoir {self.path}, so task {task_id!r} "
            "cannot be deleted; start the reservoirs anew (--relearn) to drop patterns"
        )

    def compact(self) -> None:
        """Fold the journal into a new snapshot (written whole), then empty the journal."""
        journal = self._check_open()
        if journal.record_bytes == 0:
            return
        state = self.reservoir.state_dict()
        meta = {
            "version": SNAPSHOT_VERSION,
            "settings": self.settings,
            "reservoir": state["meta"],
            "index": self.index,
            "provenance": self.provenance,
        }
        write_snapshot(self.path, meta, state["arrays"])
        journal.truncate()

    # -- reading -------------------------------------------------------------

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    def list(self) -> list[str]:
        return sorted(self.index)

    def describe(self, ids: Iterable[str] | None = None) -> dict[str, dict]:
        """task id -> digest, provenance ({"hash", "fields"}), metrics, created, position; every id or these."""
        ids = sorted(self.index) if ids is None else list(ids)
        missing = [t for t in ids if t not in self.index]
        if missing:
            raise MaskNotFoundError(f"no pattern of task(s) {missing[:5]} in the reservoir {self.path}")
        out = {}
        for t in ids:
            entry = dict(self.index[t])
            key = entry["provenance"]
            entry["provenance"] = {"hash": key, "fields": self.provenance.get(key, {})} if key else {}
            out[t] = entry
        return out

    def stats(self) -> dict:
        """Size, patterns stored, estimated capacity, bytes, and what the same bytes of packed bits hold."""
        r = self.reservoir
        journal = self._check_open()
        return {
            "file": str(self.path),
            "kind": "reservoir",
            "rule": r.rule,
            "dtype": r.dtype,
            "dims": list(r.dims),
            "count": len(self.index),
            "estimated_capacity": r.capacity(),
            "capacity_per_layer": [estimated_capacity(d, r.rule) for d in r.dims],
            "state_bytes": r.nbytes,
            "file_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "journal_bytes": journal.record_bytes,
            "index_bytes": len(json.dumps(self.index)),
            "packed_bits_masks_same_bytes": r.packed_bits_equivalent(),
            "packed_bits_bytes_of_stored": len(self.index) * ((sum(r.dims) + 7) // 8),
            "base_fingerprint": self.settings["fingerprint"],
            "provenance": dict(
                sorted(Counter(e["provenance"] or "none" for e in self.index.values()).items())
            ),
        }

    def verify(self) -> VerifyReport:
        """Re-read the snapshot and every journal record and rebuild the matrices; the problems found."""
        return VerifyReport(self.path, len(self.index), self._problems())

    def _problems(self) -> list[str]:
        problems = []
        try:
            meta, arrays = read_snapshot(self.path) if self.path.exists() else (None, None)
            again = (
                Reservoir.from_state({"meta": meta["reservoir"], "arrays": arrays})
                if meta
                else Reservoir(self.settings["dims"], self.settings["rule"], self.settings["dtype"])
            )
            seen = set(meta["index"]) if meta else set()
            for _rec, payload in self._check_open().replay():
                head, patterns = decode_record(payload, self.settings["dims"])
                if head["task_id"] not in seen:
                    again.store(patterns)
                    seen.add(head["task_id"])
        except (MaskFileError, ValueError, KeyError, OSError) as e:
            return [f"{self.path}: {e}"]
        if seen != set(self.index):
            problems.append(
                f"{self.path}: the files hold tasks {sorted(seen ^ set(self.index))[:5]} unlike the index"
            )
        for i in range(len(again.dims)):
            m = again.matrix(i)
            if not np.isfinite(m).all():
                problems.append(f"{self.path}: layer {i}'s matrix holds non-finite numbers")
            if not np.array_equal(m, self.reservoir.matrix(i)):
                problems.append(
                    f"{self.path}: layer {i}'s matrix rebuilt from the files differs from the one in use"
                )
        return problems


def write_snapshot(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Replace the snapshot whole: metadata as checksummed JSON beside the arrays (`arrays` names as they are)."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    checksum = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(text), meta_checksum=np.array(checksum), **arrays)

    atomic_write(path, write)


def read_snapshot(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, arrays) of a snapshot; MaskFileError naming the file if it is damaged or of another kind."""
    try:
        with np.load(path, allow_pickle=False) as f:
            text = str(f["meta"])
            checksum = str(f["meta_checksum"])
            arrays = {k: f[k] for k in f.files if k not in ("meta", "meta_checksum")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise MaskFileError(
            f"{path} is not a readable reservoir snapshot ({e}); restore it from a backup"
        ) from None
    if hashlib.blake2b(text.encode(), digest_size=16).hexdigest() != checksum:
        raise MaskFileError(f"{path}: the reservoir's metadata fails its checksum; restore it from a backup")
    meta = json.loads(text)
    if meta.get("version") != SNAPSHOT_VERSION:
        raise MaskFileError(
            f"{path}: reservoir snapshot version {meta.get('version')!r}, expected {SNAPSHOT_VERSION}"
        )
    return meta, arrays
