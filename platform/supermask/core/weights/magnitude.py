"""Magnitude pruning for a stack of K tasks: STR's comparison, gradual (Zhu & Gupta's cubic ramp) or one shot.

Per-layer budgets come from a policy: `uniform`, `erdos_renyi` (as `layer_densities` computes them
for masks) or `global` (one magnitude threshold over every layer of a task). Each task keeps its
own boolean masks (K, *shape); ranking |W * mask| makes pruning monotone (a pruned weight never
outranks a kept one), and the selection is the exact per-row top-k of core/masks/selection.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from supermask.core.masks import kept_count, layer_densities
from supermask.core.masks.selection import topk_rows
from supermask.core.weights.methods import WEIGHT_METHODS, WeightMethod, check_fraction, cubic_sparsity

MAGNITUDE_POLICIES = ("uniform", "erdos_renyi", "global")
MAGNITUDE_SCHEDULES = ("gradual", "one_shot")


@WEIGHT_METHODS.register("magnitude")
class MagnitudePruning(WeightMethod):
    """Magnitude pruning to `target_sparsity`, gradual (cubic) or one shot, with per-layer budgets from `policy`."""

    name = "magnitude"

    @classmethod
    def check_options(cls, options: dict) -> None:
        target = options.get("target_sparsity", 0.9)
        if not 0.0 <= target < 1.0:
            raise ValueError(f"weights.options.target_sparsity: got {target!r}; must be in [0, 1)")
        if options.get("policy", "uniform") not in MAGNITUDE_POLICIES:
            raise ValueError(
                f"weights.options.policy: got {options['policy']!r}; allowed: {', '.join(MAGNITUDE_POLICIES)}"
            )
        if options.get("schedule", "gradual") not in MAGNITUDE_SCHEDULES:
            raise ValueError(
                f"weights.options.schedule: got {options['schedule']!r}; "
                f"allowed: {', '.join(MAGNITUDE_SCHEDULES)}"
            )
        check_fraction("begin", options.get("begin"), open_hi=True)
        check_fraction("end", options.get("end"))
        if options.get("end") is not None and options["end"] < options.get("begin", 0.0):
            raise ValueError("weights.options.end must be >= weights.options.begin")
        if options.get("every", 10) < 1:
            raise ValueError(f"weights.options.every: got {options['every']!r}; must be >= 1 (steps)")

    def __init__(
        self,
        base_weights: Sequence[torch.Tensor],
        num_tasks: int = 1,
        total_steps: int = 1,
        init_weights: Sequence[torch.Tensor] | None = None,
        target_sparsity: float = 0.9,
        policy: str = "uniform",
        schedule: str = "gradual",
        begin: float = 0.0,
        end: float | None = None,
        every: int = 10,
    ) -> None:
        super().__init__(base_weights, num_tasks, total_steps, init_weights)
        options = dict(
            target_sparsity=target_sparsity, policy=policy, schedule=schedule, begin=begin, end=end
        )
        self.check_options({**options, "every": every})
        self.target_sparsity = float(target_sparsity)
        self.policy, self.schedule = policy, schedule
        # A one-shot prune defaults to the very end (no fine-tuning); the gradual ramp leaves a quarter to recover.
        self.begin_fraction = float(begin)
        self.end_fraction = float(end if end is not None else (1.0 if schedule == "one_shot" else 0.75))
        self.every = int(every)
        for i, w in enumerate(self.weights):
            self.register_buffer(f"mask_{i}", torch.ones_like(w, dtype=torch.bool))

    def masks(self) -> list[torch.Tensor]:
        """The current boolean keep-masks, (K, *shape) per layer."""
        return [getattr(self, f"mask_{i}") for i in range(len(self.shapes))]

    def forward(self) -> list[torch.Tensor]:
        return [w * m for w, m in zip(self.weights, self.masks(), strict=True)]

    def layer_budgets(self, sparsity: float) -> list[int]:
        """Weights each layer keeps at overall `sparsity` under a uniform or Erdos-Renyi policy."""
        densities = layer_densities(self.shapes, 1.0 - sparsity, self.policy)
        return [kept_count(n, d) for n, d in zip(self.sizes, densities, strict=True)]

    @torch.no_grad()
    def prune(self, sparsity: float) -> None:
        """Keep each task's largest-magnitude surviving weights so that it reaches the budgets of `sparsity`."""
        magnitudes = [(w * m).abs().flatten(1) for w, m in zip(self.weights, self.masks(), strict=True)]
        if self.policy == "global":
            flat = torch.cat(magnitudes, dim=1)
            keep = topk_rows(flat, kept_count(flat.shape[1], 1.0 - sparsity))
            kept = torch.split(keep, self.sizes, dim=1)
        else:
            kept = [topk_rows(m, k) for m, k in zip(magnitudes, self.layer_budgets(sparsity), strict=True)]
        for i, keep in enumerate(kept):
            getattr(self, f"mask_{i}").copy_(keep.view(self.num_tasks, *self.shapes[i]))

    def _due(self, step: int) -> float | None:
        t0 = round(self.begin_fraction * self.total_steps)
        t1 = round(self.end_fraction * self.total_steps)
        if self.schedule == "one_shot":
            return self.target_sparsity if step == t1 else None
        if t0 <= step <= t1 and ((step - t0) % self.every == 0 or step == t1):
            return cubic_sparsity(
                step, self.total_steps, self.target_sparsity, self.begin_fraction, self.end_fraction
            )
        return None

    def _kept_fraction(self) -> torch.Tensor:
        return sum(m.flatten(1).sum(1) for m in self.masks()).float() / sum(self.sizes)

    @torch.no_grad()
    def after_step(self) -> dict[str, torch.Tensor]:
        self.step += 1
        self.steps_taken.fill_(self.step)
        goal = self._due(self.step)
        if goal is not None and goal > 0.0:
            self.prune(goal)
        return {"sparsity": 1.0 - self._kept_fraction()}

    @torch.no_grad()
    def finalize(self) -> dict[str, list]:
        # One shot at the end, or a ramp that training never reached (every task has the same budgets).
        if float(1.0 - self._kept_fraction().min()) < self.target_sparsity - 1e-12:
            self.prune(self.target_sparsity)
        return {}
