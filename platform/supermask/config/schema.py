"""The validation machinery shared by task specs and sweep specs: YAML mappings into dataclasses.

Every field is checked before anything runs; an error names the field, the bad value and what is
allowed. Unknown fields are errors too (with a suggestion), so a typo never silently falls back to a
default. Allowed choices and ranges come from each dataclass field's metadata (`supermask.core.fields`),
so a setting's default and limits are written once, where the setting is defined.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from supermask.core.fields import field_problem


class SpecError(ValueError):
    """A spec that cannot run; the message names the field, the value and what is allowed."""


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "dict": "a mapping",
    "list": "a list",
    "tuple": "a list",
}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return _TYPE_NAMES.get(tp.__name__, tp.__name__)
    return str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except SpecError:
                continue
        allowed = " or ".join(_type_name(a) if a is not type(None) else "null" for a in args)
        raise SpecError(f"{where}: got {value!r}; must be {allowed}")
    checks = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        dict: lambda v: isinstance(v, dict),
        list: lambda v: isinstance(v, list),
    }
    check = checks.get(origin or tp)
    if check is None:
        return value
    if not check(value):
        raise SpecError(f"{where}: got {value!r} ({type(value).__name__}); must be {_type_name(tp)}")
    return float(value) if tp is float else value


def build(cls: type, data: Any, prefix: str) -> Any:
    """A dataclass `cls` from a raw mapping, every field checked; errors name `prefix.field`."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data):
        data = dataclasses.asdict(data)
    if not isinstance(data, dict):
        raise SpecError(f"{prefix or 'spec'}: got {data!r}; must be a mapping of fields")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    settable = [n for n, f in fields.items() if not f.metadata.get("resolved")]
    for key in data:
        where = f"{prefix}.{key}" if prefix else str(key)
        if key in fields and fields[key].metadata.get("resolved"):
            if data[key] is None:
                continue
            raise SpecError(f"{where}: is filled in from the stream when the spec is resolved; remove it")
        if key not in fields:
            close = difflib.get_close_matches(str(key), settable, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"{where}: unknown field{hint}; allowed: {', '.join(settable)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data or f.metadata.get("resolved"):
            continue
        where = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, data[name], where)
            continue
        value = _coerce(data[name], tp, where)
        problem = field_problem(value, f.metadata)
        if problem is not None:
            raise SpecError(f"{where}: {problem}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as e:  # a dataclass's own cross-field check
        raise SpecError(str(e)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b=c` into (["a", "b"], value), the value read as YAML (so 0.1 is a number)."""
    if "=" not in text:
        raise SpecError(f"--set {text!r}: expected FIELD=VALUE, e.g. --set search.lr=0.01")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise SpecError(f"--set {text!r}: the field name is empty")
    return path, yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b=c` overrides to a raw spec mapping (validation happens afterwards)."""
    data = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise SpecError(f"--set {text}: {'.'.join(path[: i + 1])} is {child!r}, not a mapping")
            node[key] = child = dict(child)
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: Path, what: str, example: str) -> dict:
    """A YAML file's top-level mapping; SpecError naming the file when it is missing or malformed."""
    if not path.is_file():
        raise SpecError(f"{what} file {str(path)!r} does not exist; pass a path such as {example}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    return dict(data or {})
