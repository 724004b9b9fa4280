"""Building a translation task's record from a trainer, and working generators back from a record.

The record itself (`TranslationRecord`, kind "translation") is plain NumPy and JSON and lives in
`core.records.translation`, so the store reads and writes it without torch. `generators_from_record`
rebuilds working generators, refusing a record of another base.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn

from supermask.core.masks import MaskSpec
from supermask.core.records.packing import pack_masks, unpack_masks
from supermask.core.records.translation import GENERATORS, KIND_TRANSLATION, TranslationRecord
from supermask.core.translation.generator import Generator, maskable_weights
from supermask.core.translation.masked import MaskedNetwork, mask_density
from supermask.core.translation.settings import TranslationSettings
from supermask.core.translation.trainer import TranslationTrainer, base_fingerprint, frozen_networks

__all__ = [
    "GENERATORS",
    "KIND_TRANSLATION",
    "RecordMismatch",
    "TranslationRecord",
    "generators_from_record",
    "mask_spec_of",
    "record_from_trainer",
    "settings_of",
]


class RecordMismatch(ValueError):
    """A record that does not fit the networks it is applied to (another base, other shapes)."""


def settings_of(record: TranslationRecord) -> TranslationSettings:
    """The translation settings a record was trained with."""
    names = {f.name for f in dataclasses.fields(TranslationSettings)}
    return TranslationSettings(**{k: v for k, v in record.settings.items() if k in names})


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
    settings = settings_of(record)
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
