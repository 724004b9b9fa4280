"""What a learned translation task is kept as: its two generators, as trained weights or as masks.

A `TranslationRecord` has kind "translation", never "mask": it holds the generators X->Y and Y->X
(the discriminators only serve training), either

- `method: trained`: every generator parameter in float32 (arrays `g_xy/<param>`, `g_yx/<param>`), or
- `method: supermask`: the masks over the shared frozen generators, bit-packed (`g_xy/bits`), plus
  the free parameters in float32 (`g_xy/free/<param>`, none with free_params 'none'), and the base
  fingerprint of the frozen networks they belong to.

Arrays are plain NumPy and the metadata plain JSON (no pickle); `checksum` covers both.
`generators_from_record` rebuilds working generators, refusing a record of another base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from supermask.core.masks import MaskSpec
from supermask.core.records.packing import pack_masks, unpack_masks
from supermask.core.translation.generator import Generator, maskable_weights
from supermask.core.translation.masked import MaskedNetwork, mask_density
from supermask.core.translation.settings import TranslationSettings
from supermask.core.translation.trainer import TranslationTrainer, base_fingerprint, frozen_networks

KIND_TRANSLATION = "translation"
GENERATORS = ("g_xy", "g_yx")


class RecordMismatch(ValueError):
    """A record that does not fit the networks it is applied to (another base, other shapes)."""


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

    def translation_settings(self) -> TranslationSettings:
        names = {f.name for f in dataclasses.fields(TranslationSettings)}
        return TranslationSettings(**{k: v for k, v in self.settings.items() if k in names})


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy().copy()


def record_from_trainer(
    trainer: TranslationTrainer,
    task_id: str,
    *,
    metrics: dict | None = None,
    provenance: dict | None = None,
    fingerprint: str | None = None,
) -> TranslationRecord:
    """The record of a trainer's generators as they stand (`fingerprint`: the base's, if known already)."""
    s = trainer.settings
    nets = {"g_xy": trainer.g_xy, "g_yx": trainer.g_yx}
    arrays: dict[str, np.ndarray] = {}
    layers: dict = {}
    if s.method == "trained":
        for g, net in nets.items():
            for name, p in net.state_dict().items():
                arrays[f"{g}/{name}"] = _numpy(p)
    else:
        for g, net in nets.items():
            assert isinstance(net, MaskedNetwork)
            hard = net.hard_masks()
            layers[g] = [[n, list(m.shape)] for n, m in hard.items()]
            arrays[f"{g}/bits"] = pack_masks(list(hard.values()))
            for name, value in net.task_parameters().items():
                arrays[f"{g}/free/{name}"] = _numpy(value)
    record = TranslationRecord(
        task_id=task_id,
        method=s.method,
        settings=s.to_dict(),
        arrays=arrays,
        mask=dataclasses.asdict(trainer.mask) if trainer.mask is not None else None,
        layers=layers,
        base_fingerprint=fingerprint if fingerprint is not None else base_fingerprint(s),
        metrics=dict(metrics or {}),
        provenance=dict(provenance or {}),
        created=time.time(),
    )
    if s.method == "supermask":
        record.metrics.setdefault(
            "density",
            {g: mask_density(nets[g].hard_masks()) for g in GENERATORS},  # type: ignore[union-attr]
        )
    return record


def generators_from_record(
    record: TranslationRecord, device: torch.device | str = "cpu"
) -> dict[str, nn.Module]:
    """Working generators {'g_xy', 'g_yx'} rebuilt from a record (masks applied to the frozen base)."""
    settings = record.translation_settings()
    out: dict[str, nn.Module] = {}
    if record.method == "trained":
        for g in GENERATORS:
            net = Generator(settings)
            prefix = f"{g}/"
            state = {
                k[len(prefix) :]: torch.from_numpy(v)
                for k, v in record.arrays.items()
                if k.startswith(prefix)
            }
            net.load_state_dict(state)
            out[g] = net.to(device).eval()
        return out
    frozen = frozen_networks(settings)
    fingerprint = base_fingerprint(settings)
    if fingerprint != record.base_fingerprint:
        raise RecordMismatch(
            f"translation record {record.task_id!r} was learned on base {record.base_fingerprint}, but its "
            f"settings rebuild base {fingerprint} here (another torch or NumPy draws other weights)"
        )
    for g in GENERATORS:
        net = frozen[g]
        weights = maskable_weights(net)
        names = [n for n, _ in record.layers[g]]
        shapes = [tuple(s) for _, s in record.layers[g]]
        if names != list(weights) or shapes != [tuple(w.shape) for w in weights.values()]:
            raise RecordMismatch(f"translation record {record.task_id!r}: {g}'s layers do not match its base")
        masks = unpack_masks(record.arrays[f"{g}/bits"], shapes)
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, m in zip(names, masks, strict=True):
                params[name].mul_(torch.from_numpy(m).to(params[name].dtype))
            prefix = f"{g}/free/"
            for key, value in record.arrays.items():
                if key.startswith(prefix):
                    params[key[len(prefix) :]].copy_(torch.from_numpy(value))
        out[g] = net.to(device).eval()
    return out


def mask_spec_of(record: TranslationRecord) -> MaskSpec | None:
    return MaskSpec(**record.mask) if record.mask else None
