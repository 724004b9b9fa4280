"""The sections of a task spec as dataclasses: `Spec` and the config layer's own `RunSpec`.

Every other section is the settings dataclass of the layer that uses it (`StreamSpec`, `DataConfig`,
`BaseSpec`, `MaskSpec`, `SearchConfig`, `InferenceConfig`, `NNsConfig`, `StoreSpec`,
`RecoveryConfig`, `ProbeConfig`, `WeightSpec`, `TranslationSettings`), so each default is written
once. Which sections a spec may set, and the rules that tie them together, depend on its learner
kind (`learn`): see config/kinds/ and config/spec.py.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from supermask.core.bases.networks import BaseSpec
from supermask.core.fields import choices, in_range
from supermask.core.hopfield.recovery import RecoveryConfig
from supermask.core.inference.nns import NNsConfig
from supermask.core.inference.one_shot import InferenceConfig
from supermask.core.masks import MaskSpec
from supermask.core.probes.probe import ProbeConfig
from supermask.core.search.stacked_search import SearchConfig
from supermask.core.translation.settings import TranslationSettings
from supermask.core.weights import WeightSpec
from supermask.data import DataConfig, StreamSpec
from supermask.store.partitioning import DEFAULT_SHARDS
from supermask.store.reservoir_layout import StoreSpec

SCENARIOS = ("GG", "GNs", "GNu", "NNs")
GN_SCENARIOS = ("GNs", "GNu")
STRATEGIES = ("task_parallel", "data_parallel")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # the task-id alphabet: a name is a folder under runs/
COMMON_SECTIONS = ("stream", "data", "run", "probes")  # what every learner kind reads


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
    shards: int = field(default=DEFAULT_SHARDS, metadata=in_range(1))
    # Seconds of work between a block's checkpoints. None: as often as keeps checkpoints under 5% of
    # the time (none in a block's first 10 s); 0: never.
    checkpoint_seconds: float | None = field(default=None, metadata=in_range(0.0))
    max_failures: int = field(default=3, metadata=in_range(-1))  # worker-group restarts Ray Train may make
    storage_path: str | None = None  # Ray Train's storage (shared storage on a cluster); default OUT/train
    eval_batch_size: int = field(default=1000, metadata=in_range(1))


@dataclass
class Spec:
    """A validated task-stream spec: what kind of learner (`learn`), what it learns and how it runs."""

    name: str = "run"
    # The learner kind, said once: masks (supermasks over the frozen base), weights (a network trained
    # per task), fine_tune (one network through the stream) or translation (GANimorph tasks).
    learn: str = "masks"
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
    weights: WeightSpec = field(default_factory=WeightSpec)
    translation: TranslationSettings = field(default_factory=TranslationSettings)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["base"].pop("input_shape")  # resolved from the stream, never written in a spec
        for key in ("resolution", "channels"):  # likewise
            d["translation"].pop(key)
        return d


SECTIONS = tuple(f.name for f in dataclasses.fields(Spec) if f.name not in ("name", "learn"))
