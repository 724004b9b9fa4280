"""Scaffolding shared by the store tests: seeded masks, patterns and translation records, comparisons,
tampering, writers of older formats, and one case per store kind for the tests run against each."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from supermask.core.hopfield.reservoir import Reservoir
from supermask.core.records.packing import TaskMask, bits_checksum, pack_masks
from supermask.core.records.translation import TranslationRecord

SHAPES = [(48, 32), (32, 16), (16, 10)]


def make_mask(
    task_id: str,
    *,
    shapes=SHAPES,
    fingerprint: str = "base-a",
    variant: int = 0,
    provenance: dict | None = None,
) -> TaskMask:
    """A mask that is a pure function of its arguments: rebuilt bit-for-bit anywhere."""
    seed = int.from_bytes(hashlib.blake2b(f"{task_id}/{variant}".encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    masks = [rng.random(s) < 0.3 for s in shapes]
    return TaskMask(
        task_id=task_id,
        packed=pack_masks(masks),
        layer_names=[f"layer{i}.weight" for i in range(len(shapes))],
        layer_shapes=[tuple(s) for s in shapes],
        layer_density=[float(m.mean()) for m in masks],
        base_fingerprint=fingerprint,
        bn_stats={
            "bn0.running_mean": rng.standard_normal(shapes[0][1]).astype(np.float32),
            "bn0.running_var": rng.random(shapes[0][1]).astype(np.float32),
            "bn0.num_batches_tracked": np.array(seed % 1000, dtype=np.int64),
        },
        metrics={"acc": float(rng.random()), "epochs": 3, "curve": [0.1, 0.5], "note": task_id},
        created=1.7e9 + (seed % 10**6) / 7,
        provenance={"hash": "prov-1", "fields": {"stream.seed": 0}} if provenance is None else provenance,
    )


def assert_same(a: TaskMask, b: TaskMask) -> None:
    """Every field and array of two masks is equal, dtypes and shapes included."""
    assert a.task_id == b.task_id
    np.testing.assert_array_equal(a.packed, b.packed)
    assert a.packed.dtype == b.packed.dtype == np.uint8
    assert a.layer_names == b.layer_names
    assert [tuple(s) for s in a.layer_shapes] == [tuple(s) for s in b.layer_shapes]
    assert a.layer_density == b.layer_density
    assert a.base_fingerprint == b.base_fingerprint
    assert a.metrics == b.metrics and a.provenance == b.provenance
    assert a.created == b.created
    assert a.bn_stats.keys() == b.bn_stats.keys()
    for k in a.bn_stats:
        assert a.bn_stats[k].dtype == b.bn_stats[k].dtype and a.bn_stats[k].shape == b.bn_stats[k].shape
        np.testing.assert_array_equal(a.bn_stats[k], b.bn_stats[k])
    assert a.checksum == b.checksum


def wal(path: Path) -> Path:
    """The journal beside a shard file."""
    return path.with_name(path.name + ".wal")


# -- tampering with a stored record, as a bad disk or a careless hand would ---------------


def edit_meta(group: h5py.Group, **changes) -> None:
    """Change fields of a stored record's metadata (its `meta` JSON attribute), leaving its digests."""
    group.attrs["meta"] = json.dumps({**json.loads(group.attrs["meta"]), **changes})


def _meta(group: h5py.Group) -> dict:
    return json.loads(group.attrs["meta"])


TAMPERING = {
    # name: (edit of the record's HDF5 group, the part verify must name)
    "bn_mean": (lambda g: g["bn/bn0.running_mean"].__setitem__(0, 1e6), "bn/bn0.running_mean"),
    "layer_shapes": (
        lambda g: edit_meta(g, layer_shapes=[s[::-1] for s in _meta(g)["layer_shapes"]]),
        "layer_shapes",
    ),
    "layer_density": (
        lambda g: edit_meta(g, layer_density=[d / 2 for d in _meta(g)["layer_density"]]),
        "layer_density",
    ),
    "metrics": (lambda g: edit_meta(g, metrics={**_meta(g)["metrics"], "acc": 0.99}), "metrics"),
    "provenance": (lambda g: edit_meta(g, provenance={"hash": "forged", "fields": {}}), "provenance"),
    "bits": (lambda g: g["packed"].__setitem__(5, g["packed"][5] ^ 0x10), "packed"),
}


def tamper(path: Path, task_id: str, how: str) -> None:
    """Change one part of a stored record in the snapshot at `path` in place, leaving its checksums."""
    edit, _ = TAMPERING[how]
    with h5py.File(path, "r+") as f:
        edit(f["masks"][task_id])


# -- format 1, as the supermask before format 2 wrote it (its code is gone) ----------------

V1_MAGIC = b"supermask-wal-v1"
_V1_HEADER = struct.Struct("<4sB3xQ16s")


def _v1_meta(mask: TaskMask) -> dict:
    return {
        "task_id": mask.task_id,
        "layer_names": list(mask.layer_names),
        "layer_shapes": [list(s) for s in mask.layer_shapes],
        "layer_density": [float(d) for d in mask.layer_density],
        "base_fingerprint": mask.base_fingerprint,
        "metrics": mask.metrics,
        "created": float(mask.created),
        "checksum": bits_checksum(mask.packed),
    }


def write_v1_snapshot(path: Path, masks: list[TaskMask]) -> None:
    """A format-1 snapshot: one checksum per mask, over its packed bits; no kind, no provenance."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "supermask-maskfile"
        f.attrs["format_version"] = 1
        root = f.create_group("masks")
        for mask in masks:
            g = root.create_group(
                mask.task_id.replace(".", "%2E") if mask.task_id in (".", "..") else mask.task_id
            )
            g.create_dataset("packed", data=mask.packed)
            bn = g.create_group("bn")
            for name, arr in mask.bn_stats.items():
                bn.create_dataset(name, data=arr)
            meta = _v1_meta(mask)
            a = g.attrs
            a["task_id"] = mask.task_id
            a["layer_names"] = np.array(meta["layer_names"], dtype=h5py.string_dtype())
            a["layer_shapes"] = json.dumps(meta["layer_shapes"])
            a["layer_density"] = np.asarray(meta["layer_density"], dtype=np.float64)
            a["base_fingerprint"] = mask.base_fingerprint
            a["metrics"] = json.dumps(mask.metrics)
            a["created"] = float(mask.created)
            a["checksum"] = meta["checksum"]
            a["density"] = mask.density
            a["format_version"] = 1


def _v1_frame(kind: int, payload: bytes) -> bytes:
    digest = hashlib.blake2b(struct.pack("<BQ", kind, len(payload)), digest_size=16)
    digest.update(payload)
    return _V1_HEADER.pack(b"SMR1", kind, len(payload), digest.digest()) + payload


def write_v1_journal(path: Path, puts: list[TaskMask], deletes: list[str] = ()) -> None:
    """A format-1 journal: the v1 magic, then a put record per mask and a delete record per id."""
    records = []
    for mask in puts:
        bn = {k: np.asarray(v, order="C") for k, v in mask.bn_stats.items()}
        meta = {
            **_v1_meta(mask),
            "packed_nbytes": int(mask.packed.nbytes),
            "bn": [[k, v.dtype.str, list(v.shape)] for k, v in bn.items()],
        }
        head = json.dumps(meta, separators=(",", ":")).encode()
        payload = struct.pack("<I", len(head)) + head + mask.packed.tobytes()
        payload += b"".join(v.tobytes() for v in bn.values())
        records.append(_v1_frame(1, payload))
    records += [_v1_frame(2, t.encode()) for t in deletes]
    path.write_bytes(V1_MAGIC + b"".join(records))


def v1_view(mask: TaskMask) -> TaskMask:
    """What a format-1 store gives back for a mask after migration: the same, with no provenance."""
    return TaskMask(**{**mask.__dict__, "provenance": {}})


class AckedWriter:
    """A thread that puts ids `<prefix>00000`, `<prefix>00001`, ... one after another until stopped,
    retrying each put through the crashes a test causes (`retry_on`). `acked` lists the ids whose put
    returned: the acknowledged ones. Use as a context manager; leaving it stops the thread and raises
    what the thread raised."""

    def __init__(self, put, prefix: str, retry_on: tuple[type[BaseException], ...]) -> None:
        self.put, self.prefix, self.retry_on = put, prefix, retry_on
        self.acked: list[str] = []
        self.attempted = 0
        self.retries = 0
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def attempted_ids(self) -> set[str]:
        return {f"{self.prefix}{i:05d}" for i in range(self.attempted)}

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                tid = f"{self.prefix}{self.attempted:05d}"
                self.attempted += 1
                for _ in range(100):
                    try:
                        self.put(tid)
                        self.acked.append(tid)  # only a put that returned counts as acknowledged
                        break
                    except self.retry_on:
                        self.retries += 1
                        time.sleep(0.05)
                else:
                    raise AssertionError(f"put {tid} never succeeded")
        except BaseException as e:
            self._failure = e

    def __enter__(self) -> AckedWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        if self._failure is not None and exc[0] is None:
            raise self._failure


# -- the other store kinds' records ----------------------------------------------

DIMS = [48, 24]  # a reservoir's hidden layer sizes


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    )


def pattern(task_id: str, dims=DIMS) -> list[np.ndarray]:
    """A neuron pattern that is a pure function of the task id."""
    rng = _rng(task_id)
    return [rng.random(d) < 0.5 for d in dims]


def rebuilt(ids_in_order: list[str], rule: str = "storkey") -> Reservoir:
    """The reservoir that storing these tasks' patterns, in this order, makes."""
    r = Reservoir(DIMS, rule)
    for t in ids_in_order:
        r.store(pattern(t))
    return r


def in_order(f) -> list[str]:
    """The tasks of a ReservoirFile in the order they were stored."""
    return sorted(f.index, key=lambda t: f.index[t]["position"])


def make_translation(task_id: str, *, variant: int = 0, fingerprint: str = "base-t") -> TranslationRecord:
    """A supermask translation record (NumPy only) that is a pure function of its arguments."""
    rng = _rng(f"{task_id}/{variant}/translation")
    arrays = {}
    for g in ("g_xy", "g_yx"):
        arrays[f"{g}/bits"] = rng.integers(0, 256, 216, dtype=np.uint8)
        arrays[f"{g}/free/norm.weight"] = rng.standard_normal(8).astype(np.float32)
    return TranslationRecord(
        task_id=task_id,
        method="supermask",
        settings={"resolution": 32, "width": 2, "steps": 4},
        arrays=arrays,
        mask={"method": "topk", "density": 0.5},
        layers={g: [["conv.weight", [8, 3, 3, 3]], ["out.weight", [3, 8, 3, 3]]] for g in ("g_xy", "g_yx")},
        base_fingerprint=fingerprint,
        metrics={"hausdorff_score": float(rng.random()), "curve": [0.5, 0.25]},
        provenance={"hash": "prov-t", "fields": {"translation.lr": 0.0002}},
        created=1.7e9 + float(rng.integers(10**6)),
    )


def assert_same_translation(a: TranslationRecord, b: TranslationRecord) -> None:
    """Every field and array of two translation records is equal, dtypes and shapes included."""
    assert a.meta() == b.meta() and a.arrays.keys() == b.arrays.keys()
    for name in a.arrays:
        assert a.arrays[name].dtype == b.arrays[name].dtype
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    assert a.checksum == b.checksum


def write_legacy_translation_record(folder: Path, record: TranslationRecord) -> Path:
    """A translation record file as the supermask before the sharded translation store wrote it (its
    code is gone): one HDF5 file per task, `<folder>/<task id>.h5`."""
    meta = {**record.meta(), "checksum": record.checksum, "format_version": 1}
    path = folder / f"{record.task_id}.h5"
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)
        arrays = f.create_group("arrays")
        for name, array in sorted(record.arrays.items()):
            arrays.create_dataset(name, data=np.ascontiguousarray(array))
    return path


# -- one case per store kind, for the tests every kind must pass ---------------------


@dataclass(frozen=True)
class KindCase:
    """How a test opens, fills and reads back a store of one kind, through its client and file class."""

    name: str
    open: Callable  # (root, num_shards, compact_bytes) -> the kind's client, shard actors started
    put: Callable  # (client, task id) -> whether it was new
    read: Callable  # (client, task id) -> None; asserts the stored record is the one put
    files: Callable  # (root, num_shards) -> {shard: [task ids, in the order stored]}, read without Ray
    check: Callable  # (root, num_shards) -> None; asserts every record in the files is the one put


def _mask_case(shapes) -> KindCase:
    from supermask.store.maskfile import MaskFile
    from supermask.store.partitioning import shard_path

    def open_(root, n, compact_bytes):
        from supermask.runtime.mask_store import MaskStore

        return MaskStore.open(root, n, compact_bytes=compact_bytes)

    def files(root, n):
        out = {}
        for s in range(n):
            with MaskFile(shard_path(root, s)) as f:
                out[s] = f.list()
        return out

    def check(root, n):
        for s in range(n):
            with MaskFile(shard_path(root, s)) as f:
                for t in f.list():
                    assert_same(f.get(t), make_mask(t, shapes=shapes))

    return KindCase(
        "masks",
        open_,
        lambda store, tid: store.put(make_mask(tid, shapes=shapes)),
        lambda store, tid: assert_same(store.get(tid), make_mask(tid, shapes=shapes)),
        files,
        check,
    )


def _reservoir_case() -> KindCase:
    from supermask.store.reservoir_file import ReservoirFile
    from supermask.store.reservoir_layout import reservoir_path

    def open_(root, n, compact_bytes):
        from supermask.runtime.reservoir_store import ReservoirStore
        from supermask.store.reservoir_layout import ReservoirSpec

        spec = ReservoirSpec(rule="storkey", shards=n, compact_bytes=compact_bytes or 2**20)
        return ReservoirStore.open(root, spec, DIMS, "base-a")

    def opened(root, s):
        return ReservoirFile(
            reservoir_path(root, s), dims=DIMS, rule="storkey", dtype="fp32", fingerprint="base-a"
        )

    def files(root, n):
        out = {}
        for s in range(n):
            with opened(root, s) as f:
                out[s] = in_order(f)
        return out

    def check(root, n):
        for s in range(n):
            with opened(root, s) as f:  # the matrices are those of its updates, once each, in order
                for layer in range(len(DIMS)):
                    np.testing.assert_array_equal(
                        f.reservoir.matrix(layer), rebuilt(in_order(f)).matrix(layer)
                    )

    def read(store, tid):
        from supermask.store.reservoir_file import pattern_digest

        assert store.describe([tid])[tid]["digest"] == pattern_digest(pattern(tid))

    return KindCase(
        "reservoir",
        open_,
        lambda store, tid: store.put_patterns([(tid, pattern(tid), {}, {})])[0],
        read,
        files,
        check,
    )


def _translation_case() -> KindCase:
    from supermask.store.partitioning import shard_path
    from supermask.store.translation_file import TranslationFile

    def open_(root, n, compact_bytes):
        from supermask.runtime.translation_store import TranslationStore

        return TranslationStore.open(root, n, compact_bytes=compact_bytes)

    def files(root, n):
        out = {}
        for s in range(n):
            with TranslationFile(shard_path(root, s)) as f:
                out[s] = f.list()
        return out

    def check(root, n):
        for s in range(n):
            with TranslationFile(shard_path(root, s)) as f:
                for t in f.list():
                    assert_same_translation(f.get(t), make_translation(t))

    return KindCase(
        "translation",
        open_,
        lambda store, tid: store.put(make_translation(tid)),
        lambda store, tid: assert_same_translation(store.get(tid), make_translation(tid)),
        files,
        check,
    )


def kind_case(name: str, mask_shapes=SHAPES) -> KindCase:
    """The case of one store kind ("masks", "reservoir", "translation")."""
    return {
        "masks": lambda: _mask_case(mask_shapes),
        "reservoir": _reservoir_case,
        "translation": _translation_case,
    }[name]()


KINDS = ("masks", "reservoir", "translation")
