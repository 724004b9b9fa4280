"""One sweep trial of translation tasks on Ray Tune: trained in lockstep, measured on validation pairs.

Each reported "epoch" trains every task of the trial to its next measurement (every
translation.eval_every steps), scores the translations of held-out validation pairs (the toy data's
`val` split, never `test`) and reports `val_hausdorff` (hausdorff_score: the mean symmetric
Hausdorff distance over both directions, a missing polygon counting as MISS_DISTANCE) with
objective = -val_hausdorff, plus a checkpoint of every trainer, so ASHA can stop a trial between
measurements and a restored trial continues where it left off.
"""

from __future__ import annotations

import numpy as np
import ray.tune

from supermask.config.sweep import plain
from supermask.recipes.translation import TranslationBench, TranslationRecipe, _scores, eval_steps
from supermask.runtime.events import log_event
from supermask.runtime.placement import process_device
from supermask.runtime.tune_trial import TrialContext, replay_finished, report_epoch, restored_state


def _restore(trainers: list) -> int:
    saved = restored_state()
    if saved is None:
        return 0
    for trainer, state in zip(trainers, saved["trainers"], strict=True):
        trainer.load_state_dict(state)
    return int(saved["epoch"])


def translation_trial(config: dict, context: TrialContext) -> None:
    """The Tune function trainable for translation sweeps."""
    sweep = context.sweep
    trial_id = ray.tune.get_context().get_trial_id()
    config = {k: plain(v) for k, v in config.items()}
    if replay_finished(context, trial_id):  # finished before a driver crash: train nothing
        return
    recipe = TranslationRecipe.from_spec(sweep.trial_spec(config))
    bench = TranslationBench(recipe, process_device(recipe.run))
    ts = list(range(recipe.stream.num_tasks))
    tasks = [bench.stream.translation_task(t) for t in ts]
    trainers = [bench.new_trainer(t) for t in ts]
    epoch = _restore(trainers)
    stops = eval_steps(recipe.settings)
    log_event(
        context.events_path,
        "trial_started",
        trial=trial_id,
        from_epoch=epoch,
        planned_epochs=len(stops),
        config=config,
    )
    while epoch < len(stops):
        target = stops[epoch]
        epoch += 1
        per_task = []
        for trainer, task in zip(trainers, tasks, strict=True):
            trainer.run(task.train, target)
            per_task.append(_scores(trainer, task, recipe.settings.eval_size, split="val"))
        score = float(np.mean([s["hausdorff_score"] for s in per_task]))
        metrics = {
            "epoch": epoch,
            "planned_epochs": len(stops),
            "step": target,
            "val_hausdorff": score,
            "objective": -score,
            "density": recipe.mask.target_density if recipe.mask is not None else 1.0,
            **{
                f"val_{d}": float(np.nanmean([s[d]["symmetric_mean"] for s in per_task]))
                for d in ("x_to_y", "y_to_x")
            },
            "val_detected": float(
                np.mean([s[d]["detected_fraction"] for s in per_task for d in ("x_to_y", "y_to_x")])
            ),
        }
        log_event(context.events_path, "epoch_done", trial=trial_id, epoch=epoch, val_hausdorff=score)
        state = {"epoch": epoch, "trainers": [t.state_dict() for t in trainers]}
        report_epoch(context, trial_id, config, metrics, state, last=epoch == len(stops))
    log_event(context.events_path, "trial_finished", trial=trial_id, epochs=epoch)
