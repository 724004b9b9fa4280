"""Task-stream specs: YAML in, a validated `Spec` out, with `--set a.b=c` overrides.

A spec's sections are the settings dataclasses of the layers that use them (`StreamSpec`,
`DataConfig`, `BaseSpec`, `MaskSpec`, `SearchConfig`, `InferenceConfig`, `NNsConfig`), so each
default is written once; `RunSpec` (how the job runs) is the config layer's own. Everything is
checked before anything runs, cross-field rules included (options against the architecture and the
mask method, outputs against the stream's classes, density against the method, inference against
BatchNorm).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from supermask.config.reservoir_checks import check_reservoir_fields
from supermask.config.schema import SpecError, apply_overrides, build, read_yaml
from supermask.config.translation_spec import check_translation_spec
from supermask.core.bases.networks import ARCHITECTURES, BaseSpec, check_base_options, uses_batchnorm
from supermask.core.fields import check_options, choices, in_range
from supermask.core.hopfield.recovery import RecoveryConfig
from supermask.core.inference.nns import NNsConfig
from supermask.core.inference.one_shot import InferenceConfig
from supermask.core.masks import MASK_METHODS, MaskSpec, check_mask_spec
from supermask.core.probes.probe import ProbeConfig
from supermask.core.search.stacked_search import SearchConfig
from supermask.core.translation.settings import TranslationSettings
from supermask.core.weights import WEIGHT_METHODS, WeightSpec, check_weight_spec
from supermask.data import STREAMS, DataConfig, StreamSpec, stream_of, stream_options
from supermask.data.translation_streams import is_translation_stream
from supermask.store.reservoir_layout import StoreSpec

__all__ = ["RunSpec", "Spec", "SpecError", "dump_spec", "load_spec", "spec_from_dict"]

SCENARIOS = ("GG", "GNs", "GNu", "NNs")
LEARN = ("masks", "weights")  # what a run learns: supermasks over the frozen base, or trained weights
GN_SCENARIOS = ("GNs", "GNu")
STRATEGIES = ("task_parallel", "data_parallel")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # the task-id alphabet: a name is a folder under runs/


@dataclass
class RunSpec:
    """How the job runs on Ray: the `run` section (never part of a mask's provenance)."""

    scenario: str = field(default="GG", metadata=choices(*SCENARIOS))
    out: str | None = None  # default runs/<spec name>
    # task_parallel: each Ray Train worker searches its own tasks; data_parallel: all workers share
    # every task's batches (DDP-style gradient averaging), one task after another.
    strategy: str = field(default="task_parallel", metadata=choices(*STRATEGIES))
    num_workers: int | None = field(default=None, metadata=in_range(1))  # None: one per CPU (or per GPU)
    use_gpu: bool = False
    # Most tasks one worker searches as one stack. None: from the device's free memory and the base's
    # size (on a CPU, where stacking does not speed a step up, enough to give every worker work).
    tasks_per_worker: int | None = field(default=None, metadata=in_range(1))
    threads_per_worker: int = field(default=1, metadata=in_range(1))
    # float32 matmuls: highest (exact), high (TF32 on GPUs that have it) or medium (bf16)
    matmul_precision: str = field(default="highest", metadata=choices("highest", "high", "medium"))
    # mask-store shard actors (fixed once a store exists)
    shards: int = field(default=2, metadata=in_range(1))
    # Seconds of work between a block's checkpoints. None: as often as keeps checkpoints under 5% of
    # the time (none in a block's first 10 s); 0: never.
    checkpoint_seconds: float | None = field(default=None, metadata=in_range(0.0))
    max_failures: int = field(default=3, metadata=in_range(-1))  # worker-group restarts Ray Train may make
    storage_path: str | None = None  # Ray Train's storage (shared storage on a cluster); default OUT/train
    eval_batch_size: int = field(default=1000, metadata=in_range(1))


@dataclass
class Spec:
    """A validated task-stream spec: what to learn (stream, data, base, mask, search) and how to run it."""

    name: str = "run"
    learn: str = field(default="masks", metadata=choices(*LEARN))
    stream: StreamSpec = field(default_factory=StreamSpec)
    data: DataConfig = field(default_factory=DataConfig)
    base: BaseSpec = field(default_factory=BaseSpec)
    mask: MaskSpec = field(default_factory=MaskSpec)
    search: SearchConfig = field(default_factory=SearchConfig)
    run: RunSpec = field(default_factory=RunSpec)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    nns: NNsConfig = field(default_factory=NNsConfig)
    store: StoreSpec = field(default_factory=StoreSpec)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    probes: ProbeConfig = field(
        default_factory=ProbeConfig
    )  # norm, churn and saturation probes (every: 0 = off)
    weights: WeightSpec = field(default_factory=WeightSpec)  # with learn: weights
    translation: TranslationSettings = field(default_factory=TranslationSettings)  # translation streams

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["base"].pop("input_shape")  # resolved from the stream, never written in a spec
        for key in ("resolution", "channels"):  # likewise
            d["translation"].pop(key)
        return d


def _check_cross_fields(spec: Spec) -> None:
    """The rules that tie fields of different sections together; SpecError naming the field."""
    if not NAME.fullmatch(spec.name) or set(spec.name) == {"."}:
        raise SpecError(
            f"name: got {spec.name!r}; a name is the run's folder under runs/: use 1-128 characters from "
            "A-Z a-z 0-9 _ . - (not only dots)"
        )
    if spec.stream.name not in STREAMS:
        raise SpecError(f"stream.name: got {spec.stream.name!r}; known: {', '.join(STREAMS.names())}")
    try:
        owner = f"stream {spec.stream.name!r}"
        check_options(
            "stream.options", owner, spec.stream.options, stream_options(spec.stream.name), typed=False
        )
    except ValueError as e:
        raise SpecError(str(e)) from None
    try:
        stream = stream_of(spec.stream, spec.data)  # reads no data
    except ValueError as e:
        raise SpecError(f"stream: {e}") from None
    if is_translation_stream(spec.stream.name):
        return check_translation_spec(spec, stream)
    if spec.translation != TranslationSettings():
        raise SpecError(
            f"translation: stream {spec.stream.name!r} is not a translation stream; remove the translation "
            f"section (it applies to streams {', '.join(n for n in STREAMS.names() if is_translation_stream(n))})"
        )
    if spec.base.arch not in ARCHITECTURES:
        raise SpecError(f"base.arch: got {spec.base.arch!r}; known: {', '.join(ARCHITECTURES.names())}")
    if spec.mask.method not in MASK_METHODS:
        raise SpecError(f"mask.method: got {spec.mask.method!r}; known: {', '.join(MASK_METHODS.names())}")
    try:
        check_base_options(spec.base)
        check_mask_spec(spec.mask)
        stream.resolve_base(spec.base)  # the stream's inputs against what the architecture reads
    except ValueError as e:
        raise SpecError(str(e)) from None
    if stream.input_dtype != torch.float32 and spec.run.scenario != "GG":
        raise SpecError(
            f"run.scenario: got {spec.run.scenario!r}; task inference (GNs, GNu, NNs) is not implemented for "
            f"token streams such as {spec.stream.name!r}: use GG"
        )
    _check_weights(spec)
    if spec.search.epochs is None and spec.search.iterations is None:
        raise SpecError("search: set search.epochs or search.iterations (the search's budget)")
    classes = stream.num_classes
    outputs = spec.base.num_outputs
    if outputs is not None and outputs < classes:
        raise SpecError(
            f"base.num_outputs: got {outputs}; stream {spec.stream.name!r} has {classes} classes per task, so "
            f"the base needs at least {classes} outputs (leave it unset for exactly {classes})"
        )
    infers = spec.run.scenario in (*GN_SCENARIOS, "NNs")
    if infers and spec.inference.objective == "G" and (outputs is None or outputs <= classes):
        raise SpecError(
            f"inference.objective: 'G' needs superfluous output neurons, but base.num_outputs is "
            f"{outputs}; set base.num_outputs above the stream's {classes} classes (SupSup uses 500) or use 'H'"
        )
    if infers and spec.inference.mode == "per_sample" and uses_batchnorm(spec.base):
        raise SpecError(
            f"inference.mode: 'per_sample' infers each image alone, but base {spec.base.arch!r} has BatchNorm, "
            "whose batch statistics need more than one image: use mode per_batch with batch_images >= 2, "
            "or set base.batchnorm: false"
        )
    if (
        infers
        and spec.inference.mode == "per_batch"
        and uses_batchnorm(spec.base)
        and spec.inference.batch_images < 2
    ):
        raise SpecError(
            f"inference.batch_images: got {spec.inference.batch_images}; base {spec.base.arch!r} has BatchNorm, "
            "whose batch statistics need at least 2 images per inference"
        )


def _check_weights(spec: Spec) -> None:
    """The `weights` section against `learn` and the scenario; SpecError naming the field."""
    if spec.learn == "masks":
        if spec.weights != WeightSpec():
            raise SpecError(
                "weights: set, but learn is 'masks' (the default), so it would be ignored; add learn: weights "
                "to train weights, or remove the weights section"
            )
        return
    if spec.weights.method not in WEIGHT_METHODS:
        raise SpecError(
            f"weights.method: got {spec.weights.method!r}; known: {', '.join(WEIGHT_METHODS.names())}"
        )
    try:
        check_weight_spec(spec.weights)
    except ValueError as e:
        raise SpecError(str(e)) from None
    if spec.run.scenario != "GG":
        raise SpecError(
            f"run.scenario: got {spec.run.scenario!r}; trained weights are evaluated with the task id (GG): "
            "task inference (GNs, GNu, NNs) chooses among masks over one base. Set run.scenario: GG, or "
            "learn: masks"
        )
    if spec.weights.mode == "fine_tune" and spec.run.strategy != "task_parallel":
        raise SpecError(
            "run.strategy: fine_tune trains one network through the stream, task after task, in one "
            "process; data_parallel is for learn: weights with weights.mode: per_task"
        )


def spec_from_dict(data: dict, overrides: list[str] = ()) -> Spec:
    """Validate a raw mapping (plus overrides) into a `Spec`."""
    spec = build(Spec, apply_overrides(data or {}, list(overrides)), "")
    _check_cross_fields(spec)
    check_reservoir_fields(spec)
    return spec


def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    """Read a YAML spec file, apply `--set` overrides and validate it."""
    path = Path(path)
    data = read_yaml(path, "spec", "tasks/permuted_mnist.yaml")
    data.setdefault("name", path.stem)
    return spec_from_dict(data, overrides)


def dump_spec(spec: Spec) -> str:
    """The spec as YAML, loadable by `load_spec`."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
