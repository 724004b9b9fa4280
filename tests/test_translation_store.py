"""The translation store kind: many translation records per shard file with the mask file's guarantees
(journal, atomic snapshot, checksums naming what changed, verify, kinds kept apart), `supermask store` on
it, and stores of the earlier version (one file per task) refused, then migrated, and never retrained.
(Its shard actors' crash and lost-node tests run with every store kind's: test_mask_store.py and
test_multinode.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from store_helpers import (
    assert_same_translation,
    edit_meta,
    make_mask,
    make_translation,
    write_legacy_translation_record,
)
from supermask.interface.cli import main
from supermask.runtime.translation_store import TranslationStore
from supermask.store.errors import (
    CorruptMaskError,
    FingerprintMismatchError,
    MaskExistsError,
    OldFormatError,
    WrongKindError,
)
from supermask.store.maskfile import MaskFile
from supermask.store.partitioning import StoreLayout, StoreState, read_state, shard_path, write_state
from supermask.store.translation_file import TranslationFile
from supermask.store.translation_legacy import migrate_translation_folder


def test_a_translation_file_keeps_records_whole_and_checks_every_part(tmp_path):
    path = shard_path(tmp_path, 0)
    records = [make_translation(t) for t in ("a", "b", "c")]
    with TranslationFile(path) as f:
        assert f.put_many(records) == [True] * 3 and f.put(records[0]) is False  # idempotent
        with pytest.raises(MaskExistsError, match="overwrite=True"):
            f.put(make_translation("a", variant=1))
        for r, back in zip(records, f.get_many(["a", "b", "c"])):
            assert_same_translation(back, r)  # from the journal
        assert f.delete("c") and not f.delete("c")
    with TranslationFile(path) as f:  # closing compacted: now from the snapshot
        assert f.list() == ["a", "b"] and f.verify().ok
        assert_same_translation(f.get("b"), records[1])
        described = f.describe()["a"]
        assert described["kind"] == "translation" and described["method"] == "supermask"
        assert described["stored_bytes"] == records[0].nbytes and described["checksum"] == records[0].checksum
        assert described["density"] is None and described["mask_bytes"] is None
        assert described["provenance"] == records[0].provenance and f.stats()["kinds"] == {"translation": 2}
        with pytest.raises(FingerprintMismatchError, match="learned on base base-t, not base-x"):
            f.get("a", fingerprint="base-x")
        f.put(make_translation("d"))
        f.close(compact=False)  # "d" stays in the journal only, as after a kill -9
    with TranslationFile(path) as f:  # the index rebuilt from snapshot and journal
        assert f.list() == ["a", "b", "d"]
        assert_same_translation(f.get("d"), make_translation("d"))
    with h5py.File(path, "r+") as h:  # one bit flipped on disk, one field changed
        h["masks/a/g_xy/bits"][3] ^= 0x10
        edit_meta(h["masks/b"], settings={"resolution": 64, "width": 2, "steps": 4})
    with TranslationFile(path) as f:
        with pytest.raises(CorruptMaskError, match=r"'a'.*changed since it was written: array/g_xy/bits"):
            f.get("a")
        problems = f.verify().problems
        assert len(problems) == 2 and "array/g_xy/bits" in problems[0]
        assert "metadata changed since it was written: settings" in problems[1]
        assert f.describe(["b"])["b"]["problem"].endswith("settings")
        f.close(compact=False)


def test_records_of_one_kind_never_come_back_as_another(tmp_path):
    path = shard_path(tmp_path, 0)
    with MaskFile(path) as f:  # a mask store's file may hold any kind; each is only returned as itself
        f.put(make_mask("m"))
        f.put(make_translation("t"))
        with pytest.raises(WrongKindError, match=r"kind 'translation'.*TranslationStore.get"):
            f.get("t")
    with TranslationFile(path) as f:
        with pytest.raises(WrongKindError, match=r"kind 'mask', not 'translation'"):
            f.get("m")
        with pytest.raises(ValueError, match="takes TranslationRecord, not TaskMask"):
            f.put(make_mask("m2"))
        assert_same_translation(f.get("t"), make_translation("t"))


def test_store_commands_list_verify_and_reshard_a_translation_store(tmp_path, capsys):
    ids = [f"t{i}" for i in range(8)]
    write_state(tmp_path, StoreState(StoreLayout.initial(1)))
    with TranslationFile(shard_path(tmp_path, 0)) as f:
        f.put_many([make_translation(t) for t in ids])
    assert main(["store", "ls", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "translation supermask" in out and f"{make_translation('t0').nbytes:,} B" in out
    assert main(["store", "verify", str(tmp_path), "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checked"] == 8
    assert main(["store", "reshard", str(tmp_path), "2"]) == 0
    layout = read_state(tmp_path).layout
    for s in range(2):
        with TranslationFile(shard_path(tmp_path, s)) as f:
            assert f.list() == [t for t in ids if layout.shard_of(t) == s]
            for t in f.list():
                assert_same_translation(f.get(t), make_translation(t))


def _legacy_folder(folder: Path, ids: list[str]) -> list[Path]:
    return [write_legacy_translation_record(folder, make_translation(t)) for t in ids]


def test_an_earlier_versions_store_is_refused_then_migrated_losing_nothing(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    ids = ["toy_shapes-0000", "toy_shapes-0001", "toy_shapes-0002"]
    old = _legacy_folder(run / "store", ids)
    before = {p: p.read_bytes() for p in old}
    with pytest.raises(OldFormatError, match=r"3 translation records .*`supermask store migrate"):
        TranslationStore.open(run / "store")
    assert main(["store", "ls", str(run)]) == 2
    assert "supermask store migrate" in capsys.readouterr().err
    with pytest.raises(OldFormatError, match="supermask store migrate"):
        MaskFile(old[0])
    assert {p: p.read_bytes() for p in old} == before and read_state(run / "store") is None  # untouched
    # A damaged record stops the migration before anything is written.
    with h5py.File(old[1], "r+") as h:
        h["arrays/g_yx/bits"][0] ^= 1
    assert main(["store", "migrate", str(run)]) == 2
    assert "toy_shapes-0001.h5: record checksum mismatch" in capsys.readouterr().err
    assert read_state(run / "store") is None and all(p.exists() for p in old)
    write_legacy_translation_record(run / "store", make_translation(ids[1]))  # restored from a backup
    # A migration cut short after the records were stored, before every old file was deleted, reruns.
    real_unlink = Path.unlink
    calls = {"n": 0}

    def crash_unlink(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", crash_unlink)
    with pytest.raises(OSError, match="simulated"):
        migrate_translation_folder(run / "store")
    monkeypatch.undo()
    assert main(["store", "migrate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "migrated 2 translation records from one file per task" in out
    assert "h5: already the current format" in out
    assert json.loads((run / "store" / "store.json").read_text())["num_shards"] == 2  # as a run creates it
    assert not any(p.exists() for p in old)
    found = []
    for shard in (0, 1):
        if not shard_path(run / "store", shard).exists():
            continue  # every record may hash to one shard
        with TranslationFile(shard_path(run / "store", shard)) as f:
            assert f.verify().ok
            for t in f.list():
                assert_same_translation(f.get(t), make_translation(t))
                found.append(t)
    assert sorted(found) == ids


class _EarlierStore:
    """What the earlier version's translation store did for a Train worker: one file per task."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def missing(self, ids: list[str]) -> list[str]:
        return [t for t in ids if not (self.folder / f"{t}.h5").exists()]

    def put_many(self, records) -> list[bool]:
        for record in records:
            write_legacy_translation_record(self.folder, record)
        return [True] * len(records)


def test_a_rerun_on_an_earlier_versions_run_folder_trains_nothing_again(ray_cluster, tmp_path, capsys):
    """A run folder whose task the earlier version trained and stored: the rerun stops before training,
    naming the migration; after `supermask store migrate` the rerun skips the task and reads it back."""
    from supermask.config.spec import spec_from_dict
    from supermask.recipes.learners import learner_for
    from supermask.runtime.events import read_events
    from supermask.runtime.job import run_job
    from supermask.runtime.train_plan import Plan
    from supermask.runtime.train_workers import learn_and_store
    from supermask.store.translation_legacy import read_legacy_record
    from test_translation_platform import spec_dict

    learner = learner_for(spec_from_dict(spec_dict(steps=2, eval_every=2)))
    out = tmp_path / "run"
    out.mkdir()
    earlier = _EarlierStore(out / "store")
    assert learn_and_store(Plan(learner, earlier, [[0]], str(out)), learner.bench("cpu"), [0])[0] == 1
    stored = read_legacy_record(out / "store" / "toy_shapes-0000.h5")
    started = len(read_events(out / "events.jsonl"))
    with pytest.raises(OldFormatError, match="supermask store migrate"):
        run_job(learner, out, progress=False)
    assert main(["store", "migrate", str(out)]) == 0
    assert "migrated 1 translation records" in capsys.readouterr().out
    result = run_job(learner, out, progress=False)
    assert [t.skipped for t in result.tasks] == [True] and result.workers == 0
    meta = result.tasks[0].meta
    assert meta["task_id"] == "toy_shapes-0000" and meta["provenance"] == stored.provenance
    assert len(read_events(out / "events.jsonl")) == started  # nothing was trained again
    with TranslationStore.open(out / "store") as store:
        assert_same_translation(store.get("toy_shapes-0000"), stored)
