"""The record a learned translation task is kept as, on NumPy alone: its two generators' arrays and metadata.

A `TranslationRecord` has kind "translation", never "mask": it holds the generators X->Y and Y->X
(the discriminators only serve training), either

- `method: trained`: every generator parameter in float32 (arrays `g_xy/<param>`, `g_yx/<param>`), or
- `method: supermask`: the masks over the shared frozen generators, bit-packed (`g_xy/bits`), plus
  the free parameters in float32 (`g_xy/free/<param>`, none with free_params 'none'), and the base
  fingerprint of the frozen networks they belong to.

Arrays are plain NumPy and the metadata plain JSON (no pickle); `checksum` covers both. Building a
record from a trainer and generators from a record (torch) is `core.translation.records`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

KIND_TRANSLATION = "translation"
GENERATORS = ("g_xy", "g_yx")


@dataclass(eq=False)
class TranslationRecord:
    """One translation task's generators, with what produced them and how they scored."""

    task_id: str
    method: str  # "trained" or "supermask"
    settings: dict  # TranslationSettings.to_dict()
    arrays: dict[str, np.ndarray]
    mask: dict | None = None  # MaskSpec as a dict (supermask)
    layers: dict = field(default_factory=dict)  # supermask: {generator: [[weight name, shape], ...]}
    base_fingerprint: str = ""
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    created: float = 0.0
    kind: str = KIND_TRANSLATION

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays: what one more task costs to keep."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def meta(self) -> dict:
        """Every field but the arrays, as JSON-ready values."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arrays"}
        return json.loads(json.dumps(out, sort_keys=True, default=_plain))

    @property
    def checksum(self) -> str:
        """blake2b over the metadata and every array (names, dtypes, shapes and bytes)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps(self.meta(), sort_keys=True, separators=(",", ":")).encode())
        for name in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[name])
            h.update(f"{name}:{a.dtype.str}:{list(a.shape)};".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    @classmethod
    def from_meta(cls, meta: dict, arrays: dict[str, np.ndarray]) -> TranslationRecord:
        """The record whose `meta()` is `meta` (keys that are not fields of a record are left out)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"arrays"}
        return cls(arrays=arrays, **{k: v for k, v in meta.items() if k in names})


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
