"""Task-stream specs: YAML in, a validated `Spec` out, with `--set a.b=c` overrides.

A spec says its learner kind once, in `learn` (masks, weights, fine_tune or translation); the kind
decides which sections it reads (config/kinds/), and a section or run field it does not read is an
error naming the field and the kind, never silently ignored. Everything is checked before anything
runs, cross-field rules included (options against the architecture and the mask method, outputs
against the stream's classes, density against the method, inference against BatchNorm).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from supermask.config.kinds import SPEC_KINDS, refuse_unused, spec_kind
from supermask.config.schema import SpecError, apply_overrides, build, read_yaml
from supermask.config.sections import GN_SCENARIOS, NAME, SCENARIOS, RunSpec, Spec
from supermask.core.fields import check_options
from supermask.data import STREAMS, Stream, stream_of, stream_options

__all__ = [
    "GN_SCENARIOS",
    "SCENARIOS",
    "RunSpec",
    "Spec",
    "SpecError",
    "dump_spec",
    "load_spec",
    "spec_from_dict",
]

# Fields a spec of an earlier version may hold -> what to write instead (the kind is said in `learn` now).
_MODE_NOW = {
    "per_task": "remove weights.mode: learn: weights trains one network per task",
    "fine_tune": "write learn: fine_tune instead of learn: weights, and remove weights.mode",
}


def _refuse_old_fields(data: dict) -> None:
    """SpecError saying exactly what to write instead of a field the learner kind replaced."""
    weights = data.get("weights")
    if isinstance(weights, dict) and "mode" in weights:
        mode = weights["mode"]
        now = _MODE_NOW.get(mode, f"use learn: {' or learn: '.join(SPEC_KINDS.names())}")
        raise SpecError(
            f"weights.mode: got {mode!r}; the learner kind is said once, in `learn`, so weights.mode is gone: {now}"
        )


def _check_stream(spec: Spec) -> Stream:
    """The spec's stream (reading no data), its name and options checked."""
    if spec.stream.name not in STREAMS:
        raise SpecError(f"stream.name: got {spec.stream.name!r}; known: {', '.join(STREAMS.names())}")
    try:
        owner = f"stream {spec.stream.name!r}"
        check_options(
            "stream.options", owner, spec.stream.options, stream_options(spec.stream.name), typed=False
        )
    except ValueError as e:
        raise SpecError(str(e)) from None
    try:
        return stream_of(spec.stream, spec.data)  # reads no data
    except ValueError as e:
        raise SpecError(f"stream: {e}") from None


def _check_learn(spec: Spec, stream: Stream, written: bool) -> None:
    """The learner kind against the tasks the stream hands out."""
    kind = spec_kind(spec.learn)
    if stream.task_form == kind.task_form:
        return
    fitting = [k for k in SPEC_KINDS.names() if SPEC_KINDS.get(k).task_form == stream.task_form]
    streams = [n for n in STREAMS.names() if STREAMS.get(n).task_form == kind.task_form]
    default = "" if written else " (the default)"
    raise SpecError(
        f"learn: got {spec.learn!r}{default}, which learns {kind.what}, but stream {spec.stream.name!r} hands out "
        f"{stream.task_form} tasks: write learn: {' or '.join(fitting)}, or use a stream such as "
        f"{', '.join(streams)}"
    )


def _check_cross_fields(spec: Spec, written: bool) -> None:
    """The rules that tie fields of different sections together; SpecError naming the field."""
    if not NAME.fullmatch(spec.name) or set(spec.name) == {"."}:
        raise SpecError(
            f"name: got {spec.name!r}; a name is the run's folder under runs/: use 1-128 characters from "
            "A-Z a-z 0-9 _ . - (not only dots)"
        )
    stream = _check_stream(spec)
    _check_learn(spec, stream, written)
    kind = spec_kind(spec.learn)
    refuse_unused(spec, kind)
    kind.check(spec, stream)


def spec_from_dict(data: dict, overrides: list[str] = ()) -> Spec:
    """Validate a raw mapping (plus overrides) into a `Spec`."""
    data = apply_overrides(data or {}, list(overrides))
    _refuse_old_fields(data)
    spec = build(Spec, data, "")
    _check_cross_fields(spec, written="learn" in data)
    return spec


def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    """Read a YAML spec file, apply `--set` overrides and validate it."""
    path = Path(path)
    data = read_yaml(path, "spec", "tasks/permuted_mnist.yaml")
    data.setdefault("name", path.stem)
    return spec_from_dict(data, overrides)


def dump_spec(spec: Spec) -> str:
    """The spec as YAML, loadable by `load_spec`: the sections its learner kind reads."""
    used = spec_kind(spec.learn).used_sections(spec)
    d = {k: v for k, v in spec.to_dict().items() if k in ("name", "learn") or k in used}
    return yaml.safe_dump(d, sort_keys=False)
