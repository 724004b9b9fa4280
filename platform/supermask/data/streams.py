"""Task streams: an ordered family of tasks, where task t is a pure function of (stream spec, t)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from supermask.core.bases.networks import BaseSpec, architecture_options
from supermask.core.fields import check_options, in_range
from supermask.core.registry import Registry
from supermask.core.search.batches import StackedTensors, TaskBatches
from supermask.data.datasets import DataConfig, stratified_split

STREAMS: Registry[type[Stream]] = Registry("stream")


@dataclass(frozen=True)
class StreamSpec:
    """Which stream to learn: the `stream` section of a task spec. Task t is a pure function of (spec, t)."""

    name: str = "permuted_mnist"
    num_tasks: int = field(default=10, metadata=in_range(1))
    seed: int = 0
    options: dict = field(default_factory=dict, hash=False)  # stream-specific, e.g. {"angles": [...]}


SPLITS = ("train", "val", "test")
_VALIDATION_SALT = 0x5A11D  # keeps the validation draw independent of the task's own draws from [seed, t]


@dataclass(frozen=True, eq=False)
class TaskData:
    """One task's tensors: inputs (normalised float32, or int64 token ids for token streams) and int64
    labels in [0, num_classes): one per example, or one per position with -100 where there is none."""

    index: int
    task_id: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None  # held out of the train data when validation_fraction > 0
    val_y: torch.Tensor | None = None


class Stream:
    """Base class of every stream; subclasses set input_shape and num_classes and implement `_arrays`."""

    name: ClassVar[str] = "stream"
    # What a task is: "labelled" (TaskData: inputs and labels) or "translation" (an unpaired domain pair).
    task_form: ClassVar[str] = "labelled"
    input_dtype: ClassVar[torch.dtype] = torch.float32  # token streams: torch.int64
    input_shape: tuple[int, ...]
    num_classes: int  # labels per task

    def __init__(
        self,
        *,
        num_tasks: int,
        seed: int = 0,
        data: DataConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks={num_tasks!r} must be a whole number >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a whole number >= 0")
        self.num_tasks = num_tasks
        self.seed = seed
        self.data = DataConfig.from_value(data)
        self._options: dict[str, Any] = {}

    @property
    def validation_fraction(self) -> float:
        return self.data.validation_fraction

    @property
    def data_source(self) -> str:
        """Where the stream's examples come from (loads the dataset on first use)."""
        raise NotImplementedError

    def resolved_data(self) -> DataConfig:
        """The data settings with every choice made (no `auto`): what a run hands to its workers."""
        return self.data

    def data_identity(self) -> dict[str, Any]:
        """The data settings that decide the examples (not where the files are): part of a mask's provenance."""
        return {"validation_fraction": self.validation_fraction}

    def task_id(self, t: int) -> str:
        """The id of task t, e.g. 'permuted_mnist-0003'."""
        self._check_index(t)
        return f"{self.name}-{int(t):04d}"

    def classes(self, t: int) -> tuple[int, ...]:
        """The dataset's class ids behind task t's labels 0..num_classes-1."""
        self._check_index(t)
        return tuple(range(self.num_classes))

    def task(self, t: int) -> TaskData:
        """Task t's train, test and (optionally) validation tensors."""
        self._check_index(t)
        t = int(t)
        train_x, train_y, test_x, test_y = self._arrays(t)
        for part, x in (("train", train_x), ("test", test_x)):
            if tuple(x.shape[1:]) != self.input_shape or x.dtype != self.input_dtype:
                raise AssertionError(f"{self.name} task {t} {part} inputs are {x.dtype} {tuple(x.shape)}")
        val_x = val_y = None
        if self.validation_fraction > 0:
            keep, held = self._validation_split(t, train_y)
            val_x, val_y = train_x[held], train_y[held]
            train_x, train_y = train_x[keep], train_y[keep]
        return TaskData(t, self.task_id(t), train_x, train_y, test_x, test_y, val_x, val_y)

    def _validation_split(self, t: int, train_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, held-out) indices of task t's training examples, seeded by (seed, t): stratified by
        class for one label per example, a plain random share for labels per position."""
        salt = [self.seed, t, _VALIDATION_SALT]
        if train_y.dim() == 1:
            keep, held = stratified_split(train_y.numpy(), self.validation_fraction, salt)
        else:
            order = np.random.default_rng(salt).permutation(len(train_y))
            n_held = int(round(self.validation_fraction * len(order)))
            held, keep = np.sort(order[:n_held]), np.sort(order[n_held:])
        return torch.from_numpy(keep), torch.from_numpy(held)

    def stacked(
        self, ts: Sequence[int], split: str = "train", device: torch.device | str = "cpu"
    ) -> TaskBatches:
        """Tasks `ts`' examples of one split ("train", "val" or "test") on `device`, for a stacked search
        or evaluation. Every task must have as many examples as the others (see `train_examples`)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        parts = [self.task(t) for t in ts]
        xs, ys = [getattr(p, f"{split}_x") for p in parts], [getattr(p, f"{split}_y") for p in parts]
        if any(x is None for x in xs):
            raise ValueError("no validation split: set data.validation_fraction > 0")
        return StackedTensors.of(xs, ys, device)

    def resolve_base(self, base: BaseSpec) -> BaseSpec:
        """`base` with what this stream decides filled in: the input shape and (unless set) the outputs.

        Raises ValueError when the architecture reads token ids and this stream gives none.
        """
        if "vocab_size" in architecture_options(base.arch):
            raise ValueError(
                f"base.arch: {base.arch!r} reads token ids, but stream {self.name!r} gives {self.input_dtype} "
                "inputs; use a token stream (formal_languages, pydoc_chars) or an MLP or convnet base"
            )
        return dataclasses.replace(
            base, input_shape=tuple(self.input_shape), num_outputs=base.num_outputs or self.num_classes
        )

    def train_examples(self, t: int) -> int:
        """How many training examples task t has (tasks of equal size can be searched as one stack)."""
        return len(self.task(t).train_y)

    def spec(self) -> dict[str, Any]:
        """The arguments that rebuild this stream: build_stream(**stream.spec())."""
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "seed": self.seed,
            "data": dataclasses.asdict(self.data),
            **self._options,
        }

    def __len__(self) -> int:
        return self.num_tasks

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "name")
        return f"{type(self).__name__}({options})"

    def _arrays(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train_x, train_y, test_x, test_y) of task t, before any validation split."""
        raise NotImplementedError

    def _check_index(self, t: int) -> None:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < self.num_tasks:
            raise IndexError(
                f"task index {t!r} is out of range for {self.name}: valid 0..{self.num_tasks - 1}"
            )


def register_stream(name: str) -> Callable[[type[Stream]], type[Stream]]:
    """Class decorator: name a Stream subclass and add it to STREAMS."""

    def add(cls: type[Stream]) -> type[Stream]:
        cls.name = name
        return STREAMS.register(name)(cls)

    return add


def stream_options(name: str) -> dict[str, Any]:
    """The options stream `name` accepts beyond the common ones, with their defaults."""
    common = set(inspect.signature(Stream.__init__).parameters)
    params = inspect.signature(STREAMS.get(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k not in common and p.kind is p.KEYWORD_ONLY}


def build_stream(
    name: str,
    *,
    num_tasks: int,
    seed: int = 0,
    data: DataConfig | Mapping[str, Any] | None = None,
    **options: Any,
) -> Stream:
    """The stream registered as `name`; an unknown name or option gets an error listing the known ones."""
    cls = STREAMS.get(name)
    check_options("stream.options", f"stream {name!r}", options, stream_options(name), typed=False)
    return cls(num_tasks=num_tasks, seed=seed, data=data, **options)


def stream_of(spec: StreamSpec, data: DataConfig | None = None) -> Stream:
    """The stream a StreamSpec names, over these data settings."""
    return build_stream(spec.name, num_tasks=spec.num_tasks, seed=spec.seed, data=data, **spec.options)


def select_classes(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The examples whose label is in `classes`, relabelled to each label's position in `classes`."""
    keep = np.isin(y, classes)
    relabel = np.full(int(max(y.max(initial=0), *classes)) + 1, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return x[keep], relabel[y[keep]]


def class_order(num_dataset_classes: int, seed: int, shuffle: bool) -> np.ndarray:
    """The order in which a split stream hands out a dataset's classes."""
    order = np.arange(num_dataset_classes)
    return np.random.default_rng(seed).permutation(order) if shuffle else order
