"""SGD (momentum), RMSprop and Adam, written out: the same arithmetic as torch.optim's single-tensor code.

They are elementwise, so a stack of K tasks' scores steps exactly as K separate searches would.
Written here rather than taken from torch.optim because building a torch.optim optimizer imports
torch._dynamo (about 2 s in every fresh worker process) and these three need nothing of it.
`state_dict()` holds tensors and plain numbers only, so checkpoints load with weights_only=True.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Optimizer:
    """An elementwise optimizer over a list of tensors, each updated from its own `.grad`."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> None:
        self.params = [p for p in params]
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.weight_decays = [self.weight_decay] * len(self.params)  # per tensor; see set_weight_decay
        self.state: list[dict[str, torch.Tensor | int]] = [{} for _ in self.params]

    def set_weight_decay(self, param: torch.Tensor, weight_decay: float) -> None:
        """Give one tensor its own L2 weight decay (e.g. STR's thresholds s), the others keep theirs."""
        index = next((i for i, p in enumerate(self.params) if p is param), None)
        if index is None:
            raise ValueError("set_weight_decay: that tensor is not one this optimizer updates")
        self.weight_decays[index] = float(weight_decay)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, state, decay in zip(self.params, self.state, self.weight_decays, strict=True):
            if p.grad is None:
                continue
            grad = p.grad if decay == 0 else p.grad.add(p, alpha=decay)
            self._update(p, grad, state)

    def _update(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"lr": self.lr, "state": [dict(s) for s in self.state]}

    def load_state_dict(self, saved: dict) -> None:
        if len(saved["state"]) != len(self.params):
            raise ValueError(
                f"optimizer state for {len(saved['state'])} tensors, this one has {len(self.params)}"
            )
        self.lr = float(saved["lr"])
        self.state = [
            {k: v.to(p.device) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for p, s in zip(self.params, saved["state"], strict=True)
        ]


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum and L2 weight decay, as torch.optim.SGD (no dampening, no Nesterov)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        self.momentum = float(momentum)

    def _update(self, p, grad, state) -> None:
        if self.momentum:
            if "momentum" not in state:
                state["momentum"] = grad.clone()
            else:
                state["momentum"].mul_(self.momentum).add_(grad)
            grad = state["momentum"]
        p.add_(grad, alpha=-self.lr)


class RMSprop(Optimizer):
    """RMSprop (alpha 0.99, eps 1e-8, not centred, no momentum), as torch.optim.RMSprop's defaults."""

    def __init__(
        self, params, lr: float, weight_decay: float = 0.0, alpha: float = 0.99, eps: float = 1e-8
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.alpha, self.eps = alpha, eps

    def _update(self, p, grad, state) -> None:
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
        square_avg = state["square_avg"]
        square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        p.addcdiv_(grad, square_avg.sqrt().add_(self.eps), value=-self.lr)


class Adam(Optimizer):
    """Adam (betas 0.9, 0.999, eps 1e-8, L2 weight decay), as torch.optim.Adam's defaults."""

    def __init__(
        self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps = betas, eps

    def _update(self, p, grad, state) -> None:
        if "exp_avg" not in state:
            state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        beta1, beta2 = self.betas
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1 ** state["step"])
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** state["step"])).add_(self.eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)
