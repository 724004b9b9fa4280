"""Translation streams: each task is one unpaired domain pair (X, Y), a pure function of (stream spec, t).

- `toy_shapes`: GANimorph's toy shape-deformation data, generated (no files). Task t draws its images
  from its own seed, with the toy settings of `variants[t]` (cycled) over the stream's `shapes`
  options, so one stream can hold several domain pairs (e.g. milder and stronger deformations).
  Held-out pairs keep their polygons for evaluation only; training stays unpaired.
- `unpaired_folders`: real data as CycleGAN ships it, one folder per task with
  trainA/ trainB/ testA/ testB/ (A = X, B = Y): `roots[t]`.

A translation stream is registered in the same registry as the classification streams (so a spec
names it the same way) but hands out `TranslationTask`s instead of labelled tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from supermask.core.translation.evaluation import TranslationTestSet
from supermask.core.translation.trainer import UnpairedImages
from supermask.data.streams import Stream, register_stream
from supermask.data.toy_shapes import POLYGON_CHANNEL, ToyShapes, ToyShapesConfig
from supermask.data.unpaired_folders import LAYOUT, load_unpaired_folders


@dataclass(frozen=True, eq=False)
class TranslationTask:
    """One domain pair: unpaired training images, and held-out test (and validation) images."""

    index: int
    task_id: str
    train: UnpairedImages
    test: TranslationTestSet
    val: TranslationTestSet | None = None  # when data.validation_fraction > 0 (sweeps)


class TranslationStream(Stream):
    """A stream whose tasks are unpaired image-translation problems (no labels, no classes)."""

    num_classes = 0
    task_form = "translation"

    def __init__(self, *, resolution: int = 32, **common: Any) -> None:
        super().__init__(**common)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 16:
            raise ValueError(f"option resolution={resolution!r} must be a whole number >= 16")
        self.resolution = resolution
        self.input_shape = (3, resolution, resolution)

    def translation_task(self, t: int) -> TranslationTask:
        """Task t's images."""
        self._check_index(t)
        return self._translation_task(int(t))

    def _translation_task(self, t: int) -> TranslationTask:
        raise NotImplementedError

    def task(self, t: int):
        raise TypeError(f"{self.name} is a translation stream: use translation_task(t)")

    def train_examples(self, t: int) -> int:
        raise TypeError(f"{self.name} is a translation stream; its tasks have no labelled examples")


def _task_seed(seed: int, t: int) -> int:
    digest = hashlib.blake2b(f"toy_shapes:{seed}:{t}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") >> 1


TOY_OPTIONS = {f.name for f in dataclasses.fields(ToyShapesConfig)} - {"resolution", "seed"}


@register_stream("toy_shapes")
class ToyShapesStream(TranslationStream):
    """Toy shape deformation (GANimorph): task t is a toy dataset of its own seed and settings."""

    def __init__(
        self,
        *,
        resolution: int = 32,
        train_size: int = 1000,
        test_size: int = 100,
        shapes: dict | None = None,
        variants: list | None = None,
        **common: Any,
    ) -> None:
        super().__init__(resolution=resolution, **common)
        for name, value in (("train_size", train_size), ("test_size", test_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"option {name}={value!r} must be a whole number >= 1")
        self.train_size, self.test_size = train_size, test_size
        self.shapes = dict(shapes or {})
        self.variants = [dict(v) for v in (variants or [{}])]
        for where, overrides in [("shapes", self.shapes)] + [
            (f"variants[{i}]", v) for i, v in enumerate(self.variants)
        ]:
            if not isinstance(overrides, dict):
                raise ValueError(
                    f"option {where}: got {overrides!r}; must be a mapping of toy-shape settings"
                )
            unknown = sorted(set(overrides) - TOY_OPTIONS)
            if unknown:
                raise ValueError(
                    f"option {where}: unknown toy-shape setting(s) {', '.join(unknown)}; allowed: "
                    f"{', '.join(sorted(TOY_OPTIONS))}"
                )
        for t in range(min(self.num_tasks, len(self.variants))):
            self.config(t)  # every variant's settings are checked before anything runs
        self._options = {
            "resolution": resolution,
            "train_size": train_size,
            "test_size": test_size,
            "shapes": self.shapes,
            "variants": self.variants,
        }

    def config(self, t: int) -> ToyShapesConfig:
        """Task t's toy settings: the stream's shapes, then its variant's, at the stream's resolution."""
        overrides = {**self.shapes, **self.variants[t % len(self.variants)]}
        try:
            return ToyShapesConfig(resolution=self.resolution, seed=_task_seed(self.seed, t), **overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"option variants[{t % len(self.variants)}]: {e}") from None

    @property
    def data_source(self) -> str:
        return f"toy shapes (generated at {self.resolution} px; no files)"

    def data_identity(self) -> dict[str, Any]:
        return {"dataset": "toy_shapes", "validation_fraction": self.validation_fraction}

    def _translation_task(self, t: int) -> TranslationTask:
        toy = ToyShapes(self.config(t))
        x, y = toy.unpaired(self.train_size)
        train = UnpairedImages(torch.from_numpy(x), torch.from_numpy(y))
        val = None
        if self.validation_fraction > 0:
            val = self._pairs(toy, "val", max(1, round(self.validation_fraction * self.test_size)))
        return TranslationTask(t, self.task_id(t), train, self._pairs(toy, "test", self.test_size), val)

    @staticmethod
    def _pairs(toy: ToyShapes, split: str, count: int) -> TranslationTestSet:
        xs, ys, shapes = toy.test_pairs(count, split=split)
        return TranslationTestSet(
            torch.from_numpy(xs),
            torch.from_numpy(ys),
            [s.regular_polygon() for s in shapes],
            [s.deformed_polygon() for s in shapes],
            channel=POLYGON_CHANNEL,
            paired=True,
        )


@register_stream("unpaired_folders")
class UnpairedFoldersStream(TranslationStream):
    """Real unpaired data: task t reads roots[t]/trainA, trainB, testA, testB (A = X, B = Y)."""

    def __init__(
        self, *, roots: list | None = None, resolution: int = 64, limit: int | None = None, **common: Any
    ) -> None:
        super().__init__(resolution=resolution, **common)
        if not roots or not all(isinstance(r, str) for r in roots):
            raise ValueError(
                f"option roots: got {roots!r}; list one folder per task, each laid out as {LAYOUT}"
            )
        if len(roots) < self.num_tasks:
            raise ValueError(
                f"option roots: {len(roots)} folder(s) for {self.num_tasks} tasks; list one per task"
            )
        self.roots = list(roots)
        self.limit = limit
        self._options = {"roots": self.roots, "resolution": resolution, "limit": limit}

    @property
    def data_source(self) -> str:
        return f"image folders {', '.join(self.roots[: self.num_tasks])} at {self.resolution} px"

    def data_identity(self) -> dict[str, Any]:
        return {"dataset": "unpaired_folders", "roots": [str(Path(r).resolve()) for r in self.roots]}

    def _translation_task(self, t: int) -> TranslationTask:
        root = self.roots[t]
        train = UnpairedImages(*load_unpaired_folders(root, self.resolution, "train", self.limit))
        x, y = load_unpaired_folders(root, self.resolution, "test", self.limit)
        n = min(len(x), len(y))
        return TranslationTask(t, self.task_id(t), train, TranslationTestSet(x[:n], y[:n]))
