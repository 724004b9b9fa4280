"""What the learners that learn labelled tasks in the stacked search loop over the spec's base share
(masks, weights, fine_tune): the recipe and workbench, stacked blocks, data-parallel averaging, the
events of a stored record, the read-back of records, and the sweep trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supermask.config.spec import Spec
from supermask.data import stream_of
from supermask.recipes.learn import BlockOutcome, learn_block, plan_blocks
from supermask.recipes.learners.base import BlockContext, Evaluation, Learner, OpenClient
from supermask.recipes.recipe import Recipe, Workbench
from supermask.recipes.results import fill_from_record
from supermask.recipes.sweep_trial import StackedTrial

# Planned device memory per weight of one stacked task: scores, gradient, optimizer state, mask, masked
# weight and autograd, all float32.
BYTES_PER_WEIGHT = 32


class StackedLearner(Learner):
    """A learner whose tasks are stacked searches over the recipe's frozen base (core/search/)."""

    recipe: Recipe
    records_noun = "mask(s)"

    @classmethod
    def from_spec(cls, spec: Spec) -> StackedLearner:
        return cls(Recipe.from_spec(spec))

    def resolved_lines(self) -> list[str]:
        r = self.recipe
        return [
            f"# resolved: data.source {r.data.source} ({r.data_source})",
            f"# resolved: base.input_shape {list(r.base.input_shape)}, base.num_outputs {r.base.num_outputs}, "
            f"{r.num_weights:,} masked weights",
            f"# resolved: base fingerprint {r.base_fingerprint}, provenance {r.provenance['hash']}",
        ]

    def open_store(self, root: Path, open_client: OpenClient, create: bool = True) -> Any:
        return open_client("masks", root, num_shards=self.run.shards if create else None)

    def stack_bytes(self) -> int | None:
        return BYTES_PER_WEIGHT * self.recipe.num_weights

    def plan(self, todo: list[int], workers: int, most: int) -> list[list[int]]:
        """Blocks of equal training size cut from the whole stream (so a rerun finds the same blocks and
        their checkpoints), keeping those with work left."""
        stream = stream_of(self.recipe.stream, self.recipe.data)
        sizes = [stream.train_examples(t) for t in range(self.recipe.stream.num_tasks)]
        left = set(todo)
        return [b for b in plan_blocks(sizes, workers, most) if left & set(b)]

    def bench(self, device: str) -> Workbench:
        return Workbench(self.recipe, device)

    def learn_block(
        self, bench: Workbench, block: list[int], ctx: BlockContext, **options: Any
    ) -> BlockOutcome:
        """Search the block as one stack; `options` go to `recipes.learn.learn_block` (e.g. start_from)."""
        hooks = []
        if ctx.progress is not None:
            report = ctx.progress
            hooks.append(lambda info: report(info.step, info.total_steps))
        on_start = ctx.on_start
        outcome = learn_block(
            bench,
            block,
            checkpoint=ctx.checkpoint,
            policy=ctx.policy,
            write_checkpoints=ctx.lead,
            evaluate=ctx.lead,
            on_start=None if on_start is None else (lambda search: on_start(search.step)),
            probe_sink=ctx.probe_sink if ctx.lead else None,  # the scores are the same on every rank
            hooks=hooks,
            **ctx.sync,
            **options,
        )
        if ctx.sync:
            for record in outcome.records:
                record.metrics["data_parallel_workers"] = ctx.sync["shard"][1]
        return outcome

    def data_parallel(self, rank: int, world: int, device: str) -> dict:
        """Each rank takes its slice of every batch; gradients and BatchNorm statistics are averaged."""
        import torch.distributed as dist

        def average_gradients(method) -> None:
            for p in method.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world

        def average_bn_statistics(search) -> None:  # each rank saw only its slice of the batches
            for value in search.bn_state.values():
                dist.all_reduce(value)
                value /= world

        return {
            "shard": (rank, world),
            "grad_sync": average_gradients,
            "before_result": average_bn_statistics,
        }

    def stored_fields(self, record: Any) -> dict:
        test = record.metrics.get("test_accuracy")
        return {
            "train_accuracy": record.metrics["train_accuracy"],
            "test_accuracy": test,
            "seconds": record.metrics["seconds"],
            "summary": f"test acc {test or 0:.3f}",
        }

    def read_records(self, store: Any, ids: list[str]) -> list:
        """The stored records of these tasks, checked against the recipe's base (never one kind as another)."""
        return store.get_many(ids, fingerprint=self.recipe.base_fingerprint)

    def read_back(self, ev: Evaluation) -> list:
        """Fill every outcome from its stored record: what the worker measured on the device (GG)."""
        records = self.read_records(ev.store, ev.ids)
        for outcome, record in zip(ev.outcomes.values(), records, strict=True):
            fill_from_record(outcome, record)
        return records

    def trial(self, bench: Workbench, sweep: Any) -> StackedTrial:
        return StackedTrial(bench, sweep)
