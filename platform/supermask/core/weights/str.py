"""STR (Soft Threshold Reparameterization) on weights, for a stack of K tasks, with a sparsity target.

W_hat = sign(W) * relu(|W| - sigmoid(s_l)), one learned scalar s_l per layer and task (s is (K, L)).
Weight decay applies to s too (it is what raises the thresholds; by default s decays as the weights
do, as in STR's code, or by `s_weight_decay`), and the gradients are what autograd gives through
relu, |.| and sign. Without `target_sparsity` every layer ends at the sparsity STR learns.

With a target (none of the sources has one), every `control_every` steps a controller moves each
task's s so that its overall sparsity is that of Zhu & Gupta's cubic ramp from 0 to the target
(reached at `ramp_end` of training, then held), and `finalize` lands on the target to a few weights.
The default move (`controller="decay"`) is an extra weight-decay step on s, s_l <- s_l * (1 - x) with
one x for every layer of a task: STR's own way of raising thresholds, which also pulls the s_l
together as STR's decay does. `controller="offset"` shifts every s_l by one x instead, keeping their
differences (measured worse; see benchmarks/str_sparsity.py). Each move is a bisection, per task,
in the float32 arithmetic of `forward`, over magnitudes sorted once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from supermask.core.weights.methods import (
    WEIGHT_METHODS,
    WeightMethod,
    check_fraction,
    cubic_sparsity,
    per_task,
)

STR_CONTROLLERS = ("decay", "offset")
BISECTION_STEPS = 60


@WEIGHT_METHODS.register("str")
class STRWeights(WeightMethod):
    """STR on weights: W_hat = sign(W) * relu(|W| - sigmoid(s_l)), optionally steered to a target sparsity."""

    name = "str"

    @classmethod
    def check_options(cls, options: dict) -> None:
        target = options.get("target_sparsity")
        if target is not None and not 0.0 <= target < 1.0:
            raise ValueError(
                f"weights.options.target_sparsity: got {target!r}; must be in [0, 1) (the fraction of weights "
                "that are zero), or null for STR's learned budget"
            )
        decay = options.get("s_weight_decay")
        if decay is not None and decay < 0:
            raise ValueError(
                f"weights.options.s_weight_decay: got {decay!r}; must be >= 0, or null (as the weights)"
            )
        check_fraction("ramp_begin", options.get("ramp_begin"), open_hi=True)
        check_fraction("ramp_end", options.get("ramp_end"))
        if options.get("ramp_end", 0.75) < options.get("ramp_begin", 0.0):
            raise ValueError("weights.options.ramp_end must be >= weights.options.ramp_begin")
        if options.get("controller", "decay") not in STR_CONTROLLERS:
            raise ValueError(
                f"weights.options.controller: got {options['controller']!r}; allowed: {', '.join(STR_CONTROLLERS)}"
            )
        if options.get("control_every", 10) < 1:
            raise ValueError(
                f"weights.options.control_every: got {options['control_every']!r}; must be >= 1 (steps)"
            )

    def __init__(
        self,
        base_weights: Sequence[torch.Tensor],
        num_tasks: int = 1,
        total_steps: int = 1,
        init_weights: Sequence[torch.Tensor] | None = None,
        init_s: float = -8.0,
        s_weight_decay: float | None = None,
        target_sparsity: float | None = None,
        ramp_begin: float = 0.0,
        ramp_end: float = 0.75,
        controller: str = "decay",
        control_every: int = 10,
    ) -> None:
        super().__init__(base_weights, num_tasks, total_steps, init_weights)
        self.check_options(
            dict(
                target_sparsity=target_sparsity,
                s_weight_decay=s_weight_decay,
                ramp_begin=ramp_begin,
                ramp_end=ramp_end,
                controller=controller,
                control_every=control_every,
            )
        )
        self.s = nn.Parameter(torch.full((self.num_tasks, len(self.shapes)), float(init_s)))
        self.s_weight_decay = s_weight_decay
        self.target_sparsity = target_sparsity
        self.ramp_begin, self.ramp_end = float(ramp_begin), float(ramp_end)
        self.controller, self.control_every = controller, int(control_every)

    def thresholds(self) -> torch.Tensor:
        """(K, L) sigmoid(s): |W| at or under a task's layer threshold is zero."""
        return torch.sigmoid(self.s)

    def forward(self) -> list[torch.Tensor]:
        tau = self.thresholds()
        return [
            torch.sign(w) * torch.relu(w.abs() - per_task(tau[:, i], w)) for i, w in enumerate(self.weights)
        ]

    def weight_decays(self) -> list[float | None]:
        return [self.s_weight_decay if p is self.s else None for p in self.parameters()]

    @torch.no_grad()
    def sorted_magnitudes(self) -> list[torch.Tensor]:
        """Per layer, (K, n) |W| of each task sorted ascending: zeros at any s are then one searchsorted."""
        return [w.abs().flatten(1).sort(dim=1).values for w in self.weights]

    @torch.no_grad()
    def zeros_at(self, s: torch.Tensor, magnitudes: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(K,) weights of each task at or under the thresholds sigmoid(s) (s is (K, L))."""
        tau = torch.sigmoid(s)
        if magnitudes is None:
            return sum(
                (w.abs() <= per_task(tau[:, i], w)).flatten(1).sum(1) for i, w in enumerate(self.weights)
            )
        return sum(
            torch.searchsorted(m, tau[:, i : i + 1].to(m.dtype).contiguous(), right=True).squeeze(1)
            for i, m in enumerate(magnitudes)
        )

    def _moved(self, x: torch.Tensor, form: str) -> torch.Tensor:
        """s after a move of size x (K,): a decay step s * (1 - x), or a common shift s + x."""
        s = self.s.detach()
        return s * (1.0 - x.unsqueeze(1)) if form == "decay" else s + x.unsqueeze(1)

    @torch.no_grad()
    def controller_move(
        self, sparsity: float, form: str, magnitudes: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """((K,) move x, (K,) zeros after it): per task, the move of this form that best gives `sparsity`.

        Bisection between moves that make every threshold about sigmoid(-60) (no zeros) and the most
        the form can do: 1/2 for a decay step (all s_l < 0 needed), 1 for a shift.
        """
        goal = torch.full((self.num_tasks,), round(sparsity * sum(self.sizes)), device=self.s.device)
        magnitudes = self.sorted_magnitudes() if magnitudes is None else magnitudes
        s = self.s.detach()
        if form == "decay":
            lo = 1.0 - 60.0 / s.abs().min(1).values.clamp(min=1e-6)
            hi = torch.full_like(lo, 1.0 - 1e-6)
        else:
            lo, hi = -60.0 - s.max(1).values, 60.0 - s.min(1).values
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            short = self.zeros_at(self._moved(mid, form), magnitudes) < goal
            lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
        at_lo, at_hi = (self.zeros_at(self._moved(x, form), magnitudes) for x in (lo, hi))
        take_hi = (at_hi - goal).abs() <= (at_lo - goal).abs()
        return torch.where(take_hi, hi, lo), torch.where(take_hi, at_hi, at_lo)

    def scheduled_sparsity(self) -> float | None:
        """The overall sparsity the target asks for at the current step (None without a target)."""
        if self.target_sparsity is None:
            return None
        return cubic_sparsity(
            self.step, self.total_steps, self.target_sparsity, self.ramp_begin, self.ramp_end
        )

    @torch.no_grad()
    def steer(self, sparsity: float) -> torch.Tensor:
        """Move each task's s so that its overall sparsity is `sparsity`; returns the (K,) moves.

        A decay step needs every s_l < 0 and cannot raise a threshold past 1/2; a task whose goal
        needs more (weights that large are rare) gets a shift instead.
        """
        magnitudes = self.sorted_magnitudes()
        shift, _ = self.controller_move(sparsity, "offset", magnitudes)
        moved, move = self._moved(shift, "offset"), shift
        if self.controller == "decay":
            decay, zeros = self.controller_move(sparsity, "decay", magnitudes)
            close = (zeros - sparsity * sum(self.sizes)).abs() <= 1e-3 * sum(self.sizes)
            usable = (self.s < 0).all(1) & close
            moved = torch.where(usable.unsqueeze(1), self._moved(decay, "decay"), moved)
            move = torch.where(usable, decay, shift)
        self.s.copy_(moved)
        return move

    @torch.no_grad()
    def after_step(self) -> dict[str, torch.Tensor]:
        self.step += 1
        self.steps_taken.fill_(self.step)
        goal = self.scheduled_sparsity()
        metrics = {}
        if goal is not None and goal > 0.0 and self.step % self.control_every == 0:
            metrics["controller_move"] = self.steer(goal)
        metrics["sparsity"] = self.zeros_at(self.s).float() / sum(self.sizes)
        metrics["threshold_mean"] = self.thresholds().mean(1)
        return metrics

    @torch.no_grad()
    def finalize(self) -> dict[str, list]:
        before = self.zeros_at(self.s).float() / sum(self.sizes)
        metrics = {"sparsity_before_calibration": before.tolist()}
        if self.target_sparsity is not None:
            metrics["calibration_move"] = self.steer(self.target_sparsity).tolist()
        metrics["s"] = self.s.detach().cpu().tolist()
        return metrics
