"""The learner protocol: what one kind of learner tells the generic job, worker loop, sweep trial and
report (no Ray here).

A learner is built from a validated spec (`from_spec`: the spec resolved into its recipe) and is
picklable, so Ray hands the same object to every process. The runtime never asks which kind it
runs; it calls the learner:

- where its records go: `open_store` (from the store clients the runtime opens by kind),
  `prepare` (refuse or delete records and checkpoints of other settings; the tasks left to learn);
- how its work is scheduled: `schedule` (Ray Train over blocks, or one Ray task for the whole stream),
  `plan` (the blocks), `max_train_workers`, `stack_bytes`, `data_parallel` (a rank's sync options);
- how a block is learned: `bench` (what a process builds once), `learn_block` (the records of a block,
  measured), `stored_fields` (what the run's event log says of a stored record);
- how it is evaluated: `evaluate` (after learning), `infer` (over a stored run, if the kind can);
- what a sweep trial advances and reports: `trial`.

Which spec sections and fields a kind reads is declared beside its validation rules, in
config/kinds/ (`kind`); adding a kind adds one module there, one here and one report section.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from supermask.config.kinds import SpecKind, spec_kind
from supermask.config.spec import RunSpec, Spec
from supermask.core.registry import Registry
from supermask.recipes.checkpoints import check_checkpoints
from supermask.recipes.learn import BlockOutcome, CheckpointPolicy, block_name
from supermask.recipes.recipe import stale_tasks
from supermask.recipes.results import JobResult, TaskOutcome

log = logging.getLogger(__name__)

# (store kind, root, options) -> an open store client; the runtime's, handed to `Learner.open_store`
OpenClient = Callable[..., Any]


class Schedule(enum.Enum):
    """How a learner's tasks run on Ray (the runtime has one way to run each)."""

    TRAIN = "train"  # Ray Train workers learn blocks of tasks (task- or data-parallel, per run.strategy)
    ONE_TASK = "one_task"  # one Ray task learns (and evaluates) the whole stream: `learn_stream`


@dataclass
class BlockContext:
    """What the worker loop hands a learner with each block: where it writes, and whom it tells."""

    out_dir: Path
    checkpoint: Path | None = None
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    lead: bool = True  # the rank that measures, checkpoints and logs (every rank of a task-parallel run)
    store: Any = None  # for reading earlier records (fine-tuning starts from the previous task's network)
    log: Callable[..., None] = lambda event, **fields: None  # log(event, **fields) into the run's events
    progress: Callable[[int, int], None] | None = None  # (step, steps) of the block, as it goes
    probe_sink: Callable[[list[dict]], None] | None = None  # where probe records go (None: no probes)
    on_start: Callable[[int], None] | None = None  # the block starts (or resumes) at this step
    sync: dict = field(default_factory=dict)  # a data-parallel rank's options (Learner.data_parallel)


@dataclass
class Evaluation:
    """What the generic job hands a learner once its tasks are learned (or, for `infer`, found stored)."""

    store: Any
    ids: list[str]
    outcomes: dict[int, TaskOutcome]  # task index -> its outcome, to fill in
    result: JobResult
    progress: bool = True
    # (method name, items, workers=, desc=, units=) -> each item's output of learner.<method>(bench, store,
    # item), computed on a pool of Ray actors that each build the learner's bench once
    on_benches: Callable[..., list] | None = None
    workers: Callable[[int], int] = lambda n: 1  # how many bench actors would serve n items
    learned: Any = None  # what `learn_stream` returned (Schedule.ONE_TASK)


class TrialWork(Protocol):
    """One sweep trial's tasks, advanced and measured one reported epoch at a time."""

    planned: int  # epochs the trial reports at most
    headline: tuple[str, ...]  # metrics each epoch's event repeats

    def advance(self, epoch: int) -> None: ...

    def metrics(self, epoch: int) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


LEARNERS: Registry[type[Learner]] = Registry("learner")


def register_learner(cls: type[Learner]) -> type[Learner]:
    """Class decorator: add a learner to LEARNERS under its `name` (the value of `learn` in a spec)."""
    return LEARNERS.register(cls.name)(cls)


class Learner:
    """One kind of learner, the plug-in the generic runtime calls (see the module doc)."""

    name: ClassVar[str]
    progress_label: ClassVar[str] = "learning"  # the progress bar's description
    max_train_workers: ClassVar[int | None] = None  # most Ray Train workers (1: one process, task after task)
    records_noun: ClassVar[str] = "record(s)"  # what its records are called in messages

    def __init__(self, recipe: Any) -> None:
        self.recipe = recipe

    @classmethod
    def from_spec(cls, spec: Spec) -> Learner:
        """The learner of a validated spec, its recipe resolved (on the driver)."""
        raise NotImplementedError

    @property
    def kind(self) -> SpecKind:
        """The spec rules of this learner's kind (config/kinds/)."""
        return spec_kind(self.name)

    @property
    def run(self) -> RunSpec:
        return self.recipe.run

    @property
    def schedule(self) -> Schedule:
        return Schedule.TRAIN

    def task_ids(self) -> list[str]:
        return self.recipe.task_ids()

    def describe_strategy(self) -> str:
        """How the run learns, for results.json's `strategy`."""
        return self.run.strategy

    def resolved_lines(self) -> list[str]:
        """What resolving the spec decided, as `supermask run --check` prints it."""
        return []

    # -- the store -------------------------------------------------------------

    def open_store(self, root: Path, open_client: OpenClient, create: bool = True) -> Any:
        """The store the learner keeps its records in, opened with the runtime's clients."""
        raise NotImplementedError

    def store_shards(self, store: Any) -> int:
        """Shard actors of the store, for the report."""
        return store.layout.num_shards

    def prepare(self, store: Any, ids: list[str], out_dir: Path, relearn: bool) -> list[int]:
        """Refuse (with relearn, delete) records and checkpoints of other settings; the task indices to learn."""
        refuse_stale_records(self.recipe, store, ids, relearn, self.records_noun)
        check_checkpoints(self.recipe, out_dir / "checkpoints", relearn)
        missing = set(store.missing(ids))
        return [t for t, tid in enumerate(ids) if tid in missing]

    # -- scheduling and learning ------------------------------------------------

    def stack_bytes(self) -> int | None:
        """Planned device memory of one task in a stacked block (None: one task per block)."""
        return None

    def plan(self, todo: list[int], workers: int, most: int) -> list[list[int]]:
        """The blocks (task indices) to learn: one task each, in order, unless the learner stacks tasks."""
        return [[t] for t in todo]

    def checkpoint_name(self, ids: Sequence[str]) -> str:
        """The checkpoint file's name (without .pt) of the block of these task ids."""
        return block_name(ids)

    def bench(self, device: str) -> Any:
        """What a process builds once to learn or evaluate the recipe's tasks (its stream and networks)."""
        raise NotImplementedError

    def learn_block(self, bench: Any, block: list[int], ctx: BlockContext) -> BlockOutcome:
        """Learn the tasks of one block, measured; their records (for the store, on the lead rank)."""
        raise NotImplementedError

    def data_parallel(self, rank: int, world: int, device: str) -> dict:
        """A data-parallel rank's options for `learn_block` (ctx.sync): its shard and how it averages."""
        raise NotImplementedError(f"learn {self.name!r} has no data-parallel learning")

    def stored_fields(self, record: Any) -> dict:
        """What the event of a stored record says of it (a `summary` string shows in the progress bar)."""
        return {}

    def learn_stream(self, bench: Any) -> Any:
        """Schedule.ONE_TASK: learn (and evaluate) the whole stream in one process."""
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------

    def evaluate(self, ev: Evaluation) -> None:
        """Fill the outcomes and the result from the stored records (and what `learn_stream` returned)."""
        raise NotImplementedError

    def infer(self, ev: Evaluation) -> None:
        """`supermask infer`: evaluate a stored run without learning."""
        raise NotImplementedError(f"learn {self.name!r} has no task inference to evaluate")

    # -- sweeps -----------------------------------------------------------------------

    def trial(self, bench: Any, sweep: Any) -> TrialWork:
        """A sweep trial of the recipe's tasks on `bench`, scored for `sweep`."""
        raise NotImplementedError


def refuse_stale_records(
    recipe: Any, store: Any, ids: list[str], relearn: bool, what: str = "mask(s)"
) -> None:
    """Refuse stored records of other settings than the recipe's (ProvenanceError), or with relearn delete them."""
    missing = set(store.missing(ids))
    described = store.describe([t for t in ids if t not in missing])
    stored = {tid: d.get("provenance") or {} for tid, d in described.items()}
    for tid in stale_tasks(recipe, stored, f"the store at {store.root}", relearn, what):
        log.warning("deleting %s: it was learned with other settings (--relearn)", tid)
        store.delete(tid)
