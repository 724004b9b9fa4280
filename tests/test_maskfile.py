"""MaskFile: round trips, idempotence, journal recovery, integrity of every field, kinds, describe,
compaction, sums and scores, format-1 migration, real kill -9."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from store_helpers import (
    SHAPES,
    TAMPERING,
    assert_same,
    edit_meta,
    make_mask,
    tamper,
    v1_view,
    wal,
    write_v1_journal,
    write_v1_snapshot,
)
from supermask.core.files import stale_temporaries
from supermask.core.records import packing
from supermask.core.records.packing import RunningSum, TaskMask, chunked_packed_dot, flatten_queries
from supermask.store import migrate, snapshot
from supermask.store.errors import (
    CorruptJournalError,
    CorruptMaskError,
    FingerprintMismatchError,
    MaskExistsError,
    MaskNotFoundError,
    NotAMaskFileError,
    OldFormatError,
    StoreLockedError,
    WrongKindError,
)
from supermask.store.journal import FILE_MAGIC
from supermask.store.maskfile import MaskFile
from supermask.store.migrate import MigrationError, migrate_file, migrate_path
from supermask.store.records import field_digests

PACKAGE_DIR = str(Path(packing.__file__).parents[2])  # .../supermask
CRASH_SHAPES = [(256, 128), (128, 128), (128, 64)]  # 57,344 weights, 7 KiB packed


def crash_mask(task_id: str) -> TaskMask:
    return make_mask(task_id, shapes=CRASH_SHAPES)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "shard-000.h5"


def test_round_trip_from_journal_and_snapshot(path):
    masks = [make_mask(f"t{i}") for i in range(4)] + [make_mask("."), make_mask("..")]
    with MaskFile(path) as store:
        for m in masks:
            assert store.put(m) is True
        for m in masks:
            assert_same(store.get(m.task_id), m)  # read from the journal
        assert store.list() == sorted(m.task_id for m in masks) and len(store) == 6 and "t1" in store
    with MaskFile(path) as store:  # close compacted: now read from the snapshot
        assert store.stats()["journal_bytes"] == len(FILE_MAGIC)
        for m in masks:
            assert_same(store.get(m.task_id, fingerprint="base-a"), m)
    with h5py.File(path, "r") as f:  # plain h5py sees the documented layout
        assert f.attrs["format"] == "supermask-maskfile" and f.attrs["format_version"] == 2
        g = f["masks/t2"]
        meta = json.loads(g.attrs["meta"])
        assert meta["checksum"] == masks[2].checksum and meta["base_fingerprint"] == "base-a"
        assert meta["bits_checksum"] == masks[2].bits_checksum != masks[2].checksum
        assert meta["kind"] == "mask" and meta["provenance"] == masks[2].provenance
        assert meta["layer_shapes"] == [list(s) for s in SHAPES] and meta["density"] == masks[2].density
        np.testing.assert_array_equal(g["packed"][()], masks[2].packed)
        np.testing.assert_array_equal(g["bn/bn0.running_mean"][()], masks[2].bn_stats["bn0.running_mean"])
        assert json.loads(f["masks/%2E"].attrs["meta"])["task_id"] == "."


def test_put_is_idempotent_and_overwrite_is_explicit(path):
    with MaskFile(path) as store:
        a, b = make_mask("t"), make_mask("t", variant=1)
        assert store.put(a) is True
        size = store.stats()["journal_bytes"]
        assert store.put(make_mask("t")) is False  # identical: no new record
        assert store.stats()["journal_bytes"] == size
        with pytest.raises(MaskExistsError, match="overwrite=True"):
            store.put(b)
        assert_same(store.get("t"), a)
        assert store.put(b, overwrite=True) is True
        assert_same(store.get("t"), b)
    with MaskFile(path) as store:
        assert_same(store.get("t"), b)


def test_put_validates_its_input(path):
    with MaskFile(path) as store:
        bad_id = make_mask("t")
        bad_id.task_id = "has space"
        with pytest.raises(ValueError, match="task id"):
            store.put(bad_id)
        short = make_mask("t")
        short.packed = short.packed[:-1]
        with pytest.raises(ValueError, match="bytes but layer shapes"):
            store.put(short)
        wide = make_mask("t")
        wide.packed = wide.packed.astype(np.int64)
        with pytest.raises(ValueError, match="uint8"):
            store.put(wide)
        other_shapes = make_mask("u", shapes=[(4, 4)])
        store.put(make_mask("t"))
        with pytest.raises(ValueError, match="share its shapes"):
            store.put(other_shapes)
        assert len(store) == 1


def test_get_many_and_not_found(path):
    with MaskFile(path) as store:
        for i in range(3):
            store.put(make_mask(f"t{i}"))
        got = store.get_many(["t2", "t0"])
        assert [m.task_id for m in got] == ["t2", "t0"]
        with pytest.raises(MaskNotFoundError, match="holds 3 masks") as e:
            store.get("nope")
        assert isinstance(e.value, KeyError)
        with pytest.raises(MaskNotFoundError, match="1 of 2"):
            store.get_many(["t1", "nope"])


def test_delete_survives_reopen(path):
    with MaskFile(path) as store:
        for i in range(3):
            store.put(make_mask(f"t{i}"))
    store = MaskFile(path)
    assert store.delete("t1") is True and store.delete("t1") is False
    store.close(compact=False)  # the delete lives only in the journal
    with MaskFile(path) as store:
        assert store.list() == ["t0", "t2"]
    with MaskFile(path) as store:  # and after compaction
        assert store.list() == ["t0", "t2"]


def test_unclosed_handle_loses_nothing(path, tmp_path):
    store = MaskFile(path)
    masks = [make_mask(f"t{i}") for i in range(5)]
    for m in masks:
        store.put(m)
    store.delete("t3")
    crashed = tmp_path / "copy" / path.name  # the files as a kill -9 would leave them
    crashed.parent.mkdir()
    shutil.copy(path, crashed)
    shutil.copy(wal(path), wal(crashed))
    with MaskFile(crashed) as copy:
        assert copy.list() == ["t0", "t1", "t2", "t4"]
        for m in masks:
            if m.task_id != "t3":
                assert_same(copy.get(m.task_id), m)
    with pytest.raises(StoreLockedError, match="already open"):
        MaskFile(path)
    store.close()


def test_compaction_keeps_everything_and_empties_journal(path):
    masks = [make_mask(f"t{i:02d}") for i in range(30)]
    with MaskFile(path, compact_bytes=8_000) as store:  # ~3 records per journal
        for m in masks:
            store.put(m)
            assert store.stats()["journal_bytes"] < 8_000 + 3_000
        for m in masks[::3]:
            store.delete(m.task_id)
        live = [m for m in masks if m.task_id in store]
        store.compact()
        assert store.stats()["journal_bytes"] == len(FILE_MAGIC) and len(store) == 20
        for m in live:
            assert_same(store.get(m.task_id), m)
    with h5py.File(path, "r") as f:
        assert sorted(f["masks"]) == [m.task_id for m in live]
    assert stale_temporaries(path) == []


def test_stale_tmp_is_removed(path, caplog):
    with MaskFile(path) as store:
        store.put(make_mask("t"))
    tmp = path.with_name(f".{path.name}.99999.tmp")  # as atomic_write names them
    tmp.write_bytes(b"half a snapshot")
    with caplog.at_level(logging.WARNING), MaskFile(path) as store:
        assert store.list() == ["t"]
    assert not tmp.exists() and "cut short" in caplog.text


@pytest.mark.parametrize("damage", ["half_record", "garbage", "zeros"])
def test_torn_tail_is_cut(path, caplog, damage):
    store = MaskFile(path)
    store.put(make_mask("t0"))
    store.put(make_mask("t1"))
    before_last = store.stats()["journal_bytes"]
    store.put(make_mask("t2"))
    store.close(compact=False)
    j = wal(path)
    size = j.stat().st_size
    if damage == "half_record":  # the last append cut in half
        os.truncate(j, before_last + (size - before_last) // 2)
        good, kept = before_last, ["t0", "t1"]
    else:  # junk after the last record, as a crash mid-append can leave
        with open(j, "ab") as f:
            f.write(b"SMR1\x01" + os.urandom(500) if damage == "garbage" else bytes(4096))
        good, kept = size, ["t0", "t1", "t2"]
    with caplog.at_level(logging.WARNING), MaskFile(path) as store:
        assert store.list() == kept
        assert j.stat().st_size == good
        assert "torn tail" in caplog.text
        store.put(make_mask("t9"))
    with MaskFile(path) as store:
        assert store.list() == [*kept, "t9"] and store.verify().ok


def test_corrupt_middle_record_raises_and_changes_nothing(path):
    store = MaskFile(path)
    for i in range(3):
        store.put(make_mask(f"t{i}"))
    store.close(compact=False)
    j = wal(path)
    data = bytearray(j.read_bytes())
    data[len(FILE_MAGIC) + 200] ^= 0xFF  # inside the first record's payload
    j.write_bytes(bytes(data))
    before = (path.read_bytes(), j.read_bytes())
    with pytest.raises(CorruptJournalError, match=rf"{j.name}.*offset {len(FILE_MAGIC)}"):
        MaskFile(path)
    assert (path.read_bytes(), j.read_bytes()) == before


def test_corrupt_snapshot_mask_is_reported(path):
    with MaskFile(path) as store:
        for i in range(3):
            store.put(make_mask(f"t{i}"))
    with h5py.File(path, "r+") as f:
        f["masks/t1/packed"][5] ^= 0x10
    with MaskFile(path) as store:
        report = store.verify()
        assert report.checked == 3 and not report.ok
        assert len(report.problems) == 1 and report.problems[0].startswith("t1:")
        assert "changed since it was written: packed" in report.problems[0]
        with pytest.raises(CorruptMaskError, match=r"'t1'.*shard-000\.h5"):
            store.get("t1")
        assert_same(store.get("t0"), make_mask("t0"))
        store.put(make_mask("t3"))
        with pytest.raises(CorruptMaskError, match="Compaction was abandoned"):
            store.compact()
        assert store.delete("t1")  # the remedy works
        assert store.verify().ok


def test_fingerprint_mismatch_names_both_bases(path):
    with MaskFile(path) as store:
        store.put(make_mask("t", fingerprint="aaaa"))
        with pytest.raises(FingerprintMismatchError) as e:
            store.get("t", fingerprint="bbbb")
        msg = str(e.value)
        assert "learned on base aaaa, not bbbb" in msg and "(arch, seed, init, shapes)" in msg
        with pytest.raises(FingerprintMismatchError):
            store.get_many(["t"], fingerprint="bbbb")


def test_refuses_foreign_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(NotAMaskFileError, match="not an HDF5 file"):
        MaskFile(text)
    assert text.read_text() == "not hdf5" and not wal(text).exists()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    before = other.read_bytes()
    with pytest.raises(NotAMaskFileError, match="not a supermask mask file"):
        MaskFile(other)
    assert other.read_bytes() == before
    bad_wal = tmp_path / "s.h5"
    wal(bad_wal).write_bytes(b"some other journal format")
    with pytest.raises(NotAMaskFileError, match="journal"):
        MaskFile(bad_wal)
    assert wal(bad_wal).read_bytes() == b"some other journal format"


def test_creation_cut_short_is_finished(path):
    wal(path).write_bytes(bytes(4096))  # a new journal whose blocks never reached the disk
    with MaskFile(path) as store:
        store.put(make_mask("t"))
    path.unlink()  # a journal without its snapshot still holds its records
    store = MaskFile(path)
    store.put(make_mask("u"))
    store.close(compact=False)
    path.unlink()
    with MaskFile(path) as store:
        assert store.list() == ["u"]


def test_export_import_round_trip(path, tmp_path):
    masks = [make_mask(f"t{i}") for i in range(5)]
    with MaskFile(path) as store:
        for m in masks:
            store.put(m)
        out = tmp_path / "export.h5"
        assert store.export(out) == 5
        with pytest.raises(FileExistsError):
            store.export(out)
    with MaskFile(tmp_path / "b.h5") as other:
        other.put(make_mask("t0", variant=1))
        with pytest.raises(MaskExistsError, match="nothing was imported"):
            other.import_from(out)
        assert len(other) == 1
        assert other.import_from(out, overwrite=True) == 5
        assert other.import_from(out) == 0
        assert other.stats()["journal_bytes"] > len(FILE_MAGIC)  # imports are journaled
    with MaskFile(tmp_path / "b.h5") as other:
        for m in masks:
            assert_same(other.get(m.task_id), m)
    with MaskFile(tmp_path / "c.h5") as third:
        assert third.import_from(path) == 5  # another store's (compacted) snapshot


def unpacked_sum(masks: list[TaskMask]) -> list[np.ndarray]:
    return [sum(m.masks()[i].astype(np.int32) for m in masks) for i in range(len(SHAPES))]


def test_mask_sum_tracks_puts_deletes_and_reopen(path):
    masks = {f"t{i}": make_mask(f"t{i}") for i in range(7)}
    with MaskFile(path) as store:
        assert store.mask_sum() == ([], 0)
        for m in list(masks.values())[:4]:
            store.put(m)
        sums, n = store.mask_sum()
        assert n == 4 and all(s.dtype == np.int32 for s in sums)
        for got, want in zip(sums, unpacked_sum(list(masks.values())[:4]), strict=True):
            np.testing.assert_array_equal(got, want)
        for m in list(masks.values())[4:]:
            store.put(m)  # kept up to date incrementally from here on
        store.delete("t2")
        masks["t5"] = make_mask("t5", variant=1)
        store.put(masks["t5"], overwrite=True)
        del masks["t2"]
        sums, n = store.mask_sum("base-a")
        assert n == 6
        for got, want in zip(sums, unpacked_sum(list(masks.values())), strict=True):
            np.testing.assert_array_equal(got, want)
        store.put(make_mask("x", fingerprint="base-b"))
        with pytest.raises(ValueError, match="2 bases"):
            store.mask_sum()
        assert store.mask_sum("base-b")[1] == 1 and store.stats()["fingerprints"] == {
            "base-a": 6,
            "base-b": 1,
        }
    with MaskFile(path) as store:
        sums, n = store.mask_sum("base-a")
        assert n == 6
        for got, want in zip(sums, unpacked_sum(list(masks.values())), strict=True):
            np.testing.assert_array_equal(got, want)


def test_query_scores_equal_dense_inner_products(path):
    rng = np.random.default_rng(0)
    masks = [make_mask(f"t{i}") for i in range(10)]
    queries = [rng.standard_normal((2, *s)).astype(np.float32) for s in SHAPES]
    dense = np.stack([np.concatenate([b.ravel() for b in m.masks()]) for m in masks]).astype(np.float64)
    flat = np.concatenate([q.reshape(2, -1) for q in queries], axis=1).astype(np.float64)
    with MaskFile(path, compact_bytes=20_000) as store:
        for m in masks:
            store.put(m)  # some masks end in the snapshot, some in the journal
        for chunk in (1, 3, 64):
            ids, got = store.query_scores(queries, chunk=chunk)
            assert ids == [m.task_id for m in masks] and got.shape == (10, 2)
            np.testing.assert_allclose(got, dense @ flat.T, rtol=1e-5, atol=1e-4)
        with pytest.raises(ValueError, match="shapes"):
            store.query_scores(queries[:2])
        with pytest.raises(ValueError, match="chunk"):
            store.query_scores(queries, chunk=0)


def test_running_sum_and_chunked_dot_are_the_bank_loops():
    masks = [make_mask(f"t{i}") for i in range(5)]
    running = RunningSum(SHAPES)
    for m in masks:
        running.add(m.packed)
    running.remove(masks[2].packed)
    want = [sum(m.masks()[i].astype(np.int32) for j, m in enumerate(masks) if j != 2) for i in range(3)]
    for got, w in zip(running.layers(), want):
        np.testing.assert_array_equal(got, w)
    queries = flatten_queries([np.ones((1, *s), np.float32) for s in SHAPES], SHAPES)
    rows = {m.task_id: m.packed for m in masks}
    dots = chunked_packed_dot(list(rows), lambda ids: np.stack([rows[t] for t in ids]), queries, 2)
    np.testing.assert_array_equal(
        dots[:, 0], [m.masks()[0].sum() + m.masks()[1].sum() + m.masks()[2].sum() for m in masks]
    )


# -- every field of a record is verified -------------------------------------------------


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampering_with_any_part_is_caught_and_loses_nothing_else(path, how):
    masks = [make_mask(f"t{i}") for i in range(3)]
    with MaskFile(path) as store:
        for m in masks:
            store.put(m)
    tamper(path, "t1", how)
    part = TAMPERING[how][1]
    with MaskFile(path) as store:
        report = store.verify()
        assert report.checked == 3 and len(report.problems) == 1, report.problems
        assert report.problems[0].startswith("t1: ") and part in report.problems[0]
        with pytest.raises(CorruptMaskError, match=rf"'t1'.*{part}.*delete\('t1'\)"):
            store.get("t1")
        with pytest.raises(CorruptMaskError):
            store.get_many(["t0", "t1"])
        for m in (masks[0], masks[2]):  # nothing else lost
            assert_same(store.get(m.task_id), m)
        queries = [np.ones((1, *s), np.float32) for s in SHAPES]
        if how == "bn_mean":  # scoring reads only the bits, which are intact (and checked)
            assert store.query_scores(queries)[0] == ["t0", "t1", "t2"]
        else:
            with pytest.raises(CorruptMaskError, match="'t1'"):  # "all masks" never silently skips one
                store.query_scores(queries)
        assert store.query_scores(queries, ids=["t0", "t2"])[0] == ["t0", "t2"]
        store.put(make_mask("t3"))
        with pytest.raises(CorruptMaskError, match="Compaction was abandoned"):
            store.compact()
        with pytest.raises(CorruptMaskError, match="'t1'"):
            store.export(path.with_name("export.h5"))
        assert store.delete("t1") and store.verify().ok  # the remedy works
    with MaskFile(path) as store:
        assert store.list() == ["t0", "t2", "t3"] and store.verify().ok


def test_a_record_of_another_kind_is_never_a_mask(path, capsys):
    with MaskFile(path) as store:
        store.put(make_mask("m"))
        store.put(make_mask("w"))
    with h5py.File(path, "r+") as f:  # as a later version would store a kind this one does not know
        g = f["masks/w"]
        parts = json.loads(g.attrs["meta"])["parts"]
        edit_meta(g, kind="future", parts={**parts, **field_digests({"kind": "future"}, ("kind",))})
    with MaskFile(path) as store:
        with pytest.raises(WrongKindError, match="kind 'future', not 'mask'"):
            store.get("w")
        with pytest.raises(WrongKindError):
            store.query_scores([np.ones((1, *s)) for s in SHAPES], ids=["w"])
        assert store.describe(["w"])["w"]["kind"] == "future"
        assert store.mask_sum()[1] == 1 and store.query_scores([np.ones((1, *s)) for s in SHAPES])[0] == ["m"]
        assert store.stats()["kinds"] == {"future": 1, "mask": 1}
        (problem,) = store.verify().problems
        assert problem.startswith("w: a record of kind 'future'")
        store.put(make_mask("x"))
        store.compact()  # copied as it is, never dropped
    with MaskFile(path, compact_bytes=1) as store:
        assert store.describe(["w"])["w"]["kind"] == "future" and len(store) == 3
    with h5py.File(path, "r+") as f:  # the kind changed by hand: its digest catches it
        edit_meta(f["masks/m"], kind="future")
    with MaskFile(path) as store:
        with pytest.raises(CorruptMaskError, match="metadata changed since it was written: kind"):
            store.get("m")


def test_describe_reads_the_index_only(path, monkeypatch):
    masks = [make_mask("a"), make_mask("b", provenance={}), make_mask("c", provenance={"hash": "prov-2"})]
    with MaskFile(path) as store:
        for m in masks[:2]:
            store.put(m)
    with MaskFile(path) as store:
        store.put(masks[2])  # one from the journal too

        def no_reads(*a, **k):
            raise AssertionError("describe read a record")

        monkeypatch.setattr("supermask.store.reader.read_mask", no_reads)
        monkeypatch.setattr("supermask.store.reader.read_packed", no_reads)
        monkeypatch.setattr("supermask.store.reader.decode_put", no_reads)
        got = store.describe()
        assert list(got) == ["a", "b", "c"]
        for m in masks:
            d = got[m.task_id]
            assert d["provenance"] == m.provenance and d["kind"] == "mask"
            assert d["density"] == pytest.approx(m.density) and d["layer_density"] == m.layer_density
            assert (
                d["mask_bytes"] == m.mask_bytes and d["created"] == m.created and d["checksum"] == m.checksum
            )
        got["a"]["provenance"]["hash"] = "changed by the caller"
        assert store.describe(["a"])["a"]["provenance"] == masks[0].provenance
        with pytest.raises(MaskNotFoundError, match="'nope'"):
            store.describe(["nope"])
        assert store.stats()["provenance"] == {"none": 1, "prov-1": 1, "prov-2": 1}
        monkeypatch.undo()


def test_validation_covers_provenance(path):
    with MaskFile(path) as store:
        with pytest.raises(ValueError, match="provenance must be empty or hold a string 'hash'"):
            store.put(make_mask("t", provenance={"fields": {}}))
        with pytest.raises(ValueError, match="metrics must be JSON-serialisable"):
            bad = make_mask("t")
            bad.metrics = {"x": object()}
            store.put(bad)
        assert len(store) == 0


# -- format 1 is refused, and migrated without losing a mask ------------------------------


def test_format_1_files_are_refused_untouched(tmp_path):
    old = tmp_path / "old.h5"
    write_v1_snapshot(old, [make_mask("t0")])
    before = old.read_bytes()
    with pytest.raises(
        OldFormatError, match=rf"version-1.*Nothing was changed.*supermask store migrate {old}"
    ):
        MaskFile(old)
    assert old.read_bytes() == before and not wal(old).exists()
    journal_only = tmp_path / "j.h5"
    write_v1_journal(wal(journal_only), [make_mask("t1")])
    before = wal(journal_only).read_bytes()
    with pytest.raises(OldFormatError, match="supermask store migrate"):
        MaskFile(journal_only)
    assert wal(journal_only).read_bytes() == before and not journal_only.exists()


def test_migrate_keeps_every_mask_of_snapshot_and_journal(tmp_path, caplog):
    path = tmp_path / "shard-000.h5"
    masks = [make_mask(f"t{i}") for i in range(6)] + [make_mask(".")]
    write_v1_snapshot(path, masks[:4] + masks[6:])
    replaced = make_mask("t0", variant=1)
    write_v1_journal(wal(path), [masks[4], masks[5], replaced], deletes=["t2"])
    with open(wal(path), "ab") as f:
        f.write(b"SMR1\x01" + bytes(40))  # a torn tail: a put that was never acknowledged
    with caplog.at_level(logging.WARNING):
        (result,) = migrate_path(tmp_path)
    assert "torn tail" in caplog.text
    assert result.migrated and result.old_versions == {"snapshot": 1, "journal": 1} and result.masks == 6
    assert wal(path).read_bytes() == FILE_MAGIC
    want = {m.task_id: v1_view(m) for m in [replaced, masks[1], *masks[3:]]}
    with MaskFile(path) as store:
        assert store.list() == sorted(want) and store.verify().ok
        for tid, m in want.items():
            assert_same(store.get(tid), m)
        assert store.describe(["t1"])["t1"]["provenance"] == {} and store.stats()["kinds"] == {"mask": 6}
    assert not next(migrate_path(tmp_path)).migrated  # a second run changes nothing


def test_migrate_refuses_damaged_masks_unless_told_to_drop_them(tmp_path):
    path = tmp_path / "shard-000.h5"
    masks = [make_mask(f"t{i}") for i in range(3)]
    write_v1_snapshot(path, masks)
    with h5py.File(path, "r+") as f:
        f["masks/t1/packed"][3] ^= 0x01
    before = path.read_bytes()
    with pytest.raises(
        MigrationError, match=r"1 masks .*t1: bits checksum mismatch.*nothing was changed.*--drop-corrupt"
    ):
        migrate_file(path)
    assert path.read_bytes() == before and stale_temporaries(path) == []
    result = migrate_file(path, drop_corrupt=True)
    assert result.dropped == ["t1"] and result.backups == [path.with_name("shard-000.h5.v1")]
    assert result.backups[0].read_bytes() == before  # the damaged mask is not lost either
    with MaskFile(path) as store:
        assert store.list() == ["t0", "t2"] and store.verify().ok


def test_migrate_cut_short_between_snapshot_and_journal_is_finished_by_a_rerun(tmp_path, monkeypatch):
    path = tmp_path / "shard-000.h5"
    masks = [make_mask(f"t{i}") for i in range(4)]
    write_v1_snapshot(path, masks[:2])
    write_v1_journal(wal(path), masks[2:], deletes=["t0"])
    real = migrate.atomic_write

    def crash_on_journal(target, data):
        if target == wal(path):
            raise OSError("simulated crash")
        real(target, data)

    monkeypatch.setattr(migrate, "atomic_write", crash_on_journal)
    with pytest.raises(OSError, match="simulated"):
        migrate_file(path)
    monkeypatch.undo()
    assert snapshot.format_version(path) == 2 and wal(path).read_bytes()[:16] == b"supermask-wal-v1"
    with pytest.raises(OldFormatError):
        MaskFile(path)
    assert migrate_file(path).masks == 3
    with MaskFile(path) as store:
        assert store.list() == ["t1", "t2", "t3"]
        for m in masks[1:]:
            assert_same(store.get(m.task_id), v1_view(m))


CHILD = """
import logging, sys, types
# Skip the package __init__ (it imports torch, ~2 s a start): the store needs only numpy and h5py.
pkg = types.ModuleType("supermask")
pkg.__path__ = [sys.argv[4]]
sys.modules["supermask"] = pkg
sys.path.insert(0, sys.argv[3])
from test_maskfile import crash_mask
from supermask.store.maskfile import MaskFile
logging.basicConfig(level=logging.WARNING)
store = MaskFile(sys.argv[1], compact_bytes=1_000_000)
print("ready", flush=True)
run, i = sys.argv[2], 0
while True:
    tid = f"r{run}-{i}"
    store.put(crash_mask(tid))
    print("P", tid, flush=True)
    if i % 4:  # keep one mask in four, so compaction stays short next to the appends
        victim = f"r{run}-{i - 1}"
        print("d", victim, flush=True)
        store.delete(victim)
        print("D", victim, flush=True)
    i += 1
"""


def test_kill_9_at_random_moments_loses_no_acknowledged_write(path):
    rng = random.Random(1234)
    acked, deleted, maybe_deleted = set(), set(), set()
    for run in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(run), str(Path(__file__).parent), PACKAGE_DIR],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = proc.stdout.readline()
        if first != "ready\n":
            proc.kill()
            pytest.fail(f"store did not open after kill {run}: {proc.communicate()[1]}")
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"the writer failed on its own before the kill: {err}"
        for line in out.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            kind, tid = line.split()
            {"P": acked, "d": maybe_deleted, "D": deleted}[kind].add(tid)
    with MaskFile(path) as store:
        assert store.verify().ok
        present = set(store.list())
        assert acked and deleted
        assert (acked - maybe_deleted) <= present  # every acknowledged put survives
        assert not (deleted & present)  # every acknowledged delete too
        for tid in present:  # whatever is there is whole: equal to what was put
            assert_same(store.get(tid), crash_mask(tid))
