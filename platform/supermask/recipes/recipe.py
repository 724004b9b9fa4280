"""A spec resolved once, on the driver, into a frozen `Recipe` that workers receive and build from.

Resolving makes every choice a worker must not make on its own: the data source (`auto` becomes the
source the driver found, so a worker without the files fails clearly instead of training on other
data), the base's input shape and outputs, the base fingerprint, and the provenance hash of
everything that produces a mask. A worker builds its `Workbench` (the stream and the base on its
device) once per process and checks that its base has the recipe's fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from supermask.config.kinds import spec_kind
from supermask.config.spec import RunSpec, Spec
from supermask.core.bases.networks import BaseNetwork, BaseSpec, build_base
from supermask.core.evaluate import Accuracy, evaluate_mask, stacked_accuracy
from supermask.core.hopfield.recovery import RecoveryConfig
from supermask.core.inference.nns import NNsConfig
from supermask.core.inference.one_shot import InferenceConfig
from supermask.core.masks import MaskSpec
from supermask.core.probes.probe import ProbeConfig
from supermask.core.records.packing import TaskMask
from supermask.core.records.weights import TaskWeights
from supermask.core.search.stacked_search import SearchConfig, StackedSearch, task_seed
from supermask.core.weights import WeightSpec
from supermask.data import DataConfig, Stream, StreamSpec, TaskData, stream_of
from supermask.data.datasets import resolve_root
from supermask.store.reservoir_layout import StoreSpec


class BaseFingerprintError(RuntimeError):
    """A rebuilt base whose weights differ from the ones the run was started with."""


@dataclass(frozen=True)
class Recipe:
    """Everything a worker needs, resolved: what to learn, how, and the hashes that pin it down."""

    name: str
    stream: StreamSpec
    data: DataConfig  # source resolved: never "auto"
    base: BaseSpec  # input_shape and num_outputs resolved from the stream
    mask: MaskSpec
    search: SearchConfig
    inference: InferenceConfig
    nns: NNsConfig
    run: RunSpec
    num_classes: int
    num_weights: int  # masked weights of the base (bits per mask)
    data_source: str  # where the examples come from, for reports
    base_fingerprint: str
    provenance: dict  # {"hash": ..., "fields": {...}}: what produces this recipe's masks
    store: StoreSpec = field(
        default_factory=StoreSpec
    )  # what is kept of each task (never part of provenance)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    layer_shapes: tuple[tuple[int, ...], ...] = ()  # of the base's masked weights
    probes: ProbeConfig = ProbeConfig()  # what every search of the recipe is probed with (not provenance)
    learn: str = "masks"  # the spec's learner kind
    weights: WeightSpec = WeightSpec()
    method: MaskSpec | WeightSpec = MaskSpec()  # what learns each task: `mask` or `weights`, by kind
    method_name: str = "mask"  # for messages: e.g. "mask topk" or "weights str (per_task)"

    @classmethod
    def from_spec(cls, spec: Spec) -> Recipe:
        """Resolve a validated spec (loads the dataset's metadata and builds the base once)."""
        kind = spec_kind(spec.learn)
        stream = stream_of(spec.stream, spec.data)
        # Resolved here, once: the source the driver found, and an absolute data folder (workers run
        # in folders of Ray's choosing, where a relative path would point elsewhere).
        data = dataclasses.replace(stream.resolved_data(), root=resolve_root(spec.data.root))
        stream = stream_of(spec.stream, data)
        base = stream.resolve_base(spec.base)
        built = build_base(base)
        fingerprint = built.fingerprint
        fields = {
            "stream": {"name": spec.stream.name, "seed": spec.stream.seed, "options": spec.stream.options},
            "data": stream.data_identity(),
            "base": base.to_dict(),
            "base_fingerprint": fingerprint,
            "search": {k: v for k, v in dataclasses.asdict(spec.search).items() if k != "log_every"},
            **kind.record_fields(spec),  # the method's section: what makes a mask a mask of these settings
        }
        return cls(
            name=spec.name,
            stream=spec.stream,
            data=data,
            base=base,
            mask=spec.mask,
            search=spec.search,
            inference=spec.inference,
            nns=spec.nns,
            run=spec.run,
            num_classes=stream.num_classes,
            num_weights=sum(int(w.numel()) for w in built.weights()),
            data_source=stream.data_source,
            base_fingerprint=fingerprint,
            provenance={"hash": provenance_hash(fields), "fields": plain_json(fields)},
            store=spec.store,
            recovery=spec.recovery,
            layer_shapes=tuple(tuple(int(d) for d in s) for s in built.layer_shapes),
            probes=spec.probes,
            learn=spec.learn,
            weights=spec.weights,
            method=kind.method(spec),
            method_name=kind.method_name(spec),
        )

    @property
    def scenario(self) -> str:
        return self.run.scenario

    def task_ids(self) -> list[str]:
        """The ids of every task of the stream, in order."""
        stream = stream_of(self.stream, self.data)
        return [stream.task_id(t) for t in range(self.stream.num_tasks)]


def plain_json(value):
    """A JSON round trip: tuples become lists, so stored and fresh provenance compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=list))


def provenance_hash(fields: dict) -> str:
    """blake2b of the canonical JSON of provenance fields."""
    text = json.dumps(plain_json(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def changed_fields(before: dict, now: dict, prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two provenance field mappings."""
    if isinstance(before, dict) and isinstance(now, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(now)):
            out += changed_fields(before.get(key), now.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if before == now else [prefix]


class Workbench:
    """A recipe built in one process: the stream and the frozen base on a device, built once."""

    def __init__(self, recipe: Recipe, device: str = "cpu") -> None:
        self.recipe, self.device = recipe, device
        self.stream: Stream = stream_of(recipe.stream, recipe.data)
        self.base: BaseNetwork = build_base(recipe.base, device)
        if self.base.fingerprint != recipe.base_fingerprint:
            raise BaseFingerprintError(
                f"the base rebuilt on host {socket.gethostname()} (pid {os.getpid()}) has fingerprint "
                f"{self.base.fingerprint}, but the run's is {recipe.base_fingerprint}: this node's torch or NumPy "
                "draws different weights; install the same versions on every node"
            )
        self._tasks: dict[int, TaskData] = {}
        self.cache: dict = {}  # what a learner keeps beside the bench in this process (e.g. masks on a GPU)

    def task(self, t: int) -> TaskData:
        """Task t's tensors (the last two asked for are kept: a task is searched, then evaluated)."""
        if t not in self._tasks:
            if len(self._tasks) >= 2:
                self._tasks.pop(next(iter(self._tasks)))
            self._tasks[t] = self.stream.task(t)
        return self._tasks[t]

    def new_search(self, ts: Sequence[int], **options) -> StackedSearch:
        """A search over the stack of tasks `ts` (of equal training size), not yet started.

        `options` (shard, grad_sync) make it one worker of a data-parallel search.
        """
        ts = [int(t) for t in ts]
        return StackedSearch(
            self.base,
            self.stream.stacked(ts, "train", self.device),
            self.recipe.method,
            self.recipe.search,
            seeds=[task_seed(self.recipe.search.seed, t) for t in ts],
            task_ids=[self.stream.task_id(t) for t in ts],
            num_classes=self.recipe.num_classes,
            device=self.device,
            provenance=self.recipe.provenance,
            **options,
        )

    def evaluate_stack(self, ts: Sequence[int], search: StackedSearch, split: str = "test") -> list[Accuracy]:
        """Each stacked task's accuracy with its own mask (or trained weights) as the search stands, on the
        device (scenario GG)."""
        batches = self.stream.stacked([int(t) for t in ts], split, self.device)
        trained = search.method.produces == "weights"
        return stacked_accuracy(
            self.base,
            None if trained else search.method.hard_masks(),
            search.bn_state,
            batches,
            self.recipe.num_classes,
            chunk=self.recipe.run.eval_batch_size,
            weights=search.method.effective_weights() if trained else None,
        )

    def evaluate(self, t: int, mask: TaskMask | TaskWeights, split: str = "test") -> Accuracy:
        """Accuracy of task t with a mask or trained weights (scenario GG) on the test or validation split."""
        task = self.task(t)
        x, y = (task.test_x, task.test_y) if split == "test" else (task.val_x, task.val_y)
        if x is None:
            raise ValueError("no validation split: set data.validation_fraction > 0")
        return evaluate_mask(
            self.base,
            mask,
            x,
            y,
            num_classes=self.recipe.num_classes,
            batch_size=self.recipe.run.eval_batch_size,
            device=self.device,
        )


class ProvenanceError(RuntimeError):
    """Stored masks or checkpoints made with other settings than this run's; nothing was changed."""


def _value_at(fields: dict, path: str):
    node = fields
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def stale_tasks(
    recipe: Recipe, stored: dict[str, dict], where: str, relearn: bool, what: str = "mask(s)"
) -> list[str]:
    """Ids whose stored provenance (task id, or checkpoint name, -> provenance) is not this recipe's.

    Raises ProvenanceError naming the fields that differ and the two ways out, unless `relearn`.
    """
    mine = recipe.provenance
    stale = {tid: prov for tid, prov in stored.items() if (prov or {}).get("hash") != mine["hash"]}
    if not stale or relearn:
        return sorted(stale)
    example, prov = min(stale.items())
    before = (prov or {}).get("fields")
    if before:
        paths = changed_fields(before, mine["fields"])
        differs = "; ".join(
            f"{p}: {_value_at(before, p)!r} -> {_value_at(mine['fields'], p)!r}" for p in paths[:6]
        ) + (f"; and {len(paths) - 6} more" if len(paths) > 6 else "")
    else:
        differs = "they were stored without a record of their settings, e.g. migrated from format 1"
    raise ProvenanceError(
        f"{where} holds {len(stale)} {what} (e.g. {example}) learned with other settings than this spec "
        f"({differs}). Nothing was learned or changed. Either write this run to another folder (--out NEW_FOLDER), "
        "or pass --relearn to delete those masks and learn them again with this spec"
    )
