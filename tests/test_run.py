"""The main job end to end on an embedded Ray: `supermask run` on the synthetic stream."""

import json
import shutil

import pytest
import ray

from conftest import SYNTHETIC
from supermask.interface.cli import main
from supermask.store.maskfile import MaskFile


def run(out, *overrides, extra=()):
    args = ["run", str(SYNTHETIC), "--out", str(out), "--no-progress", "--set", "stream.num_tasks=3"]
    for o in overrides:
        args += ["--set", o]
    return main(args + list(extra))


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert run(out) == 0
    return out


def test_results_json_has_what_programs_need(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    assert {"tasks", "avg_accuracy", "base_fingerprint", "data_source", "seconds"} <= set(results)
    assert [t["task"] for t in results["tasks"]] == ["synthetic-0000", "synthetic-0001", "synthetic-0002"]
    for t in results["tasks"]:
        assert {"task", "accuracy", "accuracy_all_outputs", "density", "mask_bytes"} <= set(t)
        assert t["accuracy_all_outputs"] == t["accuracy"]  # no superfluous outputs here
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


def test_probes_are_on_by_default_with_metrics_lines_summaries_and_plots(finished_run):
    lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    tasks = {r["task"] for r in lines}
    assert tasks == {"synthetic-0000", "synthetic-0001", "synthetic-0002"}
    steps = sorted({r["step"] for r in lines if r["task"] == "synthetic-0001"})
    assert steps[0] == 0 and steps[1] == 25 and len(steps) >= 3  # the state before training, then every 25
    later = next(r for r in lines if r["step"] == 25)
    for key in ("norm", "direction", "alignment", "step_size", "churn", "density", "saturation_cosine"):
        assert key in later, key
    probes = json.loads((finished_run / "results.json").read_text())["probes"]
    summary = probes["tasks"]["synthetic-0001"]
    assert set(summary["norm_fits"]) == {"t", "sqrt_t", "t^1/4"} and summary["norm_start"] > 0
    assert probes["probe_seconds"] > 0 and 0 < probes["overhead"] < 1
    report = (finished_run / "report.md").read_text()
    assert "## Probes" in report and "norm.png" in report and "saturation.png" in report
    for png in ("norm.png", "saturation.png"):
        assert (finished_run / png).read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_stored_tasks_and_evaluates_from_disk(finished_run):
    before = json.loads((finished_run / "results.json").read_text())
    assert (
        run(finished_run, "run.num_workers=1", "run.eval_batch_size=100") == 0
    )  # how it runs is no setting of the masks
    after = json.loads((finished_run / "results.json").read_text())
    assert all(t["resumed_from_store"] for t in after["tasks"])
    assert [t["accuracy"] for t in after["tasks"]] == [t["accuracy"] for t in before["tasks"]]


def test_store_commands(finished_run, capsys):
    assert main(["store", "ls", str(finished_run)]) == 0
    assert "synthetic-0001" in capsys.readouterr().out
    assert main(["store", "verify", str(finished_run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(shard["ok"] for shard in report) and sum(shard["checked"] for shard in report) == 3


@pytest.mark.parametrize(
    "change,named",
    [
        ("mask.density=0.1", "mask.density: 0.5 -> 0.1"),
        ("stream.seed=3", "stream.seed: 0 -> 3"),
        ("search.lr=0.05", "search.lr: 0.5 -> 0.05"),
        ("base.seed=1", "base.seed: 0 -> 1"),
    ],
)
def test_rerun_with_changed_settings_stops_before_learning(finished_run, capsys, change, named):
    """It used to skip the stored tasks and report the old masks under the new spec."""
    before = sorted(p.stat().st_mtime_ns for p in (finished_run / "store").glob("shard-*"))
    assert run(finished_run, change) == 2
    err = capsys.readouterr().err
    assert "learned with other settings" in err and named in err, err
    assert "--out" in err and "--relearn" in err
    assert sorted(p.stat().st_mtime_ns for p in (finished_run / "store").glob("shard-*")) == before


def test_relearn_replaces_masks_of_other_settings(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)  # masks learned at density 0.5
    assert run(tmp_path, "mask.density=0.25", extra=["--relearn"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(abs(t["density"] - 0.25) < 1e-3 and not t["resumed_from_store"] for t in results["tasks"])


def test_use_gpu_without_a_gpu_is_an_error_naming_the_cluster(ray_cluster, tmp_path, capsys):
    """It used to run on the CPU while holding a GPU reservation."""
    assert run(tmp_path, "run.use_gpu=true") == 2
    err = capsys.readouterr().err
    assert "run.use_gpu is true" in err and "has no GPU" in err and "nodes:" in err


def test_bad_spec_exits_2_naming_the_field(tmp_path, capsys):
    assert main(["run", str(SYNTHETIC), "--set", "mask.density=7", "--out", str(tmp_path)]) == 2
    assert "mask.density" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_bench_actor_serves_forward_passes_for_several_tasks(finished_run):
    import dataclasses

    import numpy as np

    from supermask.config.spec import load_spec
    from supermask.recipes.learners import learner_for
    from supermask.recipes.recipe import Workbench
    from supermask.runtime.bench_actors import BenchActor
    from supermask.runtime.mask_store import MaskStore

    learner = learner_for(load_spec(SYNTHETIC, ["stream.num_tasks=3"]))
    store = MaskStore.open(finished_run / "store")
    try:
        actor = BenchActor.remote(learner, store)
        x = Workbench(learner.recipe).stream.task(1).test_x[:8].numpy()
        logits = ray.get(actor.call.remote("forward", x, ["synthetic-0000", "synthetic-0001"]))
        assert set(logits) == {"synthetic-0000", "synthetic-0001"}
        assert logits["synthetic-0000"].shape == (8, 4)
        assert not np.allclose(logits["synthetic-0000"], logits["synthetic-0001"])  # different masks
        other = type(learner)(dataclasses.replace(learner.recipe, base_fingerprint="0" * 32))
        wrong = BenchActor.remote(other, store)
        with pytest.raises(ray.exceptions.RayActorError, match="fingerprint"):
            ray.get(wrong.ready.remote())
    finally:
        store.close()


def test_fine_tuning_one_network_through_the_stream_forgets_and_a_rerun_learns_nothing(
    ray_cluster, tmp_path, capsys
):
    fine_tune = ("learn=fine_tune", "mask=null", "search.lr=0.05")
    assert run(tmp_path, *fine_tune) == 0
    first = json.loads((tmp_path / "results.json").read_text())
    matrix = first["forgetting"]["accuracy_matrix"]
    assert [len(row) for row in matrix] == [1, 2, 3]  # row t: tasks 0..t after task t
    assert (
        matrix[0][0] > 0.6 and first["forgetting"]["average_forgetting"] > 0.2
    )  # the next tasks overwrite it
    assert [t["forgetting"] for t in first["tasks"]][-1] == 0.0
    capsys.readouterr()
    assert main(["store", "ls", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count(" weights dense float32 ") == 3  # records of trained weights
    assert run(tmp_path, *fine_tune) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert all(t["resumed_from_store"] for t in again["tasks"])
    assert again["forgetting"] == first["forgetting"]
