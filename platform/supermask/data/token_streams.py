"""Token streams: inputs are int64 token ids (examples, max_len), with a padding id no real token uses.

Real tokens are 0..vocab_size-1 and the padding id is `vocab_size` (`pad_id`); padding only ever
follows the real tokens. Labels are one class per sequence, shape (examples,), or one per position,
shape (examples, max_len), with IGNORE (-100) where a position has no target. A token stream fixes
the options of the transformer base that reads it (`base_options`: vocabulary and kind of output),
so a spec never repeats them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from supermask.core.bases.networks import BaseSpec, architecture_options
from supermask.core.search.losses import IGNORE_INDEX
from supermask.data.streams import Stream

IGNORE = IGNORE_INDEX  # label of positions without a target (cross_entropy's default ignore_index)


def positive_int(option: str, value: Any) -> int:
    """A stream option that must be a whole number >= 1 (ValueError naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"option {option}={value!r} must be a whole number >= 1")
    return value


class TokenStream(Stream):
    """A stream of int64 token-id inputs: real tokens 0..vocab_size-1, padding vocab_size."""

    input_dtype: ClassVar[torch.dtype] = torch.int64
    vocab_size: int
    per_position: bool  # labels per position (next-token) rather than per sequence
    token_names: tuple[str, ...]
    label_names: tuple[str, ...]  # what each label value means

    @property
    def pad_id(self) -> int:
        return self.vocab_size

    def base_options(self) -> dict[str, Any]:
        """The transformer base options this stream fixes: its vocabulary and its kind of output."""
        return {"vocab_size": self.vocab_size, "output": "tokens" if self.per_position else "sequence"}

    def resolve_base(self, base: BaseSpec) -> BaseSpec:
        """`base` with the input shape, the outputs and the options this stream fixes (`base_options`).

        Raises ValueError when the architecture does not read token ids, or when the spec sets one of
        those options to another value than the stream's.
        """
        allowed = architecture_options(base.arch)
        fixed = self.base_options()
        if not set(fixed) <= set(allowed):
            raise ValueError(
                f"base.arch: stream {self.name!r} gives int64 token ids, which {base.arch!r} cannot read; "
                "use base.arch transformer"
            )
        for key, value in fixed.items():
            if key in base.options and base.options[key] != value:
                raise ValueError(
                    f"base.options.{key}: got {base.options[key]!r}, but stream {self.name!r} needs {value!r}; "
                    "leave it out (the stream sets it)"
                )
        return dataclasses.replace(
            base,
            options={**base.options, **fixed},
            input_shape=tuple(self.input_shape),
            num_outputs=base.num_outputs or self.num_classes,
        )
