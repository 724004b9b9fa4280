"""The run function of a saturation probe: any nn.Module for K tasks at once, with its hidden states.

`stacked_runner(net, x, names, ...)` gives a `RunFn` (core/probes/probe.py): effective weights (K, *shape)
per name -> (hidden states, outputs) of each task on its own probe inputs, through torch.func's
functional_call (and vmap over the tasks), in float32 or, on request, float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from supermask.core.probes.probe import RunFn


def _capture(net: nn.Module, hidden: Sequence[str]) -> tuple[list[torch.Tensor | None], list]:
    modules = dict(net.named_modules())
    unknown = [h for h in hidden if h not in modules]
    if unknown:
        raise ValueError(f"no module(s) {unknown} to probe; modules: {', '.join(n for n in modules if n)}")
    # One slot per name, in the order of `hidden` (not the order the forward calls the modules in,
    # which differs where a network branches: a U-Net's skips, a block's concatenation).
    seen: list[torch.Tensor | None] = [None] * len(hidden)

    def grab_into(i: int):
        def grab(_module, _inputs, output):
            seen[i] = output[0] if isinstance(output, tuple) else output

        return grab

    return seen, [modules[h].register_forward_hook(grab_into(i)) for i, h in enumerate(hidden)]


def stacked_runner(
    net: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    *,
    fixed: Mapping[str, torch.Tensor] | None = None,
    hidden: Sequence[str] = (),
) -> RunFn:
    """A RunFn over `net` for K tasks at once: task k runs x[k] with the k-th slice of each given tensor
    in place of parameter `names[i]`, and of each `fixed` tensor (K, ...) (e.g. BatchNorm statistics,
    read when the run is called, so statistics updated in place are seen). `hidden` names the modules
    whose outputs are the hidden states. The net runs in eval mode and is left as it was.

    `run(effective, dtype=torch.float64)` runs it in float64: the given tensors, x (if floating) and every
    other floating parameter and buffer of the net are cast for that call (the saturation probe's
    fallback when a scaled pass overflows float32).
    """
    names = list(names)

    def one_task(effective, state, xk, rest):
        seen, handles = _capture(net, hidden)
        try:
            out = functional_call(net, {**rest, **dict(zip(names, effective, strict=True)), **state}, (xk,))
        finally:
            for h in handles:
                h.remove()
        missed = [h for h, state in zip(hidden, seen, strict=True) if state is None]
        if missed:
            raise ValueError(f"the forward never ran module(s) {missed}; probe modules it runs")
        return list(seen), out

    def cast(dtype: torch.dtype | None):
        """(fixed, x, the net's other floating tensors) in `dtype` (None: as they are)."""
        state = dict(fixed or {})
        if dtype is None:
            return state, x, {}
        given = set(names) | set(state)
        rest = {
            n: t.to(dtype)
            for n, t in [*net.named_parameters(), *net.named_buffers()]
            if n not in given and t.is_floating_point()
        }
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        return state, x.to(dtype) if x.is_floating_point() else x, rest

    @torch.no_grad()
    def run(
        effective: list[torch.Tensor], dtype: torch.dtype | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if len(effective) != len(names):
            raise ValueError(f"run got {len(effective)} tensors for {len(names)} names")
        state, xs, rest = cast(dtype)
        was_training = net.training
        net.eval()  # BatchNorm uses (and never updates) the statistics it is given
        try:
            if len(xs) == 1:  # one task: the plain call, without vmap's per-operation cost
                first = {k: v[0] for k, v in state.items()}
                hidden_states, out = one_task([w[0] for w in effective], first, xs[0], rest)
                return [h.unsqueeze(0) for h in hidden_states], out.unsqueeze(0)
            return vmap(one_task, in_dims=(0, 0, 0, None))(list(effective), state, xs, rest)
        finally:
            net.train(was_training)

    run.takes_dtype = True  # type: ignore[attr-defined]
    return run
