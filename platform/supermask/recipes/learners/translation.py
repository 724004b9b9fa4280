"""`learn: translation`: GANimorph image-translation tasks, one task per block, on the same Ray Train run as
every learner (one task per worker, or all workers on each task with run.strategy data_parallel).

A task trains both directions from its checkpoint (OUT/checkpoints/<task>.pt) to translation.steps,
measured every translation.eval_every steps (an event each, and a sample grid under
OUT/samples/<task>/); its record (kind "translation": generators, or masks over frozen networks) goes
to the store. A sweep trial trains its tasks in lockstep to each measurement and reports the
validation Hausdorff score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from supermask.config.spec import Spec
from supermask.recipes.learn import BlockOutcome
from supermask.recipes.learners.base import BlockContext, Evaluation, Learner, OpenClient, register_learner
from supermask.recipes.translation import (
    TranslationBench,
    TranslationRecipe,
    eval_steps,
    task_scores,
    train_translation_task,
)


@register_learner
class TranslationLearner(Learner):
    name = "translation"
    progress_label = "training translation"
    records_noun = "translation record(s)"
    recipe: TranslationRecipe

    @classmethod
    def from_spec(cls, spec: Spec) -> TranslationLearner:
        return cls(TranslationRecipe.from_spec(spec))

    def resolved_lines(self) -> list[str]:
        r, s = self.recipe, self.recipe.settings
        return [
            f"# resolved: data {r.data_source}",
            f"# resolved: translation.resolution {s.resolution}, channels {s.channels}; "
            f"{r.num_weights:,} generator weights per task (both directions)",
            f"# resolved: base fingerprint {r.base_fingerprint or 'none (trained networks)'}, "
            f"provenance {r.provenance['hash']}",
        ]

    def open_store(self, root: Path, open_client: OpenClient, create: bool = True) -> Any:
        return open_client("translation", root, num_shards=self.recipe.run.shards if create else None)

    def checkpoint_name(self, ids: Sequence[str]) -> str:
        return ids[0]

    def bench(self, device: str) -> TranslationBench:
        return TranslationBench(self.recipe, device)

    def learn_block(self, bench: TranslationBench, block: list[int], ctx: BlockContext) -> BlockOutcome:
        (t,) = block
        task_id = bench.stream.task_id(t)
        steps = self.recipe.settings.steps
        on_start, progress = ctx.on_start, ctx.progress

        def measured(step: int, scores: dict) -> None:
            values = {d: (scores.get(d) or {}).get("symmetric_mean") for d in ("x_to_y", "y_to_x")}
            ctx.log(
                "translation_eval",
                task=task_id,
                step=step,
                hausdorff_score=scores.get("hausdorff_score"),
                cycle_l1_x=scores["cycle_l1_x"],
                **{d: v if v is not None and math.isfinite(v) else None for d, v in values.items()},
            )

        return train_translation_task(
            bench,
            t,
            checkpoint=ctx.checkpoint,
            policy=ctx.policy,
            write_checkpoints=ctx.lead,
            evaluate=ctx.lead,
            samples_dir=ctx.out_dir / "samples" / task_id if ctx.lead else None,
            on_start=None if on_start is None else (lambda trainer: on_start(trainer.step)),
            on_eval=measured,
            hooks=[] if progress is None else [lambda trainer, metrics: progress(trainer.step, steps)],
            probe_sink=ctx.probe_sink if ctx.lead else None,
            **ctx.sync,
        )

    def data_parallel(self, rank: int, world: int, device: str) -> dict:
        """Each rank takes its slice of every batch; gradients and the loss values that scale them are averaged."""
        import torch.distributed as dist

        def average_gradients(params) -> None:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world

        def average_values(values: dict[str, float]) -> dict[str, float]:
            names = sorted(values)
            t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            return {n: float(v) / world for n, v in zip(names, t.tolist(), strict=True)}

        return {"shard": (rank, world), "grad_sync": average_gradients, "value_sync": average_values}

    def stored_fields(self, record: Any) -> dict:
        score = (record.metrics.get("final") or {}).get("hausdorff_score")
        return {
            "array_bytes": record.nbytes,
            "train_seconds": record.metrics.get("train_seconds"),
            "summary": "" if score is None else f"Hausdorff score {score:.3f}",
        }

    def evaluate(self, ev: Evaluation) -> None:
        """Every record read back whole (each checked against its checksum), with its metadata for the report."""
        sizes = ev.store.describe(ev.ids)
        for o, record in zip(ev.outcomes.values(), ev.store.get_many(ev.ids), strict=True):
            o.meta = {
                **record.meta(),
                "array_bytes": record.nbytes,
                "record_bytes": sizes[o.task_id].get("stored_bytes", record.nbytes),
            }

    def trial(self, bench: TranslationBench, sweep: Any) -> TranslationTrial:
        return TranslationTrial(bench)


class TranslationTrial:
    """A sweep trial of translation tasks (TrialWork): each reported epoch trains every task to its next
    measurement and scores held-out validation pairs (never the test pairs)."""

    headline = ("val_hausdorff",)

    def __init__(self, bench: TranslationBench) -> None:
        self.recipe = bench.recipe
        ts = range(self.recipe.stream.num_tasks)
        self.tasks = [bench.stream.translation_task(t) for t in ts]
        self.trainers = [bench.new_trainer(t) for t in ts]
        self.stops = eval_steps(self.recipe.settings)
        self.planned = len(self.stops)
        self._scores: list[dict] = []

    def advance(self, epoch: int) -> None:
        target, eval_size = self.stops[epoch - 1], self.recipe.settings.eval_size
        self._scores = []
        for trainer, task in zip(self.trainers, self.tasks, strict=True):
            trainer.run(task.train, target)
            self._scores.append(task_scores(trainer, task, eval_size, split="val"))

    def metrics(self, epoch: int) -> dict:
        """`val_hausdorff` (hausdorff_score: the mean symmetric Hausdorff distance over both directions, a
        missing polygon counting as MISS_DISTANCE), objective = -val_hausdorff, and each direction's mean."""
        per_task = self._scores
        score = float(np.mean([s["hausdorff_score"] for s in per_task]))
        mask = self.recipe.mask
        return {
            "epoch": epoch,
            "planned_epochs": self.planned,
            "step": self.stops[epoch - 1],
            "val_hausdorff": score,
            "objective": -score,
            "density": mask.target_density if mask is not None else 1.0,
            **{
                f"val_{d}": float(np.nanmean([s[d]["symmetric_mean"] for s in per_task]))
                for d in ("x_to_y", "y_to_x")
            },
            "val_detected": float(
                np.mean([s[d]["detected_fraction"] for s in per_task for d in ("x_to_y", "y_to_x")])
            ),
        }

    def state_dict(self) -> dict:
        return {"trainers": [t.state_dict() for t in self.trainers]}

    def load_state_dict(self, state: dict) -> None:
        for trainer, saved in zip(self.trainers, state["trainers"], strict=True):
            trainer.load_state_dict(saved)
