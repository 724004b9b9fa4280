"""The reservoir as a store kind: durable files, kill -9 of a writer, spec rules, `supermask store
info|verify` on a store's reservoirs (all without Ray), and one small `supermask run` of the Hopfield
spec on Ray (its actors' crash test shares tests/test_mask_store.py's Ray)."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TASKS
from store_helpers import DIMS, in_order, pattern, rebuilt
from supermask.config.schema import SpecError
from supermask.config.spec import load_spec
from supermask.core.hopfield.reservoir import Reservoir
from supermask.interface.cli import main
from supermask.store.errors import MaskFileError
from supermask.store.reservoir_file import ReservoirFile, ReservoirSettingsError
from supermask.store.reservoir_layout import ReservoirLayout, open_reservoir_layout, reservoir_path

HOPFIELD = TASKS / "split_mnist_hopfield.yaml"


def open_file(path: Path, **changes) -> ReservoirFile:
    settings = {"dims": DIMS, "rule": "storkey", "dtype": "fp32", "fingerprint": "base-a", **changes}
    return ReservoirFile(path, **settings)


def test_put_is_durable_idempotent_and_survives_reopen_with_and_without_compaction(tmp_path):
    path = tmp_path / "reservoir-000.npz"
    with open_file(path, compact_bytes=10**9) as f:
        assert [f.put(t, pattern(t), fingerprint="base-a", metrics={"acc": 0.9}) for t in ("a", "b")] == [
            True,
            True,
        ]
        assert (
            f.put("a", pattern("b"), fingerprint="base-a") is False
        )  # stored already: the matrix is unchanged
        assert not path.exists()  # only the journal so far
    assert path.exists()  # close compacted
    f = open_file(path)
    try:
        assert f.list() == ["a", "b"] and f.replayed == 0
        np.testing.assert_array_equal(f.reservoir.matrix(0), rebuilt(["a", "b"]).matrix(0))
        f.put("c", pattern("c"), fingerprint="base-a")
        assert f.describe(["a"])["a"]["metrics"] == {"acc": 0.9}
        assert f.stats()["count"] == 3 and f.verify().ok
    finally:
        f.close(compact=False)  # "c" stays in the journal only
    with open_file(path) as f:
        assert f.replayed == 1 and in_order(f) == ["a", "b", "c"]
        for i in range(2):
            np.testing.assert_array_equal(f.reservoir.matrix(i), rebuilt(["a", "b", "c"]).matrix(i))
    with pytest.raises(ReservoirSettingsError, match=r"rule: file 'storkey', asked 'hebbian'"):
        open_file(path, rule="hebbian")
    with open_file(path) as f, pytest.raises(ReservoirSettingsError, match="one base"):
        f.put("d", pattern("d"), fingerprint="base-b")


def test_compaction_cut_short_before_the_journal_is_emptied_applies_nothing_twice(tmp_path, monkeypatch):
    path = tmp_path / "reservoir-000.npz"
    f = open_file(path, compact_bytes=10**9)
    for t in ("a", "b", "c"):
        f.put(t, pattern(t), fingerprint="base-a")
    monkeypatch.setattr(f._journal, "truncate", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        f.compact()  # the snapshot holds a, b, c and the journal still does too
    f._journal.close()
    with open_file(path) as again:
        assert again.replayed == 0 and again.reservoir.count == 3
        np.testing.assert_array_equal(again.reservoir.matrix(0), rebuilt(["a", "b", "c"]).matrix(0))


def test_damaged_snapshot_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "reservoir-000.npz"
    with open_file(path) as f:
        f.put("a", pattern("a"), fingerprint="base-a")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MaskFileError, match="reservoir-000.npz"):
        open_file(path)


WRITER = """
import hashlib
import numpy as np
from supermask.store.reservoir_file import ReservoirFile

def pattern(task_id):  # as the test's pattern()
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(), "little"))
    return [rng.random(d) < 0.5 for d in (48, 24)]

f = ReservoirFile(path, dims=[48, 24], rule="storkey", dtype="fp32", fingerprint="base-a", compact_bytes=1500)
acks.send_bytes(b"ready")  # compactions (every ~15 puts) get killed too
i = 0
while True:
    tid = f"r{run}-{i}"
    f.put(tid, pattern(tid), fingerprint="base-a")
    acks.send_bytes(tid.encode())  # acknowledged: the put returned (one small message is one atomic write)
    i += 1
"""


def test_kill_9_of_a_writer_loses_no_acknowledged_update(tmp_path):
    # Writers fork from a server that imported the store once: a kill costs no interpreter start.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["supermask.store.reservoir_file"])
    path = tmp_path / "reservoir-000.npz"
    rng = random.Random(7)
    acked: list[str] = []
    for run in range(4):
        received, acks = context.Pipe(duplex=False)
        proc = context.Process(target=exec, args=(WRITER, {"path": str(path), "run": run, "acks": acks}))
        proc.start()
        acks.close()
        assert received.poll(120) and received.recv_bytes() == b"ready"
        time.sleep(rng.uniform(0.2, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        while True:
            try:
                acked.append(received.recv_bytes().decode())
            except EOFError:
                break
    with open_file(path) as f:
        assert f.verify().ok
        held = in_order(f)
        assert len(acked) > 20 and set(acked) <= set(held)  # every acknowledged update survives ...
        assert len(held) - len(acked) <= 4  # ... at most one written but unacknowledged per kill
        for i in range(2):  # ... and the matrices are exactly those of the updates, once each, in order
            np.testing.assert_array_equal(f.reservoir.matrix(i), rebuilt(held).matrix(i))


def test_spec_rules_name_the_field_value_and_fix():
    def error(*overrides: str) -> str:
        with pytest.raises(SpecError) as e:
            load_spec(HOPFIELD, list(overrides))
        return str(e.value)

    assert "mask.method: neuron" in error("mask.method=topk")
    assert "store.kind: got 'reservoirs'; allowed: masks, reservoir, both" in error("store.kind=reservoirs")
    assert "store.reservoir.rule: got 'oja'; allowed: hebbian, storkey, projection" in error(
        "store.reservoir.rule=oja"
    )
    assert "store.reservoir.dtype: got 'bf16'; allowed: fp32, fp16, int8" in error(
        "store.reservoir.dtype=bf16"
    )
    assert "store.reservoir.shards: got 0" in error("store.reservoir.shards=0")
    assert "recovery.start: got 'middle'; allowed: mean, zero, random" in error("recovery.start=middle")
    assert "recovery.batch_size: got 1" in error("recovery.batch_size=1")
    assert "run.scenario: got 'GNu'" in error("run.scenario=GNu")
    assert "did you mean 'rule'" in error("store.reservoir.rules=hebbian")
    assert "base.batchnorm: false" in error("base.arch=swish_mlp", "base.batchnorm=true")
    assert (
        load_spec(HOPFIELD, ["store.kind=reservoir", "store.reservoir.shards=3"]).store.reservoir.shards == 3
    )


def test_store_info_and_verify_show_and_check_the_reservoirs(tmp_path, capsys):
    layout = open_reservoir_layout(tmp_path, ReservoirLayout(2, "storkey", "fp32", tuple(DIMS), "base-a"))
    ids = [f"task-{i}" for i in range(6)]
    for shard in range(2):
        with open_file(reservoir_path(tmp_path, shard)) as f:
            for t in ids:
                if layout.shard_of(t) == shard:
                    f.put(t, pattern(t), fingerprint="base-a")
    assert main(["store", "info", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Hopfield reservoir 48x48 + 24x24 (storkey, fp32)") == 2
    assert "estimated capacity" in printed and "bytes of state" in printed
    assert main(["store", "verify", str(tmp_path), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert sum(r["checked"] for r in verified if r["kind"] == "reservoir") == len(ids)
    assert all(r["ok"] for r in verified)
    # A damaged reservoir file is named, not skipped.
    damaged = reservoir_path(tmp_path, layout.shard_of(ids[0]))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["store", "verify", str(tmp_path), "--json"]) == 1
    rows = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert not rows[damaged.name]["ok"] and "restore it from a backup" in rows[damaged.name]["problems"][0]
    assert sum(r["ok"] for r in rows.values()) == 1  # the other reservoir is still checked


def small(out: Path, *overrides: str) -> int:
    """`supermask run` of the Hopfield spec made small: 2 tasks on a 784-64-32-10 base, one worker."""
    args = ["run", str(HOPFIELD), "--out", str(out), "--no-progress"]
    settings = [
        "stream.num_tasks=2",
        "base.options.widths=[64, 32]",
        "search.batch_size=64",
        "recovery.steps=6",
        "recovery.batch_size=100",
        "run.num_workers=1",
        *overrides,
    ]
    for s in settings:
        args += ["--set", s]
    return main(args)


def test_split_mnist_hopfield_end_to_end_small(ray_cluster, tmp_path, capsys):
    """Learn on Ray Train into both stores, recover without task ids, report; a rerun learns nothing
    and leaves the reservoir as it was; other reservoir settings are refused before anything runs."""
    assert small(tmp_path) == 0
    printed = capsys.readouterr().out
    assert "recovery without task ids" in printed and "picked the right attractor" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    res = results["reservoir"]
    assert res["kind"] == "both" and res["patterns_stored"] == 2 and res["dims"] == [64, 32]
    assert res["reservoir_bytes"] == Reservoir([64, 32]).nbytes and res["neuron_bits_bytes"] == 2 * 12
    assert res["exact_store_bytes"] == 2 * -(-(784 * 64 + 64 * 32 + 32 * 10) // 8)
    rec = res["recovery"]
    assert rec["batches"] == 2 * 2 and 0.0 <= rec["picked_right_attractor"] <= 1.0
    assert rec["picked_nearest_right"] is not None and 0 <= rec["converged_step_max"] <= 6
    assert all(t["accuracy"] > 0.8 for t in results["tasks"])  # GG, measured by the Train worker
    assert "Hopfield reservoir" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "recovery.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["store", "verify", str(tmp_path), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert [r["checked"] for r in verified if r.get("kind") == "reservoir"] == [2]
    before = (tmp_path / "store" / "reservoir-000.npz").read_bytes()
    assert small(tmp_path) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert all(t["resumed_from_store"] for t in again["tasks"])
    assert (tmp_path / "store" / "reservoir-000.npz").read_bytes() == before
    capsys.readouterr()
    assert small(tmp_path, "store.reservoir.rule=hebbian") == 2
    assert "store.reservoir.rule: stored 'projection', this run 'hebbian'" in capsys.readouterr().err
