"""Trained weights beside masks: specs, the store (never one kind as the other), fine-tuning's forgetting,
STR per task through the recipe. No Ray here: an end-to-end `supermask run` costs more than this
file's share of the CI budget, so the runtime jobs are exercised by the README's PermutedMNIST runs."""

import h5py
import numpy as np
import pytest
import torch

from conftest import SYNTHETIC
from store_helpers import SHAPES, make_mask
from supermask.config.schema import SpecError
from supermask.config.spec import load_spec, spec_from_dict
from supermask.core.bases.networks import BaseSpec, build_base
from supermask.core.records.weights import task_weights
from supermask.core.weights.magnitude import MagnitudePruning
from supermask.interface.cli import main
from supermask.recipes.learn import learn_block
from supermask.recipes.learners.fine_tune import fine_tune_task, forgetting_summary
from supermask.recipes.recipe import Recipe, Workbench
from supermask.recipes.results import TaskOutcome
from supermask.store.errors import CorruptMaskError, WrongKindError
from supermask.store.maskfile import MaskFile
from supermask.store.partitioning import open_layout, shard_path
from supermask.store.reshard import reshard_store

WEIGHTS = ["learn=weights", "mask=null", "base.init=kaiming_normal", "search.lr=0.1"]


def spec_of(*overrides):
    return load_spec(SYNTHETIC, ["stream.num_tasks=2", *overrides])


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["weights.method=str"], "weights: set, but learn is 'masks'"),
        (["learn=weights", "mask=null", "weights.method=lottery"],
         "weights.method: got 'lottery'; known: dense, magnitude, str"),
        (["learn=weight"], "learn: got 'weight'; allowed: fine_tune, masks, translation, weights"),
        (["learn=weights", "mask=null", "weights.dtype=int8"], "weights.dtype: got 'int8'; allowed: float32, float16"),
        (["learn=weights", "mask=null", "weights.method=str", "weights.options.target=0.9"],
         "weights.options.target: not an option of weight method 'str'; allowed: init_s (default -8.0)"),
        (["learn=weights", "mask=null", "weights.method=str", "weights.options.target_sparsity=1.5"],
         "weights.options.target_sparsity: got 1.5; must be in [0, 1)"),
        (["learn=weights", "mask=null", "weights.method=magnitude", "weights.options.policy=random"],
         "weights.options.policy: got 'random'; allowed: uniform, erdos_renyi, global"),
        (["learn=weights", "mask=null", "run.scenario=GNu"],
         "run.scenario: got 'GNu'; trained weights are evaluated with the task id"),
        # a section or run field the kind does not read is refused, naming the field and the kind
        (["learn=weights"], "mask: set, but learn is 'weights', which learns a network trained per task and does "
         "not read it; remove the mask section (on the command line: --set mask=null)"),
        (["learn=fine_tune", "mask=null", "run.strategy=data_parallel"],
         "run.strategy: got 'data_parallel', but learn 'fine_tune' does not read it (fine_tune trains one network "
         "through the stream, task after task, in one process); remove it"),
        (["learn=fine_tune", "mask=null", "run.tasks_per_worker=4"],
         "run.tasks_per_worker: got 4, but learn 'fine_tune' does not read it"),
        (["learn=fine_tune", "mask=null", "run.num_workers=2"], "run.num_workers: got 2, but learn 'fine_tune'"),
        (["learn=weights", "mask=null", "inference.objective=G"], "inference: set, but learn is 'weights'"),
        # a spec written before `learn` said the kind alone: what to write instead
        (["learn=weights", "mask=null", "weights.mode=fine_tune"],
         "weights.mode: got 'fine_tune'; the learner kind is said once, in `learn`, so weights.mode is gone: "
         "write learn: fine_tune instead of learn: weights, and remove weights.mode"),
        (["learn=weights", "mask=null", "weights.mode=per_task"],
         "remove weights.mode: learn: weights trains one network per task"),
    ],
)  # fmt: skip
def test_bad_weight_specs_fail_up_front_naming_field_value_and_what_is_allowed(overrides, named):
    with pytest.raises(SpecError) as error:
        spec_of(*overrides)
    assert named in str(error.value)


def test_a_weights_spec_keeps_mask_provenance_apart():
    masks, weights = Recipe.from_spec(spec_of()), Recipe.from_spec(spec_of(*WEIGHTS))
    assert "mask" in masks.provenance["fields"] and "weights" not in masks.provenance["fields"]
    assert (
        weights.provenance["fields"]["weights"]["method"] == "dense"
        and "mask" not in weights.provenance["fields"]
    )
    assert weights.method_name == "weights dense (per_task)"
    assert weights.provenance["fields"]["weights"]["mode"] == "per_task"  # as records always recorded it
    dumped = spec_from_dict(
        spec_of(*WEIGHTS, "weights.options.target_sparsity=0.5", "weights.method=str").to_dict()
    )
    assert dumped.weights.options == {"target_sparsity": 0.5}


def test_fine_tuning_forgets_while_masks_do_not():
    bench = Workbench(Recipe.from_spec(spec_of(*WEIGHTS, "learn=fine_tune", "search.epochs=15")))
    first, _ = fine_tune_task(bench, 0, None)
    second, _ = fine_tune_task(bench, 1, first)
    with pytest.raises(ValueError, match="must start from the network of task 1"):
        fine_tune_task(bench, 2, first)
    outcomes = [TaskOutcome(t, r.task_id) for t, r in enumerate((first, second))]
    summary = forgetting_summary([first, second], outcomes)
    assert second.metrics["fine_tuned_from"] == first.task_id
    assert outcomes[0].accuracy_after_own_task > 0.7  # 4 classes: chance is 0.25
    assert outcomes[0].accuracy < outcomes[0].accuracy_after_own_task - 0.2  # task 0 forgotten
    assert summary["accuracy_matrix"][1][1] > 0.7 and summary["average_forgetting"] == outcomes[0].forgetting

    masks = Workbench(Recipe.from_spec(spec_of("search.epochs=15")))
    frozen = [w.clone() for w in masks.base.weights()]
    (mask0,) = learn_block(masks, [0]).records
    own = masks.evaluate(0, mask0).real_classes
    learn_block(masks, [1])
    assert own > 0.7 and masks.evaluate(0, mask0).real_classes == own  # its mask and the base are untouched
    assert all(torch.equal(a, b) for a, b in zip(frozen, masks.base.weights(), strict=True))


def weights_record(task_id="w", dtype="float16"):
    base = build_base(
        BaseSpec(arch="mlp", input_shape=(SHAPES[0][1],), num_outputs=3, options={"widths": [40]})
    )
    method = MagnitudePruning(base.weights(), target_sparsity=0.9, policy="erdos_renyi")
    method.finalize()
    weights = [w[0] for w in method.effective_weights()]
    return task_weights(task_id, "magnitude", base, weights, dtype=dtype, metrics={"test_accuracy": 0.5})


def test_a_stored_trained_weights_record_cannot_be_loaded_as_a_mask(tmp_path, capsys):
    path = tmp_path / "store" / "shard-000.h5"
    record, mask = weights_record(), make_mask("m")
    with MaskFile(path) as store:
        assert store.put(record) and store.put(mask) and not store.put(record)  # idempotent
        with pytest.raises(WrongKindError, match="holds a record of kind 'weights', not 'mask'"):
            store.get("w")
        with pytest.raises(WrongKindError, match="get_weights"):
            store.get_many(["m", "w"])
        with pytest.raises(WrongKindError, match="holds a record of kind 'mask', not 'weights'"):
            store.get_weights("m")
        assert store.get_weights("w").checksum == record.checksum  # from the journal
        assert store.mask_sum()[1] == 1  # sums and scores see masks only
    with MaskFile(path) as store:  # compacted into the snapshot on close, read back from there
        back = store.get_weights("w")
        assert back.checksum == record.checksum and back.dtype == "float16"
        assert all(np.array_equal(a, b) for a, b in zip(back.values, record.values, strict=True))
        described = store.describe(["w"])["w"]
        assert described["kind"] == "weights" and described["method"] == "magnitude"
        assert described["stored_bytes"] < described["dense_bytes"] and described["mask_bytes"] is None
        assert described["sparsity"] == pytest.approx(record.sparsity)
        assert store.stats()["kinds"] == {"mask": 1, "weights": 1}
        assert store.verify().ok
    assert main(["store", "ls", str(path)]) == 0
    out = capsys.readouterr().out
    assert "weights magnitude float16 sparsity 0.9" in out and f"of {record.dense_bytes:,} dense" in out
    assert main(["store", "info", str(path)]) == 0
    assert "weights_methods: {'magnitude float16': 1}" in capsys.readouterr().out
    with h5py.File(path, "r+") as f:  # a value changed on disk: named, never returned
        values = next(k for k in f["masks/w"] if k.startswith("layer"))
        f[f"masks/w/{values}/values"][0] += 1
    with MaskFile(path) as store:
        with pytest.raises(CorruptMaskError, match="changed since it was written: array/layer"):
            store.get_weights("w")


def test_weights_records_move_with_a_reshard(tmp_path):
    root = tmp_path / "store"
    open_layout(root, 1)
    with MaskFile(shard_path(root, 0)) as store:
        for i in range(6):
            store.put(weights_record(f"w{i}", dtype="float32"))
    reshard_store(root, 3)
    found = {}
    for shard in sorted(root.glob("shard-*.h5")):
        with MaskFile(shard) as store:
            found |= {t: store.get_weights(t).checksum for t in store.list()}
    assert found == {f"w{i}": weights_record(f"w{i}", dtype="float32").checksum for i in range(6)}


def test_str_per_task_through_the_recipe_lands_on_its_target_and_stores_sparse():
    target = ["weights.method=str", "weights.options.target_sparsity=0.8", "weights.dtype=float16"]
    bench = Workbench(Recipe.from_spec(spec_of(*WEIGHTS, *target, "search.epochs=10")))
    records = learn_block(bench, [0, 1]).records
    for record in records:
        assert record.kind == "weights" and record.method == "str" and record.dtype == "float16"
        assert record.sparsity == pytest.approx(0.8, abs=0.005)
        assert record.metrics["test_accuracy"] > 0.5  # 4 classes: chance is 0.25
        assert record.stored_bytes() < 0.5 * record.dense_bytes  # sparse fp16, below dense fp16
