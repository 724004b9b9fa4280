"""Recovery of a task's neuron mask without its task id: descent on output entropy plus reservoir energy.

SupSup's HopSupSup recovery. One free score vector per masked hidden layer is started at the mean of
the stored patterns (or, for comparison, at zero, i.e. every neuron kept, or at random); then for
each of a task's B test batches b = 0..B-1 one SGD step on

    (1 - b/B) * H(softmax(output under the mask 1[score >= 0]))  +  gamma * (b/B) * sum_l E_l(sign(score))

with straight-through gradients from the sign to the scores: the output entropy steers the pattern
towards a mask that is confident on these inputs, then the energy, annealed in as the entropy is
annealed out, pulls it into the nearest attractor. (The source's code anneals with (b+1)/B; here
b/B, so the first step is pure entropy and the last almost pure energy.) Defaults: SGD lr 500,
momentum 0.9, weight decay 1e-4, gamma 1.5e-3, as in the source.

`recover_batch` recovers one test batch alone, then scores candidates in one shot: the annealed
end settled by the memory's sign dynamics to a fixed point (`recall`), and, with `one_shot`, the
memory's own attractors (`Reservoir.attractors`: fixed points reached from random states, found from
the matrices alone, no stored copy of any pattern), one per layer combined; the candidate whose
masked network gives the lowest output entropy on the batch is kept.

Any memory with `dims`, `count`, `mean_state()` and a differentiable `torch_energy(states)` serves:
`core.hopfield.reservoir.Reservoir` (E = -1/2 z^T Psi z per layer, with the whole matrix, as the source) or
`DenseMemory` (benchmarks/dense_memory.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from supermask.core.bases.networks import BaseNetwork
from supermask.core.fields import check_fields, choices, in_range
from supermask.core.masks.neuron import NeuronForward, neuron_bits, neuron_dims, neuron_forward

STARTS = ("mean", "zero", "random")


@dataclass(frozen=True)
class RecoveryConfig:
    """How a neuron mask is recovered without a task id: the `recovery` section of a task spec.

    `recover_patterns` takes one step per batch it is given (the source's protocol: a task's test
    batches one after another); `recover_batch` recovers one test batch of `batch_size` images alone,
    with `steps` steps over it, then (`recall`) lets the memory's sign dynamics settle the pattern
    into the attractor it is in.
    """

    lr: float = field(default=500.0, metadata=in_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=in_range(0.0, 1.0))
    weight_decay: float = field(default=1e-4, metadata=in_range(0.0))
    gamma: float = field(default=1.5e-3, metadata=in_range(0.0))
    start: str = field(default="mean", metadata=choices(*STARTS))
    seed: int = 0  # the random start's draw
    steps: int = field(default=30, metadata=in_range(1))  # recover_batch: annealing steps over one batch
    batch_size: int = field(default=50, metadata=in_range(1))  # test images recovered together
    recall: bool = True  # recover_batch: finish with sign descent on the memory to its fixed point
    one_shot: bool = True  # recover_batch: also score the memory's attractors, keep the lowest entropy
    attractor_starts: int = field(default=256, metadata=in_range(1))  # random states the attractors come from
    max_candidates: int = field(default=64, metadata=in_range(1))  # attractor combinations scored per batch


class PatternMemory(Protocol):
    """What recovery needs from a memory of neuron patterns."""

    dims: list[int]

    @property
    def count(self) -> int: ...

    def mean_state(self) -> list[np.ndarray]: ...

    def torch_energy(self, states: list[torch.Tensor]) -> torch.Tensor: ...


@dataclass
class RecoveryResult:
    """A recovered pattern, when it settled and how it got there."""

    patterns: list[np.ndarray]  # final boolean (d,) pattern per hidden layer
    steps: int  # optimizer steps taken (one per batch)
    converged_step: int  # steps until the sign pattern stopped changing (0: the start never changed)
    history: list[list[np.ndarray]]  # the pattern at the start and after every step (steps + 1 entries)
    trace: list[dict[str, float]]  # per step: entropy, energy, loss, flips, (correct, seen), (distance)


def output_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the entropy of softmax(logits)."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()


def hamming(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """Bits that differ between two per-layer boolean patterns."""
    return int(
        sum(np.count_nonzero(np.asarray(x, bool) != np.asarray(y, bool)) for x, y in zip(a, b, strict=True))
    )


def nearest_pattern(
    recovered: list[np.ndarray], stored: Sequence[list[np.ndarray]]
) -> tuple[int, int, list[int]]:
    """(index of the nearest stored pattern, its Hamming distance, distances to all) over all layers."""
    if not stored:
        raise ValueError("no stored patterns to compare with")
    distances = [hamming(recovered, s) for s in stored]
    best = int(np.argmin(distances))
    return best, distances[best], distances


def start_scores(memory: PatternMemory, config: RecoveryConfig) -> list[np.ndarray]:
    """The free scores recovery starts from: the stored patterns' mean, zeros (all kept) or U(-1, 1)."""
    if config.start == "mean":
        if memory.count == 0:
            raise ValueError("recovery from the mean needs stored patterns; the memory is empty")
        return [np.asarray(m, dtype=np.float32) for m in memory.mean_state()]
    if config.start == "zero":
        return [np.zeros(d, dtype=np.float32) for d in memory.dims]
    rng = np.random.default_rng(config.seed)
    return [rng.uniform(-1.0, 1.0, size=d).astype(np.float32) for d in memory.dims]


def recover_patterns(
    model: BaseNetwork | NeuronForward,
    memory: PatternMemory,
    batches: Sequence[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    config: RecoveryConfig | None = None,
    *,
    bn_state: dict[str, torch.Tensor] | None = None,
    reference: list[np.ndarray] | None = None,
    device: torch.device | str | None = None,
) -> RecoveryResult:
    """Recover a neuron mask from B batches of one task (inputs, or (inputs, labels)) without its id.

    `model` is a base network (run in eval mode; neurons masked through its gates, or as rows of its
    weights: `neuron_masks.neuron_forward`) or any `forward(x, bits) -> logits` taking one 0/1 tensor
    per hidden layer. `reference` (the right
    task's stored pattern, when the caller knows it) only adds a per-step Hamming distance to the
    trace; labels only add per-step correct counts. Neither steers recovery.
    """
    config = config or RecoveryConfig()
    check_fields(config, "recovery.")
    base = model if isinstance(model, BaseNetwork) else None
    if base is not None:
        if neuron_dims(base.layer_shapes) != list(memory.dims):
            raise ValueError(
                f"memory holds patterns of sizes {list(memory.dims)}, the base's hidden layers have "
                f"{neuron_dims(base.layer_shapes)}; use a memory built for this base"
            )
        forward = neuron_forward(base, bn_state)
        device = base.weights()[0].device if device is None else device
    else:
        forward = model
        device = "cpu" if device is None else device
    if len(batches) == 0:
        raise ValueError("recovery needs at least one batch")
    scores = [torch.tensor(s, device=device, requires_grad=True) for s in start_scores(memory, config)]
    optimizer = torch.optim.SGD(
        scores, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    was_training = base.training if base is not None else False
    if base is not None:
        base.eval()
    current = [(s >= 0).detach().cpu().numpy() for s in scores]
    history, trace = [current], []
    total = len(batches)
    try:
        for b, batch in enumerate(batches):
            x, y = batch if isinstance(batch, tuple | list) else (batch, None)
            x = x.to(device)
            bits = [neuron_bits(s) for s in scores]
            logits = forward(x, bits)
            entropy = output_entropy(logits)
            energy = memory.torch_energy([2 * m - 1 for m in bits])
            t = b / total
            loss = (1 - t) * entropy + config.gamma * t * energy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            new = [(s >= 0).detach().cpu().numpy() for s in scores]
            row = {
                "entropy": float(entropy.detach()),
                "energy": float(energy.detach()),
                "loss": float(loss.detach()),
                "flips": float(hamming(new, current)),
            }
            if y is not None:
                row["correct"] = float((logits.detach().argmax(1).cpu() == y.cpu()).sum())
                row["seen"] = float(len(y))
            if reference is not None:
                row["distance"] = float(hamming(new, reference))
            trace.append(row)
            history.append(new)
            current = new
    finally:
        if base is not None:
            base.train(was_training)
    changed = [i for i in range(1, len(history)) if hamming(history[i], history[i - 1])]
    return RecoveryResult(
        patterns=history[-1],
        steps=total,
        converged_step=changed[-1] if changed else 0,
        history=history,
        trace=trace,
    )


@dataclass
class BatchRecovery:
    """The attractor recovered for one batch, how well it fits the batch, and how it was reached."""

    patterns: list[np.ndarray]  # boolean (d,) per hidden layer
    entropy: float  # mean output entropy of the batch under the pattern: lower is a better fit
    predictions: np.ndarray  # argmax over the real classes, per image
    converged_step: int  # annealing steps until the sign pattern stopped changing
    recall_sweeps: int  # sign-descent sweeps after the annealing (0: it ended on a fixed point)
    fixed_point: bool  # whether the annealed end, settled, is a fixed point of the memory's sign dynamics
    candidates: int = 1  # distinct patterns scored (the settled annealed end and the attractors)
    from_annealing: bool = True  # whether the kept pattern is the settled annealed end


def recover_batch(
    model: BaseNetwork | NeuronForward,
    memory: PatternMemory,
    x: torch.Tensor,
    config: RecoveryConfig | None = None,
    *,
    num_classes: int | None = None,
    bn_state: dict[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> BatchRecovery:
    """Recover the neuron mask of one test batch without its task id: `config.steps` annealed steps on
    the batch (`recover_patterns`), then, with `config.recall`, sign descent on the memory (if it has one);
    with `config.one_shot`, the lowest-entropy candidate among that and the memory's attractors."""
    config = config or RecoveryConfig()
    result = recover_patterns(model, memory, [x] * config.steps, config, bn_state=bn_state, device=device)
    patterns, sweeps, fixed = result.patterns, 0, True
    recall = getattr(memory, "recall", None)
    if config.recall and recall is not None:
        settled = recall(patterns)
        patterns = [np.asarray(p, dtype=bool) for p in settled.patterns]
        sweeps, fixed = max(settled.steps), all(settled.converged)
    candidates = [patterns]
    attractors = getattr(memory, "attractors", None)
    if config.one_shot and attractors is not None:
        candidates += _combinations(attractors(config.attractor_starts, config.seed), config.max_candidates)
    candidates = list({_key(c): c for c in candidates}.values())  # distinct, the annealed end first
    forward = neuron_forward(model, bn_state) if isinstance(model, BaseNetwork) else model
    if isinstance(model, BaseNetwork):
        device = model.weights()[0].device if device is None else device
        model.eval()
    x = x.to(device or "cpu")
    best = None
    with torch.no_grad():
        for i, c in enumerate(candidates):
            logits = forward(x, [torch.as_tensor(p, device=device or "cpu").float() for p in c])
            entropy = float(output_entropy(logits))
            if best is None or entropy < best[0]:
                best = (entropy, i, logits)
    entropy, index, logits = best
    predictions = (logits[:, :num_classes] if num_classes else logits).argmax(1).cpu().numpy()
    return BatchRecovery(
        candidates[index],
        entropy,
        predictions,
        result.converged_step,
        sweeps,
        fixed,
        candidates=len(candidates),
        from_annealing=index == 0,
    )


def _key(patterns: list[np.ndarray]) -> bytes:
    return b"".join(np.packbits(np.asarray(p, dtype=bool)).tobytes() for p in patterns)


def _combinations(per_layer: list[list[np.ndarray]], limit: int) -> list[list[np.ndarray]]:
    """One attractor per layer, every combination (lowest summed energy rank first), at most `limit`."""
    if not per_layer or any(len(a) == 0 for a in per_layer):
        return []
    ranks = sorted(itertools.product(*[range(len(a)) for a in per_layer]), key=lambda r: (sum(r), r))
    return [[per_layer[layer][i] for layer, i in enumerate(r)] for r in ranks[:limit]]
