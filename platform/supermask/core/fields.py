"""Field metadata for settings dataclasses: allowed choices and numeric ranges, written once.

Every settings dataclass (BaseSpec, MaskSpec, SearchConfig, ...) marks its fields with `choices(...)`
or `in_range(...)`. `check_fields` enforces them when the core is used directly; the config layer reads
the same metadata to validate a spec with errors that name the spec field.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def choices(*allowed: str) -> dict:
    """Field metadata: the value must be one of `allowed`."""
    return {"choices": allowed}


def in_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> dict:
    """Field metadata: lo <= value <= hi (lo < value with lo_open); None is unbounded."""
    return {"range": (lo, hi, lo_open)}


def resolved() -> dict:
    """Field metadata: filled in when a spec is resolved (e.g. from the stream), never set by hand."""
    return {"resolved": True}


def field_problem(value: Any, meta: Any) -> str | None:
    """What is wrong with `value` under a field's metadata, or None."""
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"got {value!r}; allowed: {', '.join(map(str, meta['choices']))}"
    if "range" in meta:
        lo, hi, lo_open = meta["range"]
        bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
        if bad:
            left = "(" if lo_open else "["
            allowed = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            return f"got {value!r}; must be in {allowed}"
    return None


def check_fields(obj: Any, prefix: str = "") -> None:
    """Raise ValueError naming the first field of a settings dataclass that breaks its metadata."""
    for f in dataclasses.fields(obj):
        problem = field_problem(getattr(obj, f.name), f.metadata)
        if problem is not None:
            raise ValueError(f"{prefix}{f.name}: {problem}")
