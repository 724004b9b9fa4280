"""A real-text character stream from `pydoc_data.topics`, Python's own offline documentation (no download)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from supermask.data.streams import register_stream
from supermask.data.token_streams import TokenStream, positive_int


def pydoc_text() -> str:
    """Python's offline documentation topics (pydoc_data.topics), joined in sorted topic order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


CHARS = "\n" + "".join(chr(c) for c in range(32, 127))  # newline and printable ASCII; the rest is UNK


@register_stream("pydoc_chars")
class PydocCharStream(TokenStream):
    """Character-level next-token prediction on Python's documentation text (no download).

    The text is cut into num_tasks contiguous parts; task t trains on windows from the first 90% of
    part t and is tested on windows from its last 10%. Labels: the next character's id at every
    position (`token_names`; id 96 is any character outside newline and printable ASCII). The text
    is that of the running Python, so another Python version may give other examples: `data_source`
    names the version and the text's hash.
    """

    def __init__(
        self, *, seq_len: int = 64, train_size: int = 2000, test_size: int = 500, **common: Any
    ) -> None:
        super().__init__(**common)
        self.seq_len = positive_int("seq_len", seq_len)
        self.train_size = positive_int("train_size", train_size)
        self.test_size = positive_int("test_size", test_size)
        self.vocab_size = len(CHARS) + 1
        self.per_position = True
        self.input_shape = (self.seq_len,)
        self.num_classes = self.vocab_size
        self.token_names = (*CHARS, "<unk>")
        self.label_names = self.token_names
        self._options = {"seq_len": seq_len, "train_size": train_size, "test_size": test_size}
        self._ids: np.ndarray | None = None
        part = len(self.ids()) // self.num_tasks
        if part // 10 < self.seq_len + 1:
            raise ValueError(
                f"{self.num_tasks} tasks leave {part} characters each, too few for test windows of "
                f"{self.seq_len + 1}; use fewer tasks or a shorter seq_len"
            )

    def ids(self) -> np.ndarray:
        """The whole text as token ids."""
        if self._ids is None:
            lookup = np.full(0x110000, len(CHARS), dtype=np.int64)
            lookup[[ord(c) for c in CHARS]] = np.arange(len(CHARS))
            self._ids = lookup[np.frombuffer(pydoc_text().encode("utf-32-le"), dtype=np.uint32)]
        return self._ids

    @property
    def data_source(self) -> str:
        text = pydoc_text()
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        version = ".".join(map(str, sys.version_info[:3]))
        return f"pydoc_data.topics of Python {version} ({len(text)} characters, sha256 {digest})"

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to text (UNK as U+FFFD)."""
        return "".join(CHARS[i] if i < len(CHARS) else "\ufffd" for i in ids)

    def _windows(
        self, region: np.ndarray, size: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        starts = rng.integers(0, len(region) - self.seq_len, size=size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)
        chunks = region[idx]
        return torch.from_numpy(chunks[:, :-1].copy()), torch.from_numpy(chunks[:, 1:].copy())

    def _arrays(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.ids()
        part = len(ids) // self.num_tasks
        chunk = ids[t * part : (t + 1) * part]
        split = part - part // 10
        train_x, train_y = self._windows(
            chunk[:split], self.train_size, np.random.default_rng([self.seed, t, 0])
        )
        test_x, test_y = self._windows(
            chunk[split:], self.test_size, np.random.default_rng([self.seed, t, 1])
        )
        return train_x, train_y, test_x, test_y
