"""The append-only journal of a mask file: record framing, the TaskMask payload codec, replay.

File layout: a 16-byte file magic (`supermask-wal-v2`), then records. A record is a 32-byte
header (record magic, kind, payload length, blake2b-128 of kind + length + payload) followed
by the payload. A put payload is a little-endian u32 length, a JSON header with every
metadata field and digest of the mask (see `supermask.store.records.mask_meta`) plus
`packed_nbytes` and the name/dtype/shape of each BN statistic, then the raw C-order bytes
of `packed` and of each BN statistic, so arrays round-trip exactly. A delete payload is the
UTF-8 task id. Version 1 journals (`supermask-wal-v1`) are refused with the command that
migrates them.

Replay stops at the first record that is incomplete or fails its digest. If no valid record
follows it, it is the torn tail of an append that never returned (the writer was killed
mid-write): it is cut away with a warning. If a valid record follows, the damage is in the
middle of acknowledged data: replay raises `CorruptJournalError` and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from supermask.core.files import fsync_dir
from supermask.core.records.packing import TaskMask
from supermask.store.errors import CorruptJournalError, NotAMaskFileError, OldFormatError, StoreLockedError
from supermask.store.records import FORMAT_VERSION, mask_from_meta, mask_meta

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, one writer by convention
    fcntl = None

logger = logging.getLogger(__name__)

FILE_MAGIC = b"supermask-wal-v2"
OLD_FILE_MAGICS = {b"supermask-wal-v1": 1}
RECORD_MAGIC = b"SMR1"  # the record framing is unchanged since version 1
HEADER = struct.Struct("<4sB3xQ16s")
KIND_PUT = 1
KIND_DELETE = 2
_KINDS = (KIND_PUT, KIND_DELETE)
_LEN = struct.Struct("<I")


def _digest(kind: int, payload: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(struct.pack("<BQ", kind, len(payload)), digest_size=16)
    h.update(payload)
    return h.digest()


def frame(kind: int, payload: bytes) -> bytes:
    """One journal record: header + payload."""
    return HEADER.pack(RECORD_MAGIC, kind, len(payload), _digest(kind, payload)) + payload


def encode_payload(head: dict, arrays: list[np.ndarray]) -> bytes:
    """A put payload: a little-endian u32 length, the JSON header, then each array's raw C-order bytes."""
    raw = json.dumps(head, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(raw)), raw, *(np.ascontiguousarray(a).tobytes() for a in arrays)])


def decode_put_meta(payload: bytes | memoryview) -> dict:
    """The JSON header of a put payload (no arrays are built)."""
    (n,) = _LEN.unpack_from(payload, 0)
    return json.loads(bytes(payload[_LEN.size : _LEN.size + n]))


def decode_payload_arrays(payload: bytes | memoryview, specs: list) -> list[np.ndarray]:
    """The arrays that follow a put payload's header, one per (dtype, shape) of `specs`, in order."""
    pos = _LEN.size + _LEN.unpack_from(payload, 0)[0]
    out = []
    for dtype, shape in specs:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out.append(np.frombuffer(payload, dt, count, pos).reshape(tuple(shape)).copy())
        pos += count * dt.itemsize
    if pos != len(payload):
        raise ValueError(f"put payload has {len(payload) - pos} trailing bytes")
    return out


def encode_put(mask: TaskMask, meta: dict | None = None) -> bytes:
    """Serialise a (validated) TaskMask into a put payload; `meta` is its mask_meta, if made already."""
    bn = {name: np.asarray(arr, order="C") for name, arr in mask.bn_stats.items()}  # keeps 0-d arrays 0-d
    meta = {
        **(meta or mask_meta(mask)),
        "packed_nbytes": int(mask.packed.nbytes),
        "bn": [[name, arr.dtype.str, list(arr.shape)] for name, arr in bn.items()],
    }
    return encode_payload(meta, [mask.packed, *bn.values()])


def decode_arrays(payload: bytes | memoryview, meta: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The packed bits and BN statistics that follow a put payload's header."""
    specs = [("|u1", [meta["packed_nbytes"]]), *((dtype, shape) for _, dtype, shape in meta["bn"])]
    packed, *stats = decode_payload_arrays(payload, specs)
    return packed, {name: arr for (name, _, _), arr in zip(meta["bn"], stats, strict=True)}


def decode_put(payload: bytes | memoryview) -> tuple[TaskMask, dict]:
    """A put payload back into (TaskMask, its stored digests {checksum, bits_checksum, parts})."""
    meta = decode_put_meta(payload)
    packed, bn = decode_arrays(payload, meta)
    return mask_from_meta(meta, packed, bn), {k: meta.get(k) for k in ("checksum", "bits_checksum", "parts")}


@dataclass(frozen=True)
class Record:
    """Where one journal record lives: `offset` is the start of its header."""

    kind: int
    offset: int
    length: int  # payload bytes


def _valid_at(buf: mmap.mmap, pos: int, end: int) -> Record | None:
    """The record at `pos` if it is complete and its digest matches, else None."""
    if pos + HEADER.size > end:
        return None
    magic, kind, length, digest = HEADER.unpack_from(buf, pos)
    if magic != RECORD_MAGIC or kind not in _KINDS or pos + HEADER.size + length > end:
        return None
    start = pos + HEADER.size
    if _digest(kind, memoryview(buf)[start : start + length]) != digest:
        return None
    return Record(kind, pos, length)


def _find_valid(buf: mmap.mmap, pos: int, end: int) -> int | None:
    while True:
        pos = buf.find(RECORD_MAGIC, pos, end)
        if pos < 0:
            return None
        if _valid_at(buf, pos, end) is not None:
            return pos
        pos += 1


def scan_records(buf: mmap.mmap, start: int, end: int, path: Path) -> Iterator[tuple[Record, memoryview]]:
    """Every valid record of `buf[start:end]` in order, stopping at a torn tail.

    Raises CorruptJournalError (after the records before it) if a damaged record is followed by a
    valid one. The caller learns where valid data ends from the last record yielded.
    """
    pos = start
    while pos < end:
        rec = _valid_at(buf, pos, end)
        if rec is None:
            break
        body = pos + HEADER.size
        view = memoryview(buf)[body : body + rec.length]
        try:
            yield rec, view
        finally:
            view.release()
        pos = body + rec.length
    if pos < end:
        later = _find_valid(buf, pos + 1, end)
        if later is not None:
            raise CorruptJournalError(
                f"journal {path} has a damaged record at byte offset {pos}, followed by a valid "
                f"record at offset {later}: this is corruption, not a write cut short by a crash. "
                f"Nothing was changed. Records before offset {pos} are intact; copy {path} aside "
                f"and restore it from a backup, or truncate it to {pos} bytes to keep only those"
            )


def record_end(rec: Record) -> int:
    """The byte offset just past a record."""
    return rec.offset + HEADER.size + rec.length


class Journal:
    """An exclusive, append-only, fsync'ed record log at `path` (`magic`: the file kind, a mask file's by default)."""

    def __init__(self, path: Path, owner: Path, magic: bytes = FILE_MAGIC) -> None:
        self.path = path
        self._owner = owner
        self.magic = magic
        self._fd: int | None = None
        fresh = not path.exists() or self._unwritten()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreLockedError(
                        f"{owner} is already open for writing (lock on {path}); a shard file has one "
                        "writer: close the other MaskFile, or wait for the process that holds it to exit"
                    ) from None
            if fresh:  # new, or a creation cut short
                os.ftruncate(fd, 0)
                os.write(fd, self.magic)
                os.fsync(fd)
                fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def _unwritten(self) -> bool:
        """True for a journal whose creation was cut short; raise for a file that is no journal."""
        with open(self.path, "rb") as f:
            head = f.read(len(self.magic))
            if head == self.magic:
                return False
            if self.magic == FILE_MAGIC and head in OLD_FILE_MAGICS:
                raise OldFormatError.of(self._owner, OLD_FILE_MAGICS[head], FORMAT_VERSION)
            # A prefix of the magic, or zeros only (a crash can leave a new file's blocks unwritten).
            if self.magic.startswith(head) or not (head + f.read()).strip(b"\0"):
                return True
        raise NotAMaskFileError(
            f"{self.path} exists but is not a supermask journal of this kind (expected it to start with "
            f"{self.magic!r}); it was left untouched: move it aside or choose another path for {self._owner}"
        )

    @property
    def record_bytes(self) -> int:
        """Bytes of records (the journal without its file magic)."""
        return self.size - len(self.magic)

    def replay(self) -> Iterator[tuple[Record, memoryview]]:
        """Every valid record in order; cut a torn tail, raise on damage in the middle."""
        assert self._fd is not None
        end = self.size
        if end <= len(self.magic):
            return
        pos = len(self.magic)
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), end, access=mmap.ACCESS_READ) as buf:
            for rec, view in scan_records(buf, pos, end, self.path):
                yield rec, view
                pos = record_end(rec)
        if pos < end:
            logger.warning(
                "journal %s: cutting a torn tail record at byte offset %d (%d bytes); it was a write "
                "interrupted before it was acknowledged",
                self.path,
                pos,
                end - pos,
            )
            self.truncate(pos)

    def append(self, kind: int, payload: bytes, *, sync: bool = True) -> Record:
        """Append one record (fsync'ed unless sync=False); on failure the journal is cut back."""
        assert self._fd is not None
        data = memoryview(frame(kind, payload))
        start = self.size
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            if sync:
                os.fsync(self._fd)
        except BaseException:
            # A half-written record followed by later appends would read as mid-file corruption.
            os.ftruncate(self._fd, start)
            raise
        self.size = start + len(data)
        return Record(kind, start, len(payload))

    def sync(self) -> None:
        """fsync the journal."""
        assert self._fd is not None
        os.fsync(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        """The payload of the record at `offset`, re-checked against its digest."""
        assert self._fd is not None
        data = os.pread(self._fd, HEADER.size + length, offset)
        if len(data) == HEADER.size + length:
            magic, kind, n, digest = HEADER.unpack_from(data, 0)
            payload = data[HEADER.size :]
            if magic == RECORD_MAGIC and n == length and _digest(kind, payload) == digest:
                return payload
        raise CorruptJournalError(
            f"journal {self.path}: the record at byte offset {offset} no longer matches its digest"
        )

    def truncate(self, size: int | None = None) -> None:
        """Cut the journal to `size` bytes (default: no records) and fsync."""
        assert self._fd is not None
        size = len(self.magic) if size is None else size
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def close(self) -> None:
        """Release the lock and the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
