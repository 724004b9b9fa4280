"""A synthetic stream needing no files: each task is a random linear teacher over gaussian inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from supermask.data.streams import Stream, register_stream


def _positive_int(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"option {name}={value!r} must be a whole number >= {least}")
    return value


@register_stream("synthetic")
class SyntheticStream(Stream):
    """Task t labels x ~ N(shift*t, I) by argmax of its own orthonormal linear teacher; classes balanced."""

    def __init__(
        self,
        *,
        input_dim: int = 32,
        num_classes: int = 4,
        train_size: int = 512,
        test_size: int = 256,
        shift: float = 0.0,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.input_dim = _positive_int("input_dim", input_dim)
        self.num_classes = _positive_int("num_classes", num_classes, least=2)
        if num_classes > input_dim:
            # Orthonormal teacher rows are what make the classes equally likely.
            raise ValueError(f"option num_classes={num_classes} must not exceed input_dim={input_dim}")
        self.train_size = _positive_int("train_size", train_size)
        self.test_size = _positive_int("test_size", test_size)
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not np.isfinite(shift):
            raise ValueError(f"option shift={shift!r} must be a finite number")
        self.shift = float(shift)
        self.input_shape = (self.input_dim,)
        self._options = {
            "input_dim": input_dim,
            "num_classes": num_classes,
            "train_size": train_size,
            "test_size": test_size,
            "shift": shift,
        }

    @property
    def data_source(self) -> str:
        return "synthetic (generated; no files)"

    def data_identity(self) -> dict[str, Any]:
        return {"dataset": "synthetic", "validation_fraction": self.validation_fraction}

    def teacher(self, t: int) -> np.ndarray:
        """Task t's teacher: (num_classes, input_dim) orthonormal rows; label = argmax(teacher @ (x - shift*t))."""
        self._check_index(t)
        return self._draw(t)[0]

    def _draw(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, t])
        rows = rng.standard_normal((self.num_classes, self.input_dim))
        # Gram-Schmidt by hand: LAPACK's QR may pick different signs on another machine.
        for i in range(len(rows)):
            for j in range(i):
                rows[i] -= (rows[i] @ rows[j]) * rows[j]
            rows[i] /= np.linalg.norm(rows[i])
        train = rng.standard_normal((self.train_size, self.input_dim))
        test = rng.standard_normal((self.test_size, self.input_dim))
        return rows, train, test

    def _arrays(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        teacher, train, test = self._draw(t)
        offset = self.shift * t

        def inputs(z: np.ndarray) -> torch.Tensor:
            return torch.from_numpy((z + offset).astype(np.float32))

        def labels(z: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.argmax(z @ teacher.T, axis=1).astype(np.int64))

        return inputs(train), labels(train), inputs(test), labels(test)
