"""Field metadata for settings dataclasses: allowed choices and numeric ranges, written once.

Every settings dataclass (BaseSpec, MaskSpec, SearchConfig, ...) marks its fields with `choices(...)`
or `in_range(...)`. `check_fields` enforces them when the core is used directly; the config layer reads
the same metadata to validate a spec with errors that name the spec field.
"""

from __future__ import annotations

import dataclasses
import inspect
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


def constructor_options(constructor: Any, built_by_caller: tuple[str, ...]) -> dict[str, Any]:
    """The keyword options a constructor takes beyond what its caller supplies, with their defaults."""
    params = inspect.signature(constructor).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", *built_by_caller)}


def _option_problem(value: Any, default: Any) -> str | None:
    """What is wrong with an option's value, judged by the type of its default (None: nothing)."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        if not (isinstance(value, list | tuple) and value and all(_positive_int(v) for v in value)):
            return "must be a list of positive integers"
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            return "must be true or false"
    elif isinstance(default, str):
        if not isinstance(value, str):
            return "must be a string"
    elif isinstance(default, int):
        if not (numeric and value == int(value) and value > 0):
            return "must be a positive integer"
    elif isinstance(default, float):
        if not numeric:
            return "must be a number"
    elif default is None and value is not None and not numeric:
        return "must be a number or null"
    return None


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def check_options(where: str, owner: str, options: dict, allowed: dict, *, typed: bool = True) -> None:
    """Raise ValueError naming an option `owner` does not take (listing those it does), or, with `typed`,
    a value whose type does not fit its default's. `where` is the spec path, e.g. "mask.options"."""
    for key, value in options.items():
        if key not in allowed:
            known = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "none"
            raise ValueError(f"{where}.{key}: not an option of {owner}; allowed: {known}")
        problem = _option_problem(value, allowed[key]) if typed else None
        if problem is not None:
            raise ValueError(f"{where}.{key}: got {value!r}; {problem}")
