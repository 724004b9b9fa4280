"""One task of a spec, learned and evaluated: the unit of work a runtime schedules (no Ray here)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch

from supermask.core.nets import BaseNetwork, BaseSpec, build_base
from supermask.core.packing import TaskMask
from supermask.core.search import MaskSearch, SearchConfig, evaluate_mask
from supermask.data import Stream, build_stream
from supermask.spec import Spec


def make_stream(spec: Spec) -> Stream:
    """The task stream a spec names."""
    return _cached_stream(
        spec.stream.name,
        spec.stream.num_tasks,
        spec.stream.seed,
        tuple(sorted((k, _freeze(v)) for k, v in spec.data.__dict__.items() if k != "validation_fraction")),
        spec.data.validation_fraction,
        tuple(sorted((k, _freeze(v)) for k, v in spec.stream.options.items())),
    )


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=4)
def _cached_stream(name, num_tasks, seed, data_items, validation_fraction, option_items) -> Stream:
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in option_items}
    return build_stream(
        name,
        num_tasks=num_tasks,
        seed=seed,
        data=dict(data_items),
        validation_fraction=validation_fraction,
        **options,
    )


def make_base_spec(spec: Spec, stream: Stream) -> BaseSpec:
    """The frozen base a spec describes, shaped for its stream."""
    return BaseSpec(
        arch=spec.base.arch,
        seed=spec.base.seed,
        init=spec.base.init,
        input_shape=tuple(stream.input_shape),
        num_outputs=spec.base.num_outputs or stream.num_classes,
        batchnorm=spec.base.batchnorm,
        options=dict(spec.base.options),
    )


@functools.lru_cache(maxsize=2)
def _cached_base(base_spec_items: tuple, device: str) -> BaseNetwork:
    d = dict(base_spec_items)
    d["options"] = dict(d["options"])
    return build_base(BaseSpec.from_dict(d), device)


def make_base(spec: Spec, stream: Stream, device: str = "cpu") -> BaseNetwork:
    """The frozen base for a spec, built once per process and device."""
    d = make_base_spec(spec, stream).to_dict()
    d["input_shape"] = tuple(d["input_shape"])
    d["options"] = tuple(sorted(d["options"].items()))
    return _cached_base(tuple(sorted(d.items())), device)


def make_search_config(spec: Spec) -> SearchConfig:
    """The mask-search settings of a spec."""
    options = dict(spec.mask.options)
    if spec.mask.method == "topk":
        options.setdefault("policy", spec.mask.policy)
    s = spec.search
    return SearchConfig(
        method=spec.mask.method,
        density=spec.mask.density,
        method_options=options,
        optimizer=s.optimizer,
        lr=s.lr,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        schedule=s.schedule,
        epochs=s.epochs,
        iterations=s.iterations,
        batch_size=s.batch_size,
        seed=s.seed,
    )


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a search checkpoint atomically: a crash leaves the old checkpoint or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_search(spec: Spec, t: int, device: str = "cpu", **options) -> MaskSearch:
    """A mask search for task `t` of the spec's stream, not yet started."""
    stream = make_stream(spec)
    task = stream.task(t)
    base = make_base(spec, stream, device)
    config = make_search_config(spec)
    config.seed = spec.search.seed * 100_003 + t  # distinct, reproducible score init per task
    return MaskSearch(
        base,
        task.train_x,
        task.train_y,
        config,
        task_id=task.task_id,
        num_classes=stream.num_classes,
        device=device,
        **options,
    )


def learn_task(
    spec: Spec,
    t: int,
    device: str = "cpu",
    hooks=(),
    checkpoint_path: Path | None = None,
    checkpoint_every: int = 0,
    on_start: Callable[[MaskSearch], None] | None = None,
) -> TaskMask:
    """Search the mask of task `t`, resuming from (and checkpointing to) `checkpoint_path` when given."""
    search = new_search(spec, t, device)
    if checkpoint_path is not None and checkpoint_path.exists():
        search.load_state_dict(torch.load(checkpoint_path, map_location="cpu", weights_only=False))
    if on_start is not None:
        on_start(search)
    save = (lambda state: save_checkpoint(state, checkpoint_path)) if checkpoint_path is not None else None
    mask = search.run(list(hooks), checkpoint_every=checkpoint_every if save else 0, on_checkpoint=save)
    mask.metrics["task_index"] = t
    return mask


def evaluate_task(spec: Spec, t: int, mask: TaskMask, device: str = "cpu", split: str = "test") -> float:
    """Accuracy of task `t` with its mask given (scenario GG), on the test or validation split."""
    stream = make_stream(spec)
    task = stream.task(t)
    x, y = (task.test_x, task.test_y) if split == "test" else (task.val_x, task.val_y)
    if x is None:
        raise ValueError("no validation split: set data.validation_fraction > 0")
    base = make_base(spec, stream, device)
    with torch.inference_mode():
        return evaluate_mask(
            base,
            mask,
            x,
            y,
            num_classes=stream.num_classes,
            batch_size=spec.run.eval_batch_size,
            device=device,
        )
