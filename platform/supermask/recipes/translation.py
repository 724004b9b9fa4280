"""Train a translation task: the unit of work of the translation learner (no Ray here).

A spec with `learn: translation` resolves into a `TranslationRecipe` (the resolution from
the stream, the data source, the base fingerprint of supermask tasks, the provenance hash of what
produces a task's generators). `train_translation_task` trains one task, resuming from and writing
a checkpoint at a cadence in seconds (recipes/checkpoints.py, provenance checked), measures it every
`eval_every` steps and at the end (outline Hausdorff distances both ways, cycle errors, a sample grid
PNG) and returns its `TranslationRecord` for the store.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from supermask.config.kinds.translation import resolved_settings
from supermask.config.spec import RunSpec, Spec
from supermask.core.masks import MaskSpec
from supermask.core.probes.probe import ProbeConfig
from supermask.core.search.stacked_search import task_seed
from supermask.core.translation.evaluation import evaluate_translation, references, sample_grid
from supermask.core.translation.generator import Generator, maskable_weights
from supermask.core.translation.probe import Sink, TranslationProbe
from supermask.core.translation.records import TranslationRecord, record_from_trainer
from supermask.core.translation.settings import EVALUATION_FIELDS, TranslationSettings
from supermask.core.translation.trainer import TranslationTrainer, base_fingerprint
from supermask.data import DataConfig, StreamSpec, stream_of
from supermask.data.translation_streams import TranslationStream, TranslationTask
from supermask.recipes.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from supermask.recipes.learn import BlockOutcome, CheckpointPolicy
from supermask.recipes.recipe import plain_json, provenance_hash

log = logging.getLogger(__name__)

LOSS_POINTS = 200  # loss values kept per task (every steps / LOSS_POINTS steps)


@dataclass(frozen=True)
class TranslationRecipe:
    """A translation spec resolved on the driver: what every worker builds from."""

    name: str
    stream: StreamSpec
    data: DataConfig
    settings: TranslationSettings  # resolution and channels from the stream; seed: the run's
    mask: MaskSpec | None  # supermask tasks only
    run: RunSpec
    data_source: str
    base_fingerprint: str  # of the frozen networks ("" for trained tasks)
    num_weights: int  # generator weights per task (both directions)
    provenance: dict
    probes: ProbeConfig = ProbeConfig()  # the spec's probes section (not provenance)

    @classmethod
    def from_spec(cls, spec: Spec) -> TranslationRecipe:
        stream = stream_of(spec.stream, spec.data)
        data = stream.resolved_data()
        settings = resolved_settings(spec, stream)
        mask = spec.mask if settings.method == "supermask" else None
        fingerprint = base_fingerprint(settings)
        learned = {k: v for k, v in settings.to_dict().items() if k not in EVALUATION_FIELDS}
        fields = {
            "stream": {"name": spec.stream.name, "seed": spec.stream.seed, "options": spec.stream.options},
            "data": stream.data_identity(),
            "translation": learned,
            "mask": dataclasses.asdict(mask) if mask is not None else None,
            "base_fingerprint": fingerprint,
        }
        with torch.device("meta"):  # counts weights, allocates nothing
            weights = maskable_weights(Generator(settings))
        return cls(
            name=spec.name,
            stream=spec.stream,
            data=data,
            settings=settings,
            mask=mask,
            run=spec.run,
            data_source=stream.data_source,
            base_fingerprint=fingerprint,
            num_weights=2 * sum(int(w.numel()) for w in weights.values()),
            provenance={"hash": provenance_hash(fields), "fields": plain_json(fields)},
            probes=spec.probes,
        )

    def stream_of(self) -> TranslationStream:
        return stream_of(self.stream, self.data)  # type: ignore[return-value]

    def task_ids(self) -> list[str]:
        stream = self.stream_of()
        return [stream.task_id(t) for t in range(self.stream.num_tasks)]

    def task_settings(self, t: int) -> TranslationSettings:
        """Task t's settings: the run's, with the task's own seed (networks, scores, batch order)."""
        return dataclasses.replace(self.settings, seed=task_seed(self.settings.seed, t))


@dataclass
class TranslationOutcome(BlockOutcome):
    """A trained task, a block of one: its record for the store and where the time went (search_seconds:
    the training time, probes of the networks included)."""

    probes: int = 0
    samples: list[str] = field(default_factory=list)  # sample-grid PNGs written

    @property
    def record(self) -> TranslationRecord:
        return self.records[0]


def save_png(image: torch.Tensor, path: Path) -> None:
    """A (C, H, W) image in [0, 1] as an 8-bit PNG."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def eval_steps(settings: TranslationSettings) -> list[int]:
    """The steps after which a task is measured: every eval_every, and the last."""
    every = settings.eval_every or settings.steps
    return sorted({*range(every, settings.steps + 1, every), settings.steps})


class TranslationBench:
    """A translation recipe built in one process: its stream, and one task's images at a time."""

    def __init__(self, recipe: TranslationRecipe, device: str = "cpu") -> None:
        self.recipe, self.device = recipe, device
        self.stream = recipe.stream_of()
        self._task: TranslationTask | None = None

    def task(self, t: int) -> TranslationTask:
        if self._task is None or self._task.index != t:
            self._task = self.stream.translation_task(t)
        return self._task

    def new_trainer(self, t: int, **options) -> TranslationTrainer:
        """Task t's trainer from step 0 (`options`: shard, grad_sync, value_sync for data parallel)."""
        return TranslationTrainer(self.recipe.task_settings(t), self.device, mask=self.recipe.mask, **options)


def task_scores(
    trainer: TranslationTrainer, task: TranslationTask, eval_size: int, split: str = "test"
) -> dict:
    """Both directions of a trainer's translations scored on the first `eval_size` test (or val) pairs."""
    test = (task.val if split == "val" else task.test).head(eval_size)
    return evaluate_translation(
        lambda imgs: trainer.translate(imgs, "xy"), lambda imgs: trainer.translate(imgs, "yx"), test
    )


def train_translation_task(
    bench: TranslationBench,
    t: int,
    *,
    checkpoint: Path | None = None,
    policy: CheckpointPolicy | None = None,
    write_checkpoints: bool = True,
    evaluate: bool = True,
    samples_dir: Path | None = None,
    on_start: Callable[[TranslationTrainer], None] | None = None,
    on_eval: Callable[[int, dict], None] | None = None,
    hooks: Sequence[Callable] = (),
    probe_sink: Sink | None = None,
    **trainer_options,
) -> TranslationOutcome:
    """Train task t from its checkpoint (if any) to translation.steps, measuring it on the way.

    `hooks` see the trainer after every step; `on_eval(step, scores)` hears each measurement. With
    `probe_sink` and the recipe's probes on, the four networks are probed on their cadence
    (core/translation/probe.py) and every record goes to the sink. With `evaluate` off (data-parallel
    ranks but one) nothing is measured or drawn.
    """
    recipe = bench.recipe
    task = bench.task(t)
    trainer = bench.new_trainer(t, **trainer_options)
    state = load_checkpoint(checkpoint) if checkpoint is not None else None
    saved = {"evals": [], "losses": [], "seconds": 0.0, "probe_seconds": 0.0}
    if state is not None:
        if state.get("task_id") != task.task_id:
            log.warning("%s is of another task; starting %s from step 0", checkpoint, task.task_id)
        else:
            try:
                trainer.load_state_dict(state["trainer"])
            except ValueError as e:
                raise CheckpointError(f"{checkpoint}: {e}") from None
            saved = {k: state.get(k, v) for k, v in saved.items()}
    outcome = TranslationOutcome([], resumed_from_step=trainer.step)
    if on_start is not None:
        on_start(trainer)
    spent = float(saved["seconds"])
    started = time.perf_counter()  # the probes' time is part of the training's, the first probe's too
    probe = None
    if probe_sink is not None and recipe.probes.enabled:
        images = {"x": task.train.x, "y": task.train.y}
        probe = TranslationProbe(trainer, recipe.probes, images, task.task_id, probe_sink)
        probe.start()
        hooks = [*hooks, probe]
    policy = policy or CheckpointPolicy()
    settings = trainer.settings
    evals: list[dict] = list(saved["evals"])
    losses: list[dict] = list(saved["losses"])
    loss_every = max(1, settings.steps // LOSS_POINTS)
    pending = [s for s in eval_steps(settings) if s > trainer.step]

    def measure(step: int) -> None:
        began = time.perf_counter()
        scores = task_scores(trainer, task, settings.eval_size)
        scores["step"] = step
        evals.append(scores)
        if samples_dir is not None:
            grid = sample_grid(
                lambda imgs: trainer.translate(imgs, "xy"),
                lambda imgs: trainer.translate(imgs, "yx"),
                task.test,
                settings.samples,
                scale=max(1, 128 // settings.resolution),
            )
            path = samples_dir / f"step-{step:07d}.png"
            save_png(grid, path)
            outcome.samples.append(str(path))
        if on_eval is not None:
            on_eval(step, scores)
        outcome.evaluate_seconds += time.perf_counter() - began

    def on_step(metrics: dict) -> None:
        nonlocal spent, started
        step = trainer.step  # steps done
        if metrics["step"] % loss_every == 0:
            losses.append({k: float(v) for k, v in metrics.items()})
        if evaluate and pending and step == pending[0]:
            pending.pop(0)
            now = time.perf_counter()
            spent += now - started
            measure(step)
            started = time.perf_counter()
        if checkpoint is not None and write_checkpoints and step < settings.steps and policy.due(trainer):
            now = time.perf_counter()
            spent += now - started
            state = {
                "task_id": task.task_id,
                "provenance": recipe.provenance,
                "trainer": trainer.state_dict(),
                "evals": evals,
                "losses": losses,
                "seconds": spent,
                "probe_seconds": saved["probe_seconds"] + (probe.seconds if probe is not None else 0.0),
            }
            save_checkpoint(state, checkpoint)
            policy.wrote(time.perf_counter() - now)
            started = time.perf_counter()

    trainer.run(task.train, settings.steps, on_step=on_step, hooks=hooks)
    spent += time.perf_counter() - started
    outcome.search_seconds = spent - outcome.evaluate_seconds - policy.write_seconds
    outcome.checkpoint_seconds, outcome.checkpoints = policy.write_seconds, policy.writes
    metrics: dict = {"task_index": int(t), "steps": trainer.step, "seconds": spent, "evals": evals}
    metrics["train_seconds"] = outcome.search_seconds
    if probe is not None:
        outcome.probe_seconds, outcome.probes = saved["probe_seconds"] + probe.seconds, probe.probes
        metrics["probe_seconds"] = outcome.probe_seconds  # before a resume too, as `seconds`
    metrics["losses"] = losses
    if evaluate:
        metrics["final"] = evals[-1] if evals else task_scores(trainer, task, settings.eval_size)
        metrics["references"] = references(task.test.head(settings.eval_size))
    record = record_from_trainer(
        trainer,
        task.task_id,
        metrics=_finite(metrics),
        provenance=recipe.provenance,
        fingerprint=recipe.base_fingerprint,
    )
    outcome.records = [record]
    return outcome


def _finite(value):
    """NaN (no polygon detected anywhere) as None, recursively, so records are plain JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
