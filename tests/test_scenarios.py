"""Scenarios GNu/GNs and NNs end to end on an embedded Ray: `supermask run` and `supermask infer`."""

import json

import pytest
import yaml

from supermask.interface.cli import main
from supermask.runtime.mask_store import MaskStore

SPEC = {
    "name": "pmnist_small",
    "stream": {"name": "permuted_mnist", "num_tasks": 3, "seed": 0},
    "base": {"arch": "lenet300", "num_outputs": 500},
    "mask": {"method": "threshold"},
    "search": {"optimizer": "rmsprop", "lr": 1.0e-4, "schedule": "constant", "epochs": 1, "batch_size": 128},
    "run": {"scenario": "GNu", "shards": 2, "num_workers": 1},
    "inference": {"batch_images": 4},
}


@pytest.fixture(scope="module")
def gnu_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("gnu")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = root / "run"
    assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 0
    return spec, out


def test_run_in_gnu_reports_task_inference_apart_from_accuracy(gnu_run):
    _, out = gnu_run
    results = json.loads((out / "results.json").read_text())
    assert results["scenario"] == "GNu"
    assert results["task_inference_accuracy"] == 1.0  # 3 tasks x 8 test batches, each from its first 4 images
    assert results["inference"]["inferences"] == 24 and results["inference"]["among_masks"] == 3
    for t in results["tasks"]:
        assert t["task_inference_accuracy"] == 1.0
        assert t["inferred"] == {t["task"]: 1000}
        assert t["accuracy"] == t["gg_accuracy"] > 0.5  # the right mask for every batch: GNu equals GG
    assert results["avg_accuracy"] == pytest.approx(sum(t["accuracy"] for t in results["tasks"]) / 3)
    report = (out / "report.md").read_text()
    assert "task-inference accuracy: **1.0000**" in report and "scenario GNu" in report


def test_infer_on_a_stored_run_with_binary_search_and_shared_labels(gnu_run, capsys):
    spec, out = gnu_run
    args = ["infer", "--store", str(out), "--spec", str(spec), "--no-progress"]
    overrides = ["--set", "run.scenario=GNs", "--set", "inference.method=binary"]
    assert main(args + overrides) == 0
    printed = capsys.readouterr().out
    assert "task-inference accuracy: 1.0000" in printed
    results = json.loads((out / "infer-GNs" / "results.json").read_text())
    assert results["scenario"] == "GNs" and results["inference"]["method"] == "binary"
    assert results["task_inference_accuracy"] == 1.0
    before = json.loads((out / "results.json").read_text())
    assert [t["gg_accuracy"] for t in results["tasks"]] == [t["gg_accuracy"] for t in before["tasks"]]


def test_infer_per_sample_infers_every_image_alone(gnu_run):
    spec, out = gnu_run
    dest = out / "per-sample"
    assert (
        main(
            ["infer", "--store", str(out / "store"), "--spec", str(spec), "--no-progress", "--out", str(dest)]
            + ["--set", "inference.mode=per_sample", "--set", "stream.num_tasks=2"]
        )
        == 0
    )
    results = json.loads((dest / "results.json").read_text())
    assert results["inference"]["inferences"] == 2000 and results["inference"]["among_masks"] == 3
    assert results["task_inference_accuracy"] > 0.9  # one image at a time, after one epoch of search
    assert results["avg_accuracy"] <= sum(t["gg_accuracy"] for t in results["tasks"]) / 2


def test_infer_names_what_is_missing(gnu_run, capsys, tmp_path):
    spec, out = gnu_run
    assert main(["infer", "--store", str(tmp_path), "--spec", str(spec), "--no-progress"]) == 2
    assert "no mask store" in capsys.readouterr().err
    code = main(
        ["infer", "--store", str(out), "--spec", str(spec), "--no-progress", "--set", "stream.num_tasks=5"]
    )
    assert code == 2
    assert "no mask for 2 of the spec's 5 tasks" in capsys.readouterr().err


def test_nns_run_allocates_one_mask_per_task_without_ids(ray_cluster, tmp_path):
    spec = dict(SPEC, name="pmnist_nns", stream={"name": "permuted_mnist", "num_tasks": 5, "seed": 0})
    spec["search"] = dict(SPEC["search"], epochs=3)  # 3 x 32 batches per task
    spec["run"] = dict(SPEC["run"], scenario="NNs")
    spec["nns"] = {"check_every": 32}
    path = tmp_path / "nns.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    nns = results["nns"]
    assert nns["num_tasks"] == 5 and abs(nns["num_masks"] - 5) <= 1
    assert nns["batches"] == 5 * 96
    allocated = [c for c in nns["checks"] if c["allocated"]]
    assert len(allocated) == nns["num_masks"]
    assert results["avg_accuracy"] > 0.5  # classified with inferred masks; chance is 0.1
    assert "masks allocated for 5 tasks" in (out / "report.md").read_text()
    with MaskStore.open(out / "store") as store:
        assert len(store) == nns["num_masks"]
        assert all(t.startswith("permuted_mnist-nns-") for t in store.list())


def test_infer_validates_the_scenario_it_runs(tmp_path, capsys):
    """A GG spec is inferred as GNu; the task-inference rules are checked for GNu before anything runs
    (the scenario used to be switched after validation, so they were skipped)."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.json").write_text("{}")
    path = tmp_path / "gg.yaml"
    base = {"arch": "lenet300", "num_outputs": 10}  # no superfluous outputs for the G objective
    path.write_text(
        yaml.safe_dump({**SPEC, "base": base, "run": {"scenario": "GG"}, "inference": {"objective": "G"}})
    )
    assert main(["infer", "--store", str(tmp_path), "--spec", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "evaluating GNu" in captured.out
    assert "inference.objective: 'G' needs superfluous output neurons" in captured.err
    assert not (tmp_path / "infer-GNu").exists()
