"""The main job end to end on an embedded Ray: `supermask run` on the synthetic stream."""

import json
from pathlib import Path

import pytest
import ray

from supermask.cli import main
from supermask.store.maskfile import MaskFile

TASKS = Path(__file__).resolve().parent.parent / "tasks"


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(
        [
            "run",
            str(TASKS / "synthetic.yaml"),
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "stream.num_tasks=3",
        ]
    )
    assert code == 0
    return out


def test_results_json_has_what_programs_need(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    assert {"tasks", "avg_accuracy", "base_fingerprint", "data_source", "seconds"} <= set(results)
    assert [t["task"] for t in results["tasks"]] == ["synthetic-0000", "synthetic-0001", "synthetic-0002"]
    for t in results["tasks"]:
        assert {"task", "accuracy", "density", "mask_bytes"} <= set(t)
        assert t["accuracy"] > 0.5  # 4 classes: chance is 0.25
        assert abs(t["density"] - 0.5) < 1e-3
    weights = results["num_weights"]
    assert all(t["mask_bytes"] == -(-weights // 8) for t in results["tasks"])
    assert results["avg_accuracy"] == pytest.approx(sum(t["accuracy"] for t in results["tasks"]) / 3)
    assert "synthetic" in results["data_source"]


def test_report_and_store_are_written(finished_run):
    report = (finished_run / "report.md").read_text()
    assert "accuracy.png" in report and "synthetic-0002" in report
    assert (finished_run / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    stored = []
    for path in sorted((finished_run / "store").glob("shard-*.h5")):
        with MaskFile(path) as shard:
            assert shard.verify().ok
            stored += shard.list()
    assert sorted(stored) == ["synthetic-0000", "synthetic-0001", "synthetic-0002"]


def test_rerun_skips_stored_tasks_and_evaluates_from_disk(finished_run):
    before = json.loads((finished_run / "results.json").read_text())
    assert (
        main(
            [
                "run",
                str(TASKS / "synthetic.yaml"),
                "--out",
                str(finished_run),
                "--no-progress",
                "--set",
                "stream.num_tasks=3",
            ]
        )
        == 0
    )
    after = json.loads((finished_run / "results.json").read_text())
    assert all(t["resumed_from_store"] for t in after["tasks"])
    assert [t["accuracy"] for t in after["tasks"]] == [t["accuracy"] for t in before["tasks"]]


def test_store_commands(finished_run, capsys):
    assert main(["store", "ls", str(finished_run)]) == 0
    assert "synthetic-0001" in capsys.readouterr().out
    assert main(["store", "verify", str(finished_run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(shard["ok"] for shard in report) and sum(shard["checked"] for shard in report) == 3


def test_masks_of_another_base_are_refused(finished_run, capsys):
    code = main(
        [
            "run",
            str(TASKS / "synthetic.yaml"),
            "--out",
            str(finished_run),
            "--no-progress",
            "--set",
            "stream.num_tasks=3",
            "--set",
            "base.seed=1",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "learned on base" in err


def test_bad_spec_exits_2_naming_the_field(tmp_path, capsys):
    assert (
        main(["run", str(TASKS / "synthetic.yaml"), "--set", "mask.density=7", "--out", str(tmp_path)]) == 2
    )
    assert "mask.density" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_base_actor_serves_forward_passes_for_several_tasks(finished_run):
    import numpy as np

    from supermask.learn import make_base, make_stream
    from supermask.runtime.base_actors import BaseActor
    from supermask.runtime.mask_store import MaskStore
    from supermask.spec import load_spec

    spec = load_spec(TASKS / "synthetic.yaml", ["stream.num_tasks=3"])
    stream = make_stream(spec)
    base = make_base(spec, stream)
    store = MaskStore.open(finished_run / "store")
    try:
        actor = BaseActor.remote(spec, base.fingerprint, store)
        x = stream.task(1).test_x[:8].numpy()
        logits = ray.get(actor.forward.remote(x, ["synthetic-0000", "synthetic-0001"]))
        assert set(logits) == {"synthetic-0000", "synthetic-0001"}
        assert logits["synthetic-0000"].shape == (8, 4)
        assert not np.allclose(logits["synthetic-0000"], logits["synthetic-0001"])  # different masks
        wrong = BaseActor.remote(spec, "0" * 32, store)
        with pytest.raises(ray.exceptions.RayActorError, match="fingerprint"):
            ray.get(wrong.fingerprint.remote())
    finally:
        store.close()
