"""Token streams through the platform: specs resolve the transformer base from the stream, refuse what
cannot run, and a stacked mask search over the frozen random transformer learns with per-position losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supermask.config.schema import SpecError
from supermask.config.spec import load_spec, spec_from_dict
from supermask.core.search.losses import IGNORE_INDEX, labelled, stacked_correct, stacked_losses
from supermask.data import build_stream
from supermask.recipes.recipe import Recipe, Workbench

DYCK = {
    "name": "formal_languages",
    "num_tasks": 2,
    "options": {"languages": ["dyck1", "dyck2"], "train_size": 64},
}
TRANSFORMER = {"arch": "transformer", "options": {"d_model": 16, "d_ff": 32, "causal": True}}


def spec(**sections):
    return spec_from_dict({"name": "t", "stream": DYCK, "base": TRANSFORMER, **sections})


def test_the_stream_fixes_the_transformer_vocabulary_and_output():
    recipe = Recipe.from_spec(spec(stream={**DYCK, "options": {**DYCK["options"], "target": "next"}}))
    assert recipe.base.options["vocab_size"] == 6 and recipe.base.options["output"] == "tokens"
    assert recipe.base.input_shape == (33,) and recipe.base.num_outputs == 6
    assert Recipe.from_spec(spec()).base.options["output"] == "sequence"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"base": {"arch": "mlp"}}, "use base.arch transformer"),
        ({"stream": {"name": "synthetic", "num_tasks": 1}}, "reads token ids"),
        ({"base": {**TRANSFORMER, "options": {"vocab_size": 9}}}, "base.options.vocab_size"),
        ({"run": {"scenario": "GNu"}}, "not implemented for token streams"),
        ({"probes": {"every": -1}}, "probes.every"),
        ({"probes": {"evry": 3}}, "did you mean 'every'"),
    ],
)
def test_specs_that_cannot_run_fail_up_front_naming_the_field(sections, message):
    with pytest.raises(SpecError, match=message):
        spec(**sections)


def test_every_token_spec_in_tasks_validates():
    for name in ("formal_languages", "formal_languages_next", "pydoc_chars"):
        assert load_spec(f"tasks/{name}.yaml").base.arch == "transformer"


def test_per_position_loss_and_accuracy_count_labelled_positions_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    y = torch.randint(0, 5, (2, 3, 4), generator=g)
    y[0, :, 2:] = IGNORE_INDEX  # task 0: half its positions are padding
    for k in range(2):
        expected = F.cross_entropy(logits[k].reshape(-1, 5), y[k].reshape(-1), ignore_index=IGNORE_INDEX)
        assert stacked_losses(logits, y)[k] == pytest.approx(float(expected), rel=1e-6)
        real = y[k] != IGNORE_INDEX
        assert stacked_correct(logits, y)[k] == int((logits[k].argmax(-1) == y[k])[real].sum())
    assert labelled(y).tolist() == [6.0, 12.0]
    flat = torch.randint(0, 5, (2, 3), generator=g)  # one label per example: the plain mean, as always
    assert torch.equal(
        stacked_losses(logits[:, :, 0], flat),
        F.cross_entropy(logits[:, :, 0].flatten(0, 1), flat.flatten(), reduction="none").view(2, 3).mean(1),
    )


@pytest.mark.parametrize("target", ["membership", "next"])
def test_a_stacked_mask_search_over_the_frozen_transformer_runs_and_evaluates(target):
    torch.manual_seed(0)
    stream = {**DYCK, "options": {**DYCK["options"], "target": target}}
    recipe = Recipe.from_spec(spec(stream=stream, search={"iterations": 6, "batch_size": 16, "lr": 0.1}))
    bench = Workbench(recipe)
    search = bench.new_search([0, 1])
    masks = search.run()
    assert all(torch.isfinite(torch.tensor(m.metrics["train_curve"]["loss"])).all() for m in masks)
    stacked = bench.evaluate_stack([0, 1], search)
    alone = [bench.evaluate(t, m) for t, m in zip([0, 1], masks)]  # the stored bits, one task at a time
    assert [a.real_classes for a in stacked] == pytest.approx([a.real_classes for a in alone], abs=1e-6)
    assert 0.0 < alone[0].real_classes < 1.0


def test_validation_split_of_per_position_labels_is_seeded_and_disjoint():
    stream = build_stream(
        "pydoc_chars", num_tasks=2, seq_len=16, train_size=40, test_size=8, data={"validation_fraction": 0.25}
    )
    a, b = stream.task(1), stream.task(1)
    assert len(a.val_x) == 10 and len(a.train_x) == 30 and torch.equal(a.val_x, b.val_x)
    assert a.val_y.shape == (10, 16)
