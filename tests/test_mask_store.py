"""The sharded mask store: stable partitioning, resharding, Ray shard actors and their failure policy,
typed errors, describe, the `supermask store` commands, kill -9 survival of every store kind's shards."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
    RayTaskError,
)

import store_helpers
from store_helpers import (
    KINDS,
    AckedWriter,
    assert_same,
    kind_case,
    pattern,
    tamper,
    v1_view,
    write_v1_journal,
    write_v1_snapshot,
)
from supermask.core.records.packing import TaskMask
from supermask.interface import cli
from supermask.runtime.mask_store import MaskStore, ShardUnavailableError, shard_actor_name
from supermask.runtime.shard_placement import ShardAction, shard_action
from supermask.store import partitioning, reshard
from supermask.store.errors import (
    CorruptMaskError,
    FingerprintMismatchError,
    MaskExistsError,
    MaskFileError,
    MaskNotFoundError,
    NotAMaskFileError,
    OldFormatError,
)
from supermask.store.maskfile import MaskFile
from supermask.store.partitioning import (
    StoreLayout,
    StoreLayoutError,
    StoreState,
    moved_partitions,
    partition_of,
    read_state,
    shard_path,
    write_state,
)
from supermask.store.reshard import reshard_store

SHAPES = [(128, 96), (96, 64), (64, 10)]  # 19,072 weights, 2,384 packed bytes
PLATFORM_DIR = str(Path(partitioning.__file__).parents[2])


def make_mask(task_id: str, **kwargs) -> TaskMask:
    """A mask that is a pure function of its task id (and kwargs), rebuilt bit-for-bit anywhere."""
    return store_helpers.make_mask(task_id, **{"shapes": SHAPES, **kwargs})


def shard_contents(root: Path, num_shards: int) -> dict[int, list[str]]:
    """Task ids in each shard file, read directly (no actors may be running on root)."""
    out = {}
    for s in range(num_shards):
        with MaskFile(shard_path(root, s)) as f:
            out[s] = f.list()
    return out


# -- partitioning (no Ray) ---------------------------------------------------


def test_partition_of_is_stable_across_processes():
    ids = [f"task-{i}" for i in range(300)] + ["permuted_mnist.7", "Ωmega"]
    code = (
        "import json, sys; from supermask.store.partitioning import partition_of; "
        "print(json.dumps([partition_of(t, 256) for t in json.loads(sys.stdin.read())]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": PLATFORM_DIR}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(ids),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [partition_of(t, 256) for t in ids]
    # Pinned values: changing the hash would silently re-route every existing store's tasks.
    assert [partition_of(t) for t in ("task-0", "task-1", "permuted_mnist.7")] == [91, 236, 107]
    with pytest.raises(TypeError, match="task id is a str"):
        partition_of(7)


def test_layout_spreads_partitions_and_tasks_evenly():
    layout = StoreLayout.initial(3)
    assert layout.loads() == [86, 85, 85]
    counts = np.bincount([layout.shard_of(f"t{i}") for i in range(6000)], minlength=3)
    assert counts.min() > 1800 and counts.max() < 2200, counts
    with pytest.raises(StoreLayoutError, match="between 1 and"):
        StoreLayout.initial(0)
    with pytest.raises(StoreLayoutError, match="between 1 and"):
        StoreLayout.initial(300)


@pytest.mark.parametrize("old_n,new_n", [(4, 5), (5, 4), (2, 3), (3, 1), (1, 4), (3, 7)])
def test_reshard_moves_whole_partitions_and_only_the_needed_ones(old_n, new_n):
    old = StoreLayout.initial(old_n)
    new = old.reshard(new_n)
    assert new.num_shards == new_n and max(new.loads()) - min(new.loads()) <= 1
    moved = moved_partitions(old, new)
    # The fewest possible: what survivors hold above their new share, plus all of any dropped shard.
    quota = sorted(new.loads(), reverse=True)
    survivors = sorted((c for s, c in enumerate(old.loads()) if s < new_n), reverse=True)
    needed = sum(old.loads()[new_n:]) + sum(max(0, c - q) for c, q in zip(survivors, quota))
    assert len(moved) == needed
    for t in (f"t{i}" for i in range(2000)):  # tasks move with their partition, never alone
        p = partition_of(t)
        assert new.shard_of(t) == new.assignment[p]
        assert (old.shard_of(t) != new.shard_of(t)) == (p in moved)
    assert old.reshard(old_n) == old


def test_four_to_five_shards_moves_a_fifth():
    old = StoreLayout.initial(4)
    assert len(moved_partitions(old, old.reshard(5))) == 51  # 256 / 5
    assert StoreLayout.from_json(json.loads(json.dumps(old.to_json()))) == old


def test_corrupt_store_json_is_a_clear_error(tmp_path, capsys):
    write_state(tmp_path, StoreState(StoreLayout.initial(2)))
    assert read_state(tmp_path).layout == StoreLayout.initial(2)
    (tmp_path / "store.json").write_text('{"version": 1, "num_partitions": 256, "num_sh')
    with pytest.raises(StoreLayoutError, match=r"store\.json is corrupt"):
        MaskStore.open(tmp_path)
    assert cli.main(["store", "reshard", str(tmp_path), "3"]) == 2
    assert "store.json is corrupt" in capsys.readouterr().err
    (tmp_path / "store.json").unlink()
    MaskFile(shard_path(tmp_path, 0)).close()
    with pytest.raises(StoreLayoutError, match="no store.json"):
        MaskStore.open(tmp_path)


def _build_store(root: Path, num_shards: int, ids: list[str]) -> None:
    """A store made with MaskFile directly, laid out as MaskStore would."""
    layout = StoreLayout.initial(num_shards)
    write_state(root, StoreState(layout))
    files = [MaskFile(shard_path(root, s)) for s in range(num_shards)]
    for t in ids:
        files[layout.shard_of(t)].put(make_mask(t))
    for f in files:
        f.close()


def _check_exactly_once(root: Path, ids: list[str]) -> None:
    layout = read_state(root).layout
    assert read_state(root).pending_phase is None
    contents = shard_contents(root, layout.num_shards)
    assert sorted(t for held in contents.values() for t in held) == sorted(ids)  # each exactly once
    for s, held in contents.items():
        assert all(layout.shard_of(t) == s for t in held)
        with MaskFile(shard_path(root, s)) as f:
            assert f.verify().ok
            for t in held:
                assert_same(f.get(t), make_mask(t))
    assert not shard_path(root, layout.num_shards).exists()


@pytest.mark.parametrize(
    "crash_in,new_n,phase",
    [("put", 2, "copy"), ("put", 4, "copy"), ("delete", 4, "delete"), ("final", 2, "delete")],
)
def test_reshard_cut_short_loses_nothing_and_reruns(tmp_path, monkeypatch, crash_in, new_n, phase):
    ids = [f"r{i}" for i in range(60)]
    _build_store(tmp_path, 3, ids)
    calls = {"n": 0}
    if crash_in == "final":  # after the dropped shard's file is gone, before the layout is final
        real_write = reshard.write_state

        def crash_write(root, state):
            if state.pending_phase is None:
                raise OSError("simulated crash")
            real_write(root, state)

        monkeypatch.setattr(reshard, "write_state", crash_write)
    else:
        real = getattr(MaskFile, crash_in)

        def crash(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError("simulated crash")
            return real(self, *a, **k)

        monkeypatch.setattr(MaskFile, crash_in, crash)
    with pytest.raises(OSError, match="simulated"):
        reshard_store(tmp_path, new_n)
    monkeypatch.undo()
    assert read_state(tmp_path).pending_phase == phase
    with pytest.raises(StoreLayoutError, match=rf"cut short.*supermask store reshard .* {new_n}"):
        MaskStore.open(tmp_path)
    done = reshard_store(tmp_path, new_n)
    assert (done["from"], done["to"]) == (3, new_n)
    _check_exactly_once(tmp_path, ids)


# -- the shard-failure policy (no cluster) -----------------------------------


@pytest.mark.parametrize(
    "outcome,action",
    [
        (12345, ShardAction.WAIT),  # answered: alive
        (GetTimeoutError("no answer in 60 s"), ShardAction.WAIT),  # slow, or restarting
        (ActorUnavailableError("restarting", None), ShardAction.WAIT),  # Ray is restarting it
        (ActorUnschedulableError("node gone"), ShardAction.REVIVE),  # pinned to a node that is gone
        (ActorDiedError(), ShardAction.REVIVE),  # died with its node
        (RayActorError(error_msg="The actor died because its node was removed."), ShardAction.REVIVE),
        (
            RayActorError(error_msg="The actor is dead because it was killed by `ray.kill`."),
            ShardAction.RAISE,
        ),
        (RayTaskError("ping", "Traceback ...", NotAMaskFileError("x")), ShardAction.RAISE),  # its own error
        (ValueError("anything else"), ShardAction.RAISE),
    ],
)
def test_shard_action_policy(outcome, action):
    assert shard_action(outcome) is action


# -- the `supermask store` commands on a closed store (no Ray) -----------------


def test_store_commands_show_kinds_provenance_and_every_problem(tmp_path, capsys):
    ids = [f"c{i}" for i in range(12)]
    layout = StoreLayout.initial(2)
    write_state(tmp_path, StoreState(layout))
    files = [MaskFile(shard_path(tmp_path, s)) for s in range(2)]
    for t in ids:
        files[layout.shard_of(t)].put(make_mask(t, provenance={"hash": "p-0" if t == "c0" else "p-x"}))
    for f in files:
        f.close()
    assert cli.main(["store", "ls", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["task"] for r in rows) == sorted(ids) and {r["kind"] for r in rows} == {"mask"}
    assert cli.main(["store", "ls", str(tmp_path)]) == 0
    assert "mask   density 0.3" in capsys.readouterr().out
    assert cli.main(["store", "info", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sum(r["count"] for r in info) == 12 and {k for r in info for k in r["kinds"]} == {"mask"}
    merged = {}
    for r in info:
        for h, n in r["provenance"].items():
            merged[h] = merged.get(h, 0) + n
    assert merged == {"p-0": 1, "p-x": 11}
    assert cli.main(["store", "verify", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out
    first = layout.shard_of("c3")
    other = next(t for t in ids if layout.shard_of(t) != first)  # a record in the other shard file
    tamper(shard_path(tmp_path, first), "c3", "bn_mean")
    tamper(shard_path(tmp_path, 1 - first), other, "layer_density")
    assert cli.main(["store", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "c3: record checksum mismatch, changed since it was written: bn/bn0.running_mean" in out
    assert f"{other}: metadata changed since it was written: layer_density" in out
    assert out.count("1 problem(s)") == 2
    with MaskFile(shard_path(tmp_path, layout.shard_of("c3"))) as f:
        with pytest.raises(CorruptMaskError, match="'c3'.*bn/bn0.running_mean"):
            f.get("c3")


def test_store_migrate_command_keeps_every_mask_of_a_v1_store(ray_cluster, tmp_path, capsys):
    ids = [f"v{i}" for i in range(20)]
    layout = StoreLayout.initial(2)
    write_state(tmp_path, StoreState(layout))
    for s in range(2):
        mine = [make_mask(t) for t in ids if layout.shard_of(t) == s]
        write_v1_snapshot(shard_path(tmp_path, s), mine[:5])
        write_v1_journal(store_helpers.wal(shard_path(tmp_path, s)), mine[5:])
    with pytest.raises(OldFormatError, match=r"version-1.*supermask store migrate"):
        MaskStore.open(tmp_path)  # raised in a shard, typed here
    assert cli.main(["store", "ls", str(tmp_path)]) == 2
    assert "supermask store migrate" in capsys.readouterr().err
    assert cli.main(["store", "migrate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("migrated from snapshot v1, journal v1") == 2
    assert cli.main(["store", "migrate", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("already the current format") == 2
    store = MaskStore.open(tmp_path)
    try:
        assert store.list() == sorted(ids) and all(r["ok"] for r in store.verify())
        for t, m in zip(ids, store.get_many(ids)):
            assert_same(m, v1_view(make_mask(t)))
    finally:
        store.close()


# -- the store on Ray actors ---------------------------------------------------


@ray.remote
def _get_in_task(store: MaskStore, task_id: str) -> TaskMask:
    return store.get(task_id)


def test_round_trip_through_three_shards(ray_cluster, tmp_path):
    ids = [f"task-{i}" for i in range(40)]
    store = MaskStore.open(tmp_path, 3)
    try:
        assert store.put_many([make_mask(t) for t in ids[:30]]) == [True] * 30
        assert [store.put(make_mask(t)) for t in ids[30:]] == [True] * 10
        assert store.put(make_mask(ids[0])) is False  # idempotent
        for s, actor in enumerate(store.shard_actors):
            assert ray.get(actor.list.remote()) == sorted(t for t in ids if store.layout.shard_of(t) == s)
        assert all(shard_path(tmp_path, s).exists() for s in range(3))
        assert len(set(store.pids())) == 3
        order = random.Random(1).sample(ids, 40) + ids[:3]
        for t, m in zip(order, store.get_many(order)):
            assert_same(m, make_mask(t))
        assert store.list() == sorted(ids) and len(store) == 40
        assert store.contains("task-3") and not store.contains("nope")
        assert store.missing(["task-1", "nope", "task-2", "nix"]) == ["nope", "nix"]
        assert store.delete("task-39") is True and store.delete("task-39") is False
        stats = store.stats()
        assert stats["count"] == 39 and sum(s["count"] for s in stats["shards"]) == 39
        assert stats["fingerprints"] == {"base-a": 39}
        report = store.verify()
        assert [r["shard"] for r in report] == [0, 1, 2] and all(r["ok"] for r in report)
        assert sum(r["checked"] for r in report) == 39
        clone = pickle.loads(pickle.dumps(store))  # handed to Ray Train workers like this
        assert_same(clone.get("task-5"), make_mask("task-5"))
        assert_same(ray.get(_get_in_task.remote(store, "task-7")), make_mask("task-7"))
        exported = store.export(tmp_path / "export")
        assert exported == 39 and read_state(tmp_path / "export").layout == store.layout
    finally:
        store.close()
    with pytest.raises(MaskFileError, match="closed"):
        store.get("task-1")
    with pytest.raises(ShardUnavailableError, match=r"MaskStore.open\(root\)"):
        clone.get("task-1")  # a copy held elsewhere learns that its shards are gone


def test_errors_arrive_as_their_own_types(ray_cluster, tmp_path):
    store = MaskStore.open(tmp_path, 2)
    try:
        store.put(make_mask("a"))
        with pytest.raises(MaskNotFoundError, match="no mask for task 'ghost'") as e:
            store.get("ghost")
        assert isinstance(e.value, KeyError) and "RayTaskError" not in str(e.value)
        with pytest.raises(FingerprintMismatchError, match="learned on base base-a, not base-b"):
            store.get("a", fingerprint="base-b")
        with pytest.raises(MaskNotFoundError, match=r"2 of 3 task ids .*'ghost'.*'ghoul'"):
            store.get_many(["ghost", "a", "ghoul"])
        with pytest.raises(MaskExistsError, match="overwrite=True"):
            store.put(make_mask("a", fingerprint="base-z"))
        with pytest.raises(ValueError, match="task id"):
            store.put(make_mask("bad id!"))
        with pytest.raises(StoreLayoutError, match=r"has 2 shards, not 3.*supermask store reshard"):
            MaskStore.open(tmp_path, 3)
    finally:
        store.close()
    good = shard_path(tmp_path, 1).read_bytes()
    shard_path(tmp_path, 1).write_bytes(b"not a mask file")
    with pytest.raises(NotAMaskFileError, match="shard-001.h5"):  # raised in the shard, typed here
        MaskStore.open(tmp_path)
    shard_path(tmp_path, 1).write_bytes(good)
    store = MaskStore.open(tmp_path)  # the failed shard was not left behind
    try:
        assert_same(store.get("a"), make_mask("a"))
    finally:
        store.close()


def test_reopen_sees_the_same_masks(ray_cluster, tmp_path):
    ids = [f"m{i}" for i in range(12)]
    first = MaskStore.open(tmp_path, 3)
    first.put_many([make_mask(t) for t in ids])
    second = MaskStore.open(tmp_path)  # same named actors
    assert second.pids() == first.pids()
    assert [shard_actor_name(tmp_path, i) for i in range(3)] == [
        f"supermask-shard-{hashlib.blake2b(str(tmp_path.resolve()).encode(), digest_size=16).hexdigest()[:10]}-{i}"
        for i in range(3)
    ]
    old_pids = first.pids()
    first.close()
    third = MaskStore.open(tmp_path)  # new actors, reading the files
    try:
        assert set(third.pids()).isdisjoint(old_pids)
        assert third.list() == sorted(ids)
        for t, m in zip(ids, third.get_many(ids)):
            assert_same(m, make_mask(t))
    finally:
        third.close()


def test_mask_sum_and_query_scores_match_numpy(ray_cluster, tmp_path):
    ids = [f"s{i}" for i in range(25)]
    store = MaskStore.open(tmp_path, 3)
    try:
        store.put_many([make_mask(t) for t in ids])
        dense = {t: make_mask(t).masks() for t in ids}
        sums, count = store.mask_sum()
        assert count == 25
        for layer, got in enumerate(sums):
            np.testing.assert_array_equal(got, sum(dense[t][layer].astype(np.int32) for t in ids))
        rng = np.random.default_rng(0)
        queries = [rng.standard_normal((2, *s)).astype(np.float32) for s in SHAPES]
        got_ids, got = store.query_scores(queries, chunk=4)
        assert sorted(got_ids) == sorted(ids) and got.shape == (25, 2)
        for t, row in zip(got_ids, got):
            want = [
                sum(float((q[j] * m).sum(dtype=np.float64)) for q, m in zip(queries, dense[t]))
                for j in range(2)
            ]
            np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-3)
        sub_ids, sub = store.query_scores(queries, ids=["s3", "s17"])
        assert sorted(sub_ids) == ["s17", "s3"]
        for t, row in zip(sub_ids, sub):
            # BLAS may sum a float32 block in another order for another number of masks: equal to float32's
            # rounding of a sum over ~1,000 products, not bit for bit.
            np.testing.assert_allclose(row, got[got_ids.index(t)], rtol=1e-5, atol=1e-5)
        store.put(make_mask("other", fingerprint="base-b", shapes=[(8, 8)]))
        with pytest.raises(ValueError, match="2 bases"):
            store.mask_sum()
        assert store.mask_sum("base-a")[1] == 25
        assert store.query_scores([np.ones((1, 8, 8))], fingerprint="base-b")[0] == ["other"]
    finally:
        store.close()


def test_describe_and_stats_come_from_the_shards_indexes(ray_cluster, tmp_path):
    masks = [make_mask(f"d{i}", provenance={"hash": f"p{i % 2}"}) for i in range(9)] + [
        make_mask("hand", provenance={})
    ]
    store = MaskStore.open(tmp_path, 3)
    try:
        store.put_many(masks)
        described = store.describe()
        assert list(described) == sorted(m.task_id for m in masks)
        for m in masks:
            d = described[m.task_id]
            assert d["provenance"] == m.provenance and d["kind"] == "mask" and d["checksum"] == m.checksum
            assert d["density"] == pytest.approx(m.density) and d["mask_bytes"] == m.mask_bytes
        assert store.describe(["d7", "d1"]) == {"d7": described["d7"], "d1": described["d1"]}
        assert list(store.describe(["d7", "d1"])) == ["d7", "d1"]  # in the order asked for
        with pytest.raises(MaskNotFoundError, match="'ghost'"):
            store.describe(["d1", "ghost"])
        stats = store.stats()
        assert stats["provenance"] == {"none": 1, "p0": 5, "p1": 4} and stats["kinds"] == {"mask": 10}
    finally:
        store.close()


def test_reshard_two_to_three_keeps_every_mask_once(ray_cluster, tmp_path, capsys):
    ids = [f"k{i}" for i in range(80)]
    store = MaskStore.open(tmp_path, 2)
    store.put_many([make_mask(t) for t in ids])
    with pytest.raises(MaskFileError, match="Close every MaskStore"):  # its actors hold the files
        MaskStore.reshard(tmp_path, 3)
    store.close()
    assert cli.main(["store", "reshard", str(tmp_path), "3"]) == 0
    assert "from 2 to 3 shards: 85 partitions" in capsys.readouterr().out
    _check_exactly_once(tmp_path, ids)
    store = MaskStore.open(tmp_path, 3)
    try:
        assert store.list() == sorted(ids) and all(r["ok"] for r in store.verify())
    finally:
        store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_every_store_kind_answers_the_same_calls(ray_cluster, tmp_path, kind):
    """One client API for every kind: put_many, missing, list, describe, get_many, delete, stats, verify,
    close; a reservoir refuses, naming why, what it cannot do (give a pattern back, drop or replace one)."""
    from supermask.store.errors import NotSupportedError

    case = kind_case(kind, SHAPES)
    ids = [f"api-{i}" for i in range(7)]
    with case.open(tmp_path, 2, None) as store:
        assert [case.put(store, t) for t in ids] == [True] * 7 and case.put(store, ids[0]) is False
        assert store.missing([ids[3], "ghost", ids[5]]) == ["ghost"] and "ghost" not in store
        assert store.list() == sorted(ids) and len(store) == 7
        assert list(store.describe(ids[2::-1])) == ids[2::-1] and sorted(store.describe()) == sorted(ids)
        with pytest.raises(MaskNotFoundError, match="'ghost'"):
            store.describe(["ghost", ids[0]])
        stats = store.stats()
        count = sum(s["count"] for s in stats) if kind == "reservoir" else stats["count"]
        assert count == 7
        assert [r["shard"] for r in store.verify()] == [0, 1] and all(r["ok"] for r in store.verify())
        if kind == "reservoir":
            with pytest.raises(NotSupportedError, match="keeps no pattern to give back"):
                store.get_many(ids[:2])
            with pytest.raises(NotSupportedError, match="cannot be deleted"):
                store.delete(ids[0])
            with pytest.raises(NotSupportedError, match="cannot be overwritten"):
                store.put((ids[0], pattern(ids[0]), {}, {}), overwrite=True)
        else:
            for t in ids[:3]:
                case.read(store, t)
            assert [r.task_id for r in store.get_many(ids[::-1])] == ids[::-1]
            assert store.delete(ids[6]) is True and store.delete(ids[6]) is False
            assert store.missing(ids) == [ids[6]]
    with pytest.raises(ShardUnavailableError, match="closed"):
        store.list()


@pytest.mark.parametrize("kind", KINDS)
def test_kill_9_shards_six_times_during_puts(ray_cluster, tmp_path, capsys, record_property, kind):
    """The crash test, for every store kind: every acknowledged put survives 6 kill -9s of shard actors
    (each shard hit twice, compactions killed too), once, on its own shard, and `store verify` finds
    nothing corrupt."""
    case = kind_case(kind, SHAPES)
    store = case.open(tmp_path, 3, {"masks": 256 * 1024, "reservoir": 1500, "translation": 16 * 1024}[kind])
    rng = random.Random(20)
    serve_s = []
    retry_on = (ray.exceptions.RayActorError, MaskFileError)
    with AckedWriter(lambda tid: case.put(store, tid), "crash-", retry_on) as writer:
        acked = writer.acked
        for i in range(6):
            time.sleep(rng.uniform(0.02, 0.3))
            shard = i % 3
            actor = store.shard_actors[shard]
            pid = ray.get(actor.pid.remote())
            probe = next((t for t in reversed(acked) if store.layout.shard_of(t) == shard), None)
            os.kill(pid, signal.SIGKILL)
            killed = time.perf_counter()
            if probe is not None:
                case.read(store, probe)
            serve_s.append(time.perf_counter() - killed)
            assert ray.get(actor.pid.remote(), timeout=120) != pid  # restarted before the next kill
        time.sleep(0.2)  # puts reach the last restarted shard before the writer stops
    assert len(acked) > 30, len(acked)
    store.close()
    capsys.readouterr()
    assert cli.main(["store", "verify", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report) == 3 and all(r["ok"] and not r["problems"] for r in report)
    contents = case.files(tmp_path, 3)
    held = [t for ids in contents.values() for t in ids]
    assert len(held) == len(set(held))  # each record once ...
    assert set(acked) <= set(held)  # ... every acknowledged put present ...
    assert set(held) <= writer.attempted_ids()
    for s, ids in contents.items():  # ... on its own shard, bit for bit
        assert all(store.layout.shard_of(t) == s for t in ids)
    case.check(tmp_path, 3)
    record_property("time_to_serve_s", serve_s)
    logging.getLogger(__name__).warning(
        "%s: kill -9 x6: %d puts acknowledged, %d client retries; time to serve after a kill: "
        "median %.2f s, max %.2f s",
        kind,
        len(acked),
        writer.retries,
        float(np.median(serve_s)),
        max(serve_s),
    )
