"""The probes of a stacked search as one of its step hooks: every task's norms, churn and saturation.

`SearchProbe(search, config, sink)` is a `StepHook`: after every step it checks the cadence and, on a
probe step, probes all K tasks of the stack at once (core/probes/probe.py) and hands the K records, each
with its task id, the step's loss and batch accuracy and the learning rate, to `sink` (e.g. a line per
record in the run's metrics.jsonl). `start()` probes the state before the first step. It returns no
per-step metrics, so the loop's own per-epoch curve is untouched; its time is kept in `seconds`.

What is probed is what the method trains: the scores of a mask method (with its current masks, for
churn and for saturation through the effective weights W * M), or the weights a trained-weight method
produces. The probe batch is `config.batch` training examples per task, a seeded choice fixed for the
run; on a transformer base the hidden states are the residual stream after each block, compared over
real tokens only. Neuron masks (core/masks/neuron.py) are probed for norms and churn of their scores
and masks; their saturation is not measured (no effective weight tensor stands for a gated neuron).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch

from supermask.core.probes.probe import Probe, ProbeConfig
from supermask.core.probes.runner import stacked_runner
from supermask.core.search.stacked_search import StackedSearch, StepInfo

Sink = Callable[[list[dict]], None]


def trained_tensors(search: StackedSearch) -> tuple[list[str], list[torch.Tensor]]:
    """(names, (K, *shape) tensors) of what the search trains: a mask method's scores per masked layer,
    or every per-task parameter of a method that produces weights."""
    method = search.method
    if method.produces == "masks":
        return list(search.base.masked_names), list(method.scores)
    named = [(n, p) for n, p in method.named_parameters() if p.dim() >= 1 and p.shape[0] == search.num_tasks]
    return [n for n, _ in named], [p for _, p in named]


def probe_batch(search: StackedSearch, size: int) -> torch.Tensor:
    """(K, size, *input shape) training inputs, each task's own seeded choice (the same every run)."""
    n = search.data.size
    rows = []
    for seed in search.seeds:
        generator = torch.Generator().manual_seed((int(seed) * 7_919 + 17) % 2**63)
        rows.append(torch.randperm(n, generator=generator)[: min(size, n)])
    x, _ = search.data.take(torch.stack(rows).to(search.device))
    return x


class SearchProbe:
    """Probes the K tasks of a StackedSearch on a cadence; a step hook (see the module doc)."""

    def __init__(self, search: StackedSearch, config: ProbeConfig, sink: Sink | None = None) -> None:
        if search.method.produces == "neurons":
            config = dataclasses.replace(config, saturation_every=0, sweep_every=0)
        self.search, self.config, self.sink = search, config, sink
        base, net = search.base, search.base.net
        self.names, self.trained = trained_tensors(search)
        x = probe_batch(search, config.batch)
        hidden = (
            net.hidden_names()
            if hasattr(net, "hidden_names")
            else [n.rsplit(".", 1)[0] for n in base.masked_names]
        )
        keep = (x != net.pad_id) if hasattr(net, "pad_id") else None  # real tokens only
        run = stacked_runner(net, x, base.masked_names, fixed=search.bn_state, hidden=hidden)
        masks = search.method.produces == "masks"
        frozen = [w.unsqueeze(0) for w in base.weights()] if masks else None
        self.probe = Probe(run, names=self.names, frozen=frozen, keep=keep, hidden=hidden, config=config)
        self.seconds = 0.0  # probes during the search (inside its steps' time)
        self.start_seconds = 0.0  # the probe before the first step
        self.probes = 0
        self.last: list[dict] = []  # the latest record of each task

    def start(self) -> list[dict]:
        """Probe the state before training (only if the search has not stepped yet)."""
        if self.search.step != 0 or not self.config.enabled:
            return []
        before = self.seconds
        records = self._observe(0, {})
        self.start_seconds, self.seconds = self.seconds - before, before
        return records

    def __call__(self, info: StepInfo) -> None:
        # On the cadence, and after the last step whatever the cadence: the final state is always probed.
        if self.probe.due(info.step) or (self.config.enabled and info.step == info.total_steps):
            extra = {"loss": info.loss}
            if info.seen is not None:
                extra["batch_accuracy"] = info.correct / info.seen.clamp(min=1)
            self._observe(info.step, extra, lr=info.lr)

    def _observe(self, step: int, extra: dict[str, torch.Tensor], lr: float | None = None) -> list[dict]:
        if str(self.search.device).startswith("cuda"):
            torch.cuda.synchronize()  # the step's queued work is the step's time, not the probe's
        started = time.perf_counter()
        method = self.search.method
        with torch.no_grad():
            produced = method()
        masks, effective = (None, produced) if method.produces == "weights" else (produced, None)
        records = self.probe.observe(step, self.trained, masks=masks, effective=effective, extra=extra)
        for task_id, record in zip(self.search.task_ids, records, strict=True):
            record["task"] = task_id
            if lr is not None:
                record["lr"] = lr
        self.last = records
        self.probes += 1
        if self.sink is not None:
            self.sink(records)
        self.seconds += time.perf_counter() - started
        return records

    def overhead(self) -> float:
        """The probes' time over the rest of the search's time (the search's clock includes its hooks)."""
        rest = self.search.seconds - self.seconds
        return self.seconds / rest if rest > 0 else float("nan")


def summary(records: Sequence[dict], keys: Sequence[str] = ("norm", "saturation_cosine", "churn")) -> dict:
    """The mean over tasks of some keys of their latest records (for a Train or Tune report)."""
    out = {}
    for key in keys:
        values = [r[key] for r in records if key in r]
        if values:
            out[key] = float(sum(values) / len(values))
    return out
