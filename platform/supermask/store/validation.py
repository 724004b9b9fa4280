"""Checks a record must pass before a store accepts it; each error names the field and the fix."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

import numpy as np

from supermask.core.records.packing import TaskMask
from supermask.core.records.translation import KIND_TRANSLATION, TranslationRecord
from supermask.core.records.weights import VALUE_DTYPES, TaskWeights

TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
TRANSLATION_METHODS = ("trained", "supermask")


def check_task_id(tid: object) -> None:
    """Raise ValueError unless `tid` is a valid task id."""
    if not isinstance(tid, str) or not TASK_ID.fullmatch(tid):
        raise ValueError(f"task id {tid!r} is not valid: use 1-128 characters from A-Z a-z 0-9 _ . -")


def num_weights(shapes: Iterable[tuple[int, ...]]) -> int:
    """Total number of weights in layers of these shapes."""
    return int(sum(math.prod(s) for s in shapes))


def _check_layers(where: str, names: list, shapes: list, per_layer: list, one: str, many: str) -> None:
    """One or more layers, with one name and one `one` (density, array) per shape."""
    n = len(shapes)
    if n == 0 or len(names) != n or len(per_layer) != n:
        raise ValueError(
            f"{where}: needs one or more layers, with one name and one {one} per shape; got "
            f"{len(names)} names, {n} shapes, {len(per_layer)} {many}"
        )


def validate_mask(mask: TaskMask) -> None:
    """Raise ValueError naming the first thing wrong with a mask about to be stored."""
    tid = mask.task_id
    check_task_id(tid)
    where = f"mask {tid!r}"
    packed = mask.packed
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        got = f"{packed.dtype} {packed.shape}" if isinstance(packed, np.ndarray) else type(packed).__name__
        raise ValueError(f"{where}: packed must be a 1-D uint8 array (see pack_masks), got {got}")
    _check_layers(where, mask.layer_names, mask.layer_shapes, mask.layer_density, "density", "densities")
    for s in mask.layer_shapes:
        if not all(isinstance(d, int | np.integer) and d >= 0 for d in s):
            raise ValueError(f"{where}: layer shape {s!r} is not a tuple of non-negative ints")
    total = num_weights(mask.layer_shapes)
    if packed.size != (total + 7) // 8:
        raise ValueError(
            f"{where}: packed has {packed.size} bytes but layer shapes {list(mask.layer_shapes)} "
            f"({total} weights) need {(total + 7) // 8}"
        )
    if not all(isinstance(name, str) for name in mask.layer_names):
        raise ValueError(f"{where}: layer names must be strings, got {mask.layer_names!r}")
    if not all(isinstance(d, float | int | np.floating) and 0.0 <= d <= 1.0 for d in mask.layer_density):
        raise ValueError(f"{where}: layer densities must be numbers in [0, 1], got {mask.layer_density!r}")
    _check_common(where, mask)


def _check_common(
    where: str, mask: TaskMask | TaskWeights | TranslationRecord, has_base: bool = True
) -> None:
    """The checks every record kind shares: base, BN statistics, metrics, provenance, creation time."""
    if not isinstance(mask.base_fingerprint, str) or (has_base and not mask.base_fingerprint):
        raise ValueError(f"{where}: base_fingerprint must be a non-empty string")
    for name, arr in getattr(mask, "bn_stats", {}).items():
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{where}: BN statistic name {name!r} must be a non-empty string without '/'")
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biufc":
            raise ValueError(f"{where}: BN statistic {name!r} must be a numeric numpy array, got {type(arr)}")
    for name in ("metrics", "provenance"):
        value = getattr(mask, name)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {name} must be a dict, got {type(value).__name__}")
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{where}: {name} must be JSON-serialisable with string keys ({e}); convert numpy "
                "values with float() or .tolist()"
            ) from e
    if mask.provenance and not isinstance(mask.provenance.get("hash"), str):
        raise ValueError(
            f"{where}: provenance must be empty or hold a string 'hash' (and its 'fields'), "
            f"got keys {sorted(mask.provenance)}"
        )
    if not isinstance(mask.created, float | int) or not math.isfinite(mask.created):
        raise ValueError(f"{where}: created must be finite unix seconds, got {mask.created!r}")


def validate_weights(record: TaskWeights) -> None:
    """Raise ValueError naming the first thing wrong with a trained-weights record about to be stored."""
    check_task_id(record.task_id)
    where = f"weights {record.task_id!r}"
    _check_layers(where, record.layer_names, record.layer_shapes, record.values, "array", "arrays")
    for v in record.values:
        if not isinstance(v, np.ndarray) or v.dtype.name not in VALUE_DTYPES or not np.isfinite(v).all():
            raise ValueError(f"{where}: values must be finite {' or '.join(VALUE_DTYPES)} arrays")
    if not isinstance(record.method, str) or not record.method:
        raise ValueError(f"{where}: method must name the weight method that trained them")
    _check_common(where, record)


def validate_translation(record: TranslationRecord) -> None:
    """Raise ValueError naming the first thing wrong with a translation record about to be stored."""
    check_task_id(record.task_id)
    where = f"translation record {record.task_id!r}"
    if record.kind != KIND_TRANSLATION or record.method not in TRANSLATION_METHODS:
        raise ValueError(
            f"{where}: kind must be {KIND_TRANSLATION!r} and method one of {TRANSLATION_METHODS}, got "
            f"{record.kind!r} and {record.method!r}"
        )
    for name, arr in record.arrays.items():
        parts = name.split("/") if isinstance(name, str) else [""]
        if not all(parts) or any(p in (".", "..") for p in parts):
            raise ValueError(f"{where}: array name {name!r} must be '/'-separated non-empty names")
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise ValueError(
                f"{where}: array {name!r} must be a numeric numpy array, got {type(arr).__name__}"
            )
    for name in ("settings", "layers"):
        if not isinstance(getattr(record, name), dict):
            raise ValueError(f"{where}: {name} must be a dict")
    _check_common(
        where, record, has_base=record.method == "supermask"
    )  # trained generators own their weights


def validate_record(record: TaskMask | TaskWeights | TranslationRecord) -> None:
    """Raise ValueError naming the first thing wrong with a record (mask, trained weights, translation)
    about to be stored."""
    if isinstance(record, TaskWeights):
        validate_weights(record)
    elif isinstance(record, TaskMask):
        validate_mask(record)
    elif isinstance(record, TranslationRecord):
        validate_translation(record)
    else:
        raise ValueError(
            f"a store holds TaskMask, TaskWeights and TranslationRecord records, not {type(record).__name__}"
        )
