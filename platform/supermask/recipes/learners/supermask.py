"""`learn: masks`: supermasks over the frozen base, in every scenario.

- GG, GNs, GNu: blocks of tasks searched as stacks on Ray Train; each record is a packed mask (weight
  or neuron masks). GG is what the workers measured on their devices; GNs/GNu infer each test
  batch's task among every stored mask on bench actors next to the store (`infer_tasks`).
- NNs: the stream without task ids, learned in one Ray task (which mask a batch trains depends on
  every batch before it), then evaluated there with inferred masks; a rerun learns it anew.
- store.kind reservoir or both: each task's neuron pattern also goes into the Hopfield reservoirs
  (recipes/reservoirs.py), and every test batch is recovered from them without its task id.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from supermask.config.spec import GN_SCENARIOS
from supermask.core.evaluate import bn_tensors, check_compatible, mask_tensors
from supermask.core.inference.device_bank import DeviceMasks
from supermask.recipes.checkpoints import check_checkpoints
from supermask.recipes.learners.base import (
    Evaluation,
    OpenClient,
    Schedule,
    refuse_stale_records,
    register_learner,
)
from supermask.recipes.learners.stacked import StackedLearner
from supermask.recipes.recipe import Workbench
from supermask.recipes.reservoirs import (
    StoreSet,
    backfill,
    check_reservoir_provenance,
    recover,
    reservoir_dims,
    resolved_reservoir,
    stored_metrics,
)
from supermask.recipes.results import InferenceOutcome, fill_from_metrics
from supermask.recipes.task_inference import TASKS_PER_PASS, evaluate_gn_tasks, fill_gn_outcomes
from supermask.recipes.without_ids import NNsRun, learn_and_evaluate_nns


@register_learner
class SupermaskLearner(StackedLearner):
    name = "masks"
    progress_label = "learning masks"

    @property
    def has_reservoir(self) -> bool:
        return self.recipe.store.has_reservoir

    @property
    def without_ids(self) -> bool:
        return self.recipe.scenario == "NNs"

    @property
    def schedule(self) -> Schedule:
        return Schedule.ONE_TASK if self.without_ids else Schedule.TRAIN

    def describe_strategy(self) -> str:
        return "one Ray task (NNs is sequential)" if self.without_ids else self.run.strategy

    def resolved_lines(self) -> list[str]:
        return super().resolved_lines() + (resolved_reservoir(self.recipe) if self.has_reservoir else [])

    # -- the store: masks, reservoirs, or both --------------------------------------

    def open_store(self, root: Path, open_client: OpenClient, create: bool = True) -> Any:
        recipe = self.recipe
        if not self.has_reservoir:
            return super().open_store(root, open_client, create)

        def reservoirs():
            spec, dims = recipe.store.reservoir, reservoir_dims(recipe)
            return open_client("reservoir", root, spec=spec, dims=dims, fingerprint=recipe.base_fingerprint)

        masks = super().open_store(root, open_client, create) if recipe.store.has_masks else None
        try:
            return StoreSet(masks, reservoirs(), reservoirs)
        except BaseException:
            if masks is not None:
                masks.close()
            raise

    def store_shards(self, store: Any) -> int:
        if isinstance(store, StoreSet):
            return store.masks.layout.num_shards if store.masks is not None else 0
        return super().store_shards(store)

    def prepare(self, store: Any, ids: list[str], out_dir: Path, relearn: bool) -> list[int]:
        if self.without_ids:
            return list(range(len(ids)))  # learned anew on every run: its masks are not tasks' own
        if not self.has_reservoir:
            return super().prepare(store, ids, out_dir, relearn)
        if store.masks is not None:
            refuse_stale_records(self.recipe, store.masks, ids, relearn, self.records_noun)
        check_checkpoints(self.recipe, out_dir / "checkpoints", relearn)
        check_reservoir_provenance(self.recipe, store, ids, relearn)
        backfill(self.recipe, store, ids)
        missing = set(store.missing(ids))
        return [t for t, tid in enumerate(ids) if tid in missing]

    # -- scenario NNs ------------------------------------------------------------------------

    def learn_stream(self, bench: Workbench) -> NNsRun:
        return learn_and_evaluate_nns(bench)

    def _keep_stream(self, ev: Evaluation) -> None:
        """Store what the NNs task allocated (replacing an earlier run's) and report how it scored."""
        run: NNsRun = ev.learned
        ev.store.put_many(run.masks, overwrite=True)
        for o in run.outcomes:
            ev.outcomes[o.index].accuracy, ev.outcomes[o.index].inferred = o.accuracy, o.inferred
        result = ev.result
        result.nns, result.stored_masks = run.summary(), len(run.masks)
        result.learn_seconds, result.eval_seconds = run.learned.seconds, run.seconds - run.learned.seconds
        result.inferences = sum(o.inferences for o in run.outcomes)

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, ev: Evaluation) -> None:
        if self.without_ids:
            self._keep_stream(ev)
        elif self.has_reservoir:
            self._recover(ev)
        else:
            self._evaluate_masks(ev)

    def _evaluate_masks(self, ev: Evaluation) -> None:
        """GG as the workers measured it (masks of older versions: on bench actors), or GNs/GNu inferred."""
        started = time.perf_counter()
        self.read_back(ev)
        ev.result.timing["read_back_seconds"] = time.perf_counter() - started
        if self.recipe.scenario in GN_SCENARIOS:
            started = time.perf_counter()
            ev.result.stored_masks = len(ev.store)
            self._infer(ev, list(ev.outcomes))
            ev.result.timing["inference_seconds"] = time.perf_counter() - started
            return
        unevaluated = [t for t, o in ev.outcomes.items() if o.accuracy is None]
        if unevaluated:
            workers = ev.workers(len(unevaluated))
            for t, real, every in ev.on_benches(
                "evaluate_task", unevaluated, workers=workers, desc="evaluating (GG)"
            ):
                ev.outcomes[t].accuracy, ev.outcomes[t].accuracy_all_outputs = real, every

    def infer(self, ev: Evaluation) -> None:
        """Scenario GNs/GNu (the recipe's) of the stream over the masks the store holds."""
        missing = ev.store.missing(ev.ids)
        if missing:
            raise FileNotFoundError(
                f"the store at {ev.store.root} has no mask for {len(missing)} of the spec's {len(ev.ids)} tasks "
                f"({missing[:5]}); run `supermask run` with this spec first, or lower stream.num_tasks"
            )
        masks = ev.store.get_many(
            ev.ids, fingerprint=self.recipe.base_fingerprint
        )  # another base's: an error
        for o, mask in zip(ev.outcomes.values(), masks, strict=True):
            o.density, o.mask_bytes = mask.density, mask.mask_bytes
            o.train_accuracy, o.search_seconds = (
                mask.metrics.get("train_accuracy"),
                mask.metrics.get("seconds"),
            )
        ev.result.stored_masks = len(ev.store)
        self._infer(ev, list(ev.outcomes))

    def _infer(self, ev: Evaluation, indices: list[int]) -> None:
        """GNs/GNu on bench actors, tasks handed out in parts (on a GPU an actor infers a part's test groups
        in one pass over the masks)."""
        if self.recipe.scenario not in GN_SCENARIOS:
            raise ValueError(f"task inference runs {' or '.join(GN_SCENARIOS)}, not {self.recipe.scenario!r}")
        workers = ev.workers(len(indices))
        per_part = max(1, min(TASKS_PER_PASS, -(-len(indices) // (4 * workers))))
        parts = [list(indices[i : i + per_part]) for i in range(0, len(indices), per_part)]
        inference = self.recipe.inference
        desc = f"evaluating ({self.recipe.scenario}, {inference.method} {inference.objective})"
        done = ev.on_benches("infer_tasks", parts, workers=workers, desc=desc, units=len)
        fill_gn_outcomes(
            ev.outcomes, sorted((o for part in done for o in part), key=lambda o: o.index), ev.result
        )

    def _recover(self, ev: Evaluation) -> None:
        """GG numbers the workers measured on the bits they stored, then recovery without task ids."""
        for o, (mask, metrics) in zip(
            ev.outcomes.values(), stored_metrics(self.recipe, ev.store, ev.ids), strict=True
        ):
            if mask is not None:
                o.density, o.mask_bytes = mask.density, mask.mask_bytes
            fill_from_metrics(o, metrics)
        started = time.perf_counter()
        ev.result.reservoir = recover(self.recipe, ev.store, ev.progress)
        ev.result.eval_seconds = ev.result.timing["recovery_seconds"] = time.perf_counter() - started

    # -- what bench actors run, next to the store --------------------------------------------------

    def evaluate_task(self, bench: Workbench, store: Any, t: int) -> tuple[int, float, float]:
        """(t, GG accuracy over the real classes, over every output) of task t with its stored mask."""
        mask = store.get(bench.stream.task_id(t), fingerprint=bench.base.fingerprint)
        accuracy = bench.evaluate(t, mask)
        return t, accuracy.real_classes, accuracy.all_outputs

    def infer_tasks(self, bench: Workbench, store: Any, ts: list[int]) -> list[InferenceOutcome]:
        """Scenario GNs/GNu on tasks ts: each test batch's task inferred among every stored mask.

        On a CPU the masks are scored in the shards, next to their files; on a GPU they are read once
        into this process's device memory and scored there.
        """
        return evaluate_gn_tasks(bench, ts, self._bank(bench, store))

    def _bank(self, bench: Workbench, store: Any):
        if bench.device == "cpu":
            return store
        if "device_bank" not in bench.cache:
            masks = store.get_many(store.list(), fingerprint=bench.base.fingerprint)
            free = torch.cuda.mem_get_info()[0] if bench.device.startswith("cuda") else 0
            bench.cache["device_bank"] = DeviceMasks(masks, bench.device, resident_bytes=free // 4)
        return bench.cache["device_bank"]

    def forward(
        self, bench: Workbench, store: Any, x: np.ndarray, task_ids: list[str]
    ) -> dict[str, np.ndarray]:
        """Logits of the base on one batch under each listed task's stored mask (and BN statistics)."""
        base, device = bench.base, bench.device
        base.eval()
        out = {}
        xb = torch.as_tensor(x, dtype=torch.float32, device=device)
        for mask in store.get_many(task_ids, fingerprint=base.fingerprint):
            check_compatible(base, mask)
            with torch.inference_mode():
                logits = base(xb, mask_tensors(mask, device), bn_tensors(mask, device))
            out[mask.task_id] = logits.cpu().numpy()
        return out
