"""What a job or a sweep produced, as plain dataclasses that reports read (no Ray here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InferenceOutcome:
    """Task inference and classification counts of one task's test samples."""

    index: int
    task_id: str
    samples: int = 0
    task_correct: int = 0  # samples whose inferred task is their own
    correct: int = 0  # samples right in the scenario (GNs: class; GNu: task and class)
    gg_correct: int = 0  # samples right with their own task's mask
    inferences: int = 0  # groups whose task was inferred
    inferred: dict[str, int] = field(default_factory=dict)  # inferred task id -> samples
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.samples, 1)

    @property
    def task_inference_accuracy(self) -> float:
        return self.task_correct / max(self.samples, 1)

    @property
    def gg_accuracy(self) -> float:
        return self.gg_correct / max(self.samples, 1)


@dataclass
class TaskOutcome:
    """One task of a run: how it was learned and how it scored."""

    index: int
    task_id: str
    accuracy: float | None = None  # the scenario's (GG: with its own mask; GN/NNs: with inferred masks)
    accuracy_all_outputs: float | None = (
        None  # GG: argmax over every output, as the official SupSup code scores
    )
    density: float | None = None
    mask_bytes: int | None = None
    train_accuracy: float | None = None
    search_seconds: float | None = None
    skipped: bool = False  # already in the store when this command started
    resumed_at_steps: list[int] = field(default_factory=list)
    error: str | None = None
    task_inference_accuracy: float | None = None  # GNs/GNu
    gg_accuracy: float | None = None  # GNs/GNu: with the task's own mask
    inferred: dict[str, int] | None = None  # inferred mask id -> test samples
    stored_bytes: int | None = None  # the record as stored (a mask's packed bits; weights in their formats)
    sparsity: float | None = None  # trained weights: fraction that are zero
    accuracy_after_own_task: float | None = None  # fine-tuning: right after learning this task
    forgetting: float | None = None  # fine-tuning: accuracy_after_own_task - accuracy (after the last task)
    meta: dict | None = None  # the stored record's metadata, for learners whose report reads it (translation)


@dataclass
class JobResult:
    """A whole run: its tasks, where the data came from, and where the time went."""

    tasks: list[TaskOutcome] = field(default_factory=list)
    base_fingerprint: str = ""
    provenance: str = ""
    data_source: str = ""
    num_weights: int = 0
    seconds: float = 0.0
    learn_seconds: float = 0.0
    eval_seconds: float = 0.0
    resources: dict = field(default_factory=dict)
    strategy: str = ""
    workers: int = 0
    stack_size: int = 0  # most tasks a worker searched as one stack
    shards: int = 0
    timing: dict = field(default_factory=dict)  # where the time went (see runtime/job.py learn_timing)
    task_inference_accuracy: float | None = None  # GNs/GNu: test samples whose task was inferred right
    inference_seconds: float = 0.0
    inferences: int = 0  # test batches (or samples) whose task was inferred
    stored_masks: int = 0  # masks the inference chose among
    nns: dict | None = None  # NNs: allocated masks against true tasks, and every check
    reservoir: dict | None = (
        None  # store.kind reservoir/both: the reservoirs, their bytes, recovery without ids
    )
    forgetting: dict | None = None  # fine-tuning: the accuracy matrix and average forgetting


def fill_from_record(outcome: TaskOutcome, record) -> None:
    """Copy what a stored record (TaskMask or TaskWeights) says about its task into `outcome`."""
    outcome.density = record.density
    outcome.mask_bytes = getattr(record, "mask_bytes", None)  # masks only
    outcome.stored_bytes = outcome.mask_bytes if outcome.mask_bytes is not None else record.stored_bytes()
    outcome.sparsity = getattr(record, "sparsity", None)  # weights only
    fill_from_metrics(outcome, record.metrics)


def fill_from_metrics(outcome: TaskOutcome, metrics: dict) -> None:
    """Copy what a stored record's metrics say into `outcome`: GG numbers measured by the worker on the
    device, on the very record it stored."""
    outcome.train_accuracy = metrics.get("train_accuracy")
    outcome.search_seconds = metrics.get("seconds")
    outcome.resumed_at_steps = metrics.get("resumed_at_steps", [])
    outcome.accuracy = metrics.get("test_accuracy")
    outcome.accuracy_all_outputs = metrics.get("test_accuracy_all_outputs")


@dataclass
class TrialRecord:
    """One sweep trial as sweep.json records it."""

    trial_id: str
    config: dict
    status: str  # one of TRIAL_STATUSES; stopped_early: ended by the scheduler before its last epoch
    epochs: int
    planned_epochs: int | None
    metrics: dict = field(default_factory=dict)  # the last report
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, val_accuracy, density, objective
    error: str | None = None
    path: str | None = None  # the trial's folder in Tune's experiment


TRIAL_STATUSES = ("completed", "stopped_early", "error", "unfinished")


@dataclass
class SweepOutcome:
    """Every trial of a sweep, and whether the sweep ran to its end."""

    trials: list[TrialRecord]
    experiment_path: str
    expected_trials: int
    resumed: bool = False
    seconds: float = 0.0

    @property
    def finished(self) -> bool:
        """Every trial the sweep asks for ran to its end (completed, stopped early or errored)."""
        done = [t for t in self.trials if t.status != "unfinished"]
        return len(done) == len(self.trials) and len(self.trials) >= self.expected_trials
