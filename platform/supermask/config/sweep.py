"""Sweep specs: which fields of a task spec to search, how, and how a trial is scored (no Ray here).

A sweep names a base task spec (plus `set:` overrides), learns a few of its tasks per trial on a
validation split held out of their training data, and searches `search_space`, a mapping from spec
field paths (`mask.density`, `search.lr`, `mask.options.init_threshold`, ...) to distributions.
Everything is validated before anything runs; errors name the field, the value and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from supermask.config.kinds import SPEC_KINDS, spec_kind
from supermask.config.schema import SpecError, apply_overrides, build, read_yaml
from supermask.config.spec import Spec, spec_from_dict
from supermask.core.fields import choices, in_range
from supermask.data import STREAMS

ALGORITHMS = ("random", "grid", "optuna", "hyperopt")
OPTIONAL_ALGORITHMS = {"optuna": "optuna", "hyperopt": "hyperopt"}  # algorithm -> module (and extra)
SCHEDULERS = ("asha", "none")
METRICS = tuple(dict.fromkeys(m for k in SPEC_KINDS.names() for m in SPEC_KINDS.get(k).sweep_metrics))
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCHABLE_SECTIONS = ("base", "mask", "search", "weights", "translation")
DENSITY_TOLERANCE = 1e-3  # a trial within this of the budget is feasible (top-k rounds to whole weights)
# run fields of the base spec that a trial never reads -> why (a trial learns its tasks in one process)
TRIAL_UNUSED_RUN = {"tasks_per_worker": "a trial learns its num_tasks tasks as stacks in one process"}
_DISTRIBUTION_HELP = (
    "{grid: [...]}, {choice: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}"
)


@dataclass
class SchedulerSpec:
    name: str = field(default="asha", metadata=choices(*SCHEDULERS))
    grace_period: int = field(default=1, metadata=in_range(1))  # epochs before ASHA may stop a trial
    max_t: int | None = field(default=None, metadata=in_range(1))  # None: the most epochs a trial can have
    reduction_factor: float = field(default=2.0, metadata=in_range(1.0, lo_open=True))


@dataclass
class ResourcesSpec:
    cpu: float = field(default=1.0, metadata=in_range(0.0))
    gpu: float = field(default=0.0, metadata=in_range(0.0))


@dataclass
class SweepSpec:
    name: str = "sweep"
    base_spec: str | None = None  # a task spec, relative to the sweep file's folder, its parent or cwd
    set: dict = field(default_factory=dict)  # overrides of the base spec: {field.path: value}
    num_tasks: int = field(default=3, metadata=in_range(1))  # tasks each trial learns
    validation_fraction: float = field(default=0.2, metadata=in_range(0.0, 1.0, lo_open=True))
    search_space: dict = field(default_factory=dict)  # {field.path: {distribution: args}}
    algorithm: str = field(default="random", metadata=choices(*ALGORITHMS))
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    metric: str = field(default="val_accuracy", metadata=choices(*METRICS))
    density_budget: float | None = field(default=None, metadata=in_range(0.0, 1.0, lo_open=True))
    num_samples: int = field(default=1, metadata=in_range(1))
    max_concurrent: int | None = field(default=None, metadata=in_range(1))
    resources_per_trial: ResourcesSpec = field(default_factory=ResourcesSpec)
    seed: int = 0
    out: str | None = None  # default runs/sweeps/<name>


@dataclass(frozen=True)
class Distribution:
    """One search-space dimension: a kind and its values (grid, choice) or inclusive bounds (the rest)."""

    kind: str
    values: tuple

    @property
    def discrete(self) -> bool:
        return self.kind in ("grid", "choice", "randint")

    def points(self) -> list:
        """Every value of a discrete dimension; the two bounds of a continuous one."""
        if self.kind == "randint":
            return list(range(self.values[0], self.values[1] + 1))
        return list(self.values)

    def to_dict(self) -> dict:
        return {self.kind: list(self.values)}


@dataclass
class Sweep:
    """A validated sweep: its spec, the resolved base task spec and the parsed search space."""

    spec: SweepSpec
    base_path: str
    base: dict  # the base task spec with `set:` applied, validated and fully resolved
    space: dict[str, Distribution]

    @property
    def name(self) -> str:
        return self.spec.name

    def trial_base(self) -> dict:
        """The base spec as a trial learns it: the sweep's few tasks, with a validation split."""
        data = copy.deepcopy(self.base)
        data["stream"]["num_tasks"] = self.spec.num_tasks
        data["data"]["validation_fraction"] = self.spec.validation_fraction
        data["name"] = f"{self.name}-trial"
        resources = self.spec.resources_per_trial
        data["run"]["threads_per_worker"] = max(1, int(resources.cpu))
        data["run"]["use_gpu"] = resources.gpu > 0
        return data

    def trial_spec(self, config: dict) -> Spec:
        """The task spec of one trial: the trial base with the trial's sampled settings."""
        return _with_config(self.trial_base(), config)

    def best_spec(self, config: dict) -> Spec:
        """A ready-to-run task spec: the base spec (its own stream size and data split) with `config`."""
        data = copy.deepcopy(self.base)
        data["name"] = f"{self.name}_best"
        data["run"]["out"] = None
        return _with_config(data, config)

    def objective(self, val_accuracy: float, density: float) -> float:
        """The score trials are ranked by: validation accuracy, or minus the excess over a density budget."""
        if self.spec.density_budget is None or self.feasible(density):
            return float(val_accuracy)
        return -(float(density) - self.spec.density_budget)  # below every feasible trial (>= 0)

    def feasible(self, density: float) -> bool:
        budget = self.spec.density_budget
        return budget is None or density <= budget + DENSITY_TOLERANCE

    @property
    def num_trials(self) -> int:
        """How many trials the sweep runs."""
        if self.spec.algorithm in OPTIONAL_ALGORITHMS:
            return self.spec.num_samples
        crossed = [d for d in self.space.values() if self.spec.algorithm == "grid" or d.kind == "grid"]
        return self.spec.num_samples * math.prod(len(d.points()) for d in crossed)

    @property
    def learn(self) -> str:
        """The learner kind of the base spec: what every trial learns."""
        return self.base["learn"]

    @property
    def max_epochs(self) -> int | None:
        """The most epochs a trial can report (its kind counts them); None when budgets are given in iterations."""
        return spec_kind(self.learn).trial_epochs(self.base, self.space)

    @property
    def max_t(self) -> int | None:
        """The epoch at which ASHA stops every trial (its `max_t`)."""
        return self.spec.scheduler.max_t or self.max_epochs

    def to_dict(self) -> dict:
        """The resolved sweep, JSON-able: what sweep.json records and resumes are checked against."""
        spec = asdict(self.spec)
        spec["search_space"] = {path: d.to_dict() for path, d in self.space.items()}
        return {"sweep": spec, "base_spec_path": self.base_path, "base": self.base}

    def fingerprint(self) -> str:
        """A hash of what decides the trials (not the output folder)."""
        data = self.to_dict()
        data["sweep"] = {k: v for k, v in data["sweep"].items() if k != "out"}
        data.pop("base_spec_path")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def plain(value: Any) -> Any:
    """A NumPy scalar (as samplers return) as the Python value a spec accepts."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) else value


def _with_config(data: dict, config: dict) -> Spec:
    data = copy.deepcopy(data)
    for path, value in config.items():
        _set_path(data, path.split("."), plain(value), f"search_space.{path}")
    return spec_from_dict(data)


def _set_path(data: dict, path: list[str], value: Any, where: str) -> None:
    node = data
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise SpecError(f"{where}: {'.'.join(path[: i + 1])} is {child!r}, not a mapping of fields")
        node = child
    node[path[-1]] = value


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as (dotted path, value) pairs; `{a: {b: 1}}` and `{a.b: 1}` are the same."""
    out = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and not _is_distribution(value):
            out.extend(_leaves(value, path))
        else:
            out.append((path, value))
    return out


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and any(k in DISTRIBUTIONS for k in value)


def _parse_distribution(path: str, value: Any) -> Distribution:
    where = f"search_space.{path}"
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise SpecError(f"{where}: got {value!r}; must be one distribution: {_DISTRIBUTION_HELP}")
    kind, args = next(iter(value.items()))
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise SpecError(f"{where}.{kind}: got {args!r}; must be a non-empty list of values")
        return Distribution(kind, tuple(args))
    numbers = isinstance(args, list) and len(args) == 2
    numbers = numbers and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if not numbers:
        raise SpecError(f"{where}.{kind}: got {args!r}; must be [lo, hi], two numbers")
    lo, hi = args
    if kind == "randint":
        if not all(isinstance(a, int) for a in args) or lo > hi:
            raise SpecError(
                f"{where}.randint: got {args!r}; must be [lo, hi], integers with lo <= hi (inclusive)"
            )
        return Distribution(kind, (lo, hi))
    if not lo < hi:
        raise SpecError(f"{where}.{kind}: got {args!r}; must be [lo, hi] with lo < hi")
    if kind == "loguniform" and lo <= 0:
        raise SpecError(f"{where}.loguniform: got {args!r}; must have 0 < lo < hi")
    return Distribution(kind, (float(lo), float(hi)))


def _check_dimension(path: str, dist: Distribution, trial_base: dict) -> None:
    where = f"search_space.{path}"
    section = path.split(".")[0]
    if section not in SEARCHABLE_SECTIONS:
        raise SpecError(
            f"{where}: the {section!r} section is fixed in a sweep (use num_tasks, validation_fraction or "
            f"set:); search over fields of {', '.join(SEARCHABLE_SECTIONS)}"
        )
    values = dist.points() if dist.kind != "randint" else [dist.values[0], dist.values[1]]
    for value in values:
        try:
            _with_config(trial_base, {path: value})
        except SpecError as e:
            raise SpecError(f"{where}: {dist.kind} value {value!r} is not allowed: {e}") from None


def installed(module: str) -> bool:
    """Whether `module` can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def _check_algorithm(sweep: Sweep) -> None:
    algorithm = sweep.spec.algorithm
    module = OPTIONAL_ALGORITHMS.get(algorithm)
    if module is not None:
        if not installed(module):
            raise SpecError(
                f"algorithm: {algorithm!r} needs the {module} package, which is not installed; "
                f"install it with `pip install 'supermask[{module}]'` (or `pip install {module}`), "
                "or use algorithm random or grid"
            )
        for path, d in sweep.space.items():
            if d.kind == "grid":
                raise SpecError(
                    f"search_space.{path}: grid is for algorithms random and grid; with {algorithm} use choice"
                )
    if algorithm == "grid":
        for path, d in sweep.space.items():
            if not d.discrete:
                raise SpecError(
                    f"search_space.{path}: algorithm grid cannot enumerate {d.kind} {list(d.values)}; "
                    "use grid, choice or randint, or algorithm random"
                )


def _check_scheduler(sweep: Sweep) -> None:
    s = sweep.spec.scheduler
    if s.name != "asha":
        return
    if sweep.max_t is None:
        raise SpecError(
            "scheduler.max_t: set it (in epochs) when trials are budgeted by search.iterations; "
            "ASHA counts epochs"
        )
    if s.grace_period > sweep.max_t:
        raise SpecError(
            f"scheduler.grace_period: got {s.grace_period}; must be at most max_t ({sweep.max_t} epochs)"
        )


def resolve_base_path(base_spec: str, origin: Path | None) -> Path:
    """Where `base_spec` is: as given if absolute, else under the sweep's folder, its parent, or cwd."""
    path = Path(base_spec)
    if path.is_absolute():
        candidates = [path]
    else:
        roots = [origin, origin.parent] if origin is not None else []
        candidates = [root / path for root in roots] + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise SpecError(f"base_spec: got {base_spec!r}; no such task spec (looked at {tried})")


def _load_base(spec: SweepSpec, origin: Path | None) -> tuple[Path, dict]:
    path = resolve_base_path(spec.base_spec, origin)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"base_spec: {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"base_spec: {path} must hold a mapping of sections")
    data.setdefault("name", path.stem)
    for key, value in _leaves(spec.set):
        _set_path(data, key.split("."), value, f"set.{key}")
    try:
        base = spec_from_dict(data)
    except SpecError as e:
        raise SpecError(f"base_spec {spec.base_spec} with set: {e}") from None
    return path, base.to_dict()


def sweep_from_dict(data: dict, origin: Path | None = None) -> Sweep:
    """Validate a raw sweep mapping into a `Sweep`; `origin` is the folder relative paths start from."""
    data = dict(data or {})
    if isinstance(data.get("search_space"), dict):
        space: dict = {}
        for path, value in _leaves(data["search_space"]):
            space.pop(path, None)  # a later entry (e.g. from --set) replaces an earlier one
            if value is not None:  # null drops a dimension: --set search_space.search.lr=null
                space[path] = value
        data["search_space"] = space
    spec = build(SweepSpec, data, "")
    if not spec.base_spec:
        raise SpecError(
            "base_spec: missing; name the task spec to sweep, e.g. base_spec: tasks/synthetic.yaml"
        )
    if spec.validation_fraction >= 1.0:
        raise SpecError(f"validation_fraction: got {spec.validation_fraction}; must be in (0, 1)")
    if (spec.metric == "val_accuracy_at_density") != (spec.density_budget is not None):
        raise SpecError(
            f"density_budget: got {spec.density_budget!r} with metric {spec.metric!r}; "
            "metric val_accuracy_at_density needs a density_budget in (0, 1], and only it takes one"
        )
    if not spec.search_space:
        raise SpecError(
            "search_space: empty; map spec fields to distributions, e.g. mask.density: {grid: [0.1, 0.5]}"
        )
    base_path, base = _load_base(spec, origin)
    kind = spec_kind(base["learn"])
    if kind.sweep_refusal is not None:
        raise SpecError(f"base_spec: {kind.sweep_refusal}")
    for name, why in TRIAL_UNUSED_RUN.items():
        if base["run"][name] is not None:
            raise SpecError(
                f"base_spec {spec.base_spec}: run.{name}: got {base['run'][name]!r}, but a sweep trial does not "
                f"read it ({why}); remove it (set: {{run.{name}: null}})"
            )
    sweep = Sweep(spec, str(base_path), base, {})
    if spec.metric not in kind.sweep_metrics:
        raise SpecError(
            f"metric: got {spec.metric!r}; base spec {spec.base_spec} has learn {kind.name!r}, whose trials are "
            f"scored by {' or '.join(kind.sweep_metrics)}"
        )
    trial_base = sweep.trial_base()
    try:
        spec_from_dict(trial_base)
    except SpecError as e:
        raise SpecError(f"num_tasks / validation_fraction: {e}") from None
    for path, value in spec.search_space.items():
        dist = _parse_distribution(path, value)
        _check_dimension(path, dist, trial_base)
        sweep.space[path] = dist
    _check_algorithm(sweep)
    _check_scheduler(sweep)
    return sweep


def upgrade_record(record: dict) -> dict:
    """A resolved sweep (`Sweep.to_dict`) recorded before specs said their learner kind in `learn` alone
    (with weights.mode, or by a translation stream's name), as it reads now."""
    base = record.get("base")
    if not isinstance(base, dict):
        return record
    base = copy.deepcopy(base)
    weights = base.get("weights")
    if isinstance(weights, dict) and "mode" in weights and weights.pop("mode") == "fine_tune":
        base["learn"] = "fine_tune"
    stream = (base.get("stream") or {}).get("name")
    if base.get("learn") == "masks" and stream in STREAMS and STREAMS.get(stream).task_form == "translation":
        base["learn"] = "translation"
    return {**record, "base": base}


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    """Read a sweep YAML file, apply `--set` overrides and validate it (and its base spec)."""
    path = Path(path)
    data = read_yaml(path, "sweep", "tuning/quick.yaml")
    data.setdefault("name", path.stem)
    return sweep_from_dict(apply_overrides(data, list(overrides)), origin=path.resolve().parent)


def dump_sweep(sweep: Sweep) -> str:
    """The resolved sweep as YAML (what `supermask tune --check` prints)."""
    return yaml.safe_dump(sweep.to_dict(), sort_keys=False)
