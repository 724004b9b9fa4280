"""The per-learner parts of a run's and a sweep's outputs, registered by learner kind.

The report builders (interface/report.py, interface/sweep_report.py) write what every run or sweep
has (results.json or sweep.json, report.md, the probes, best.yaml); a `RunSection` or `SweepSection`
writes what depends on the kind: its keys of results.json, its report lines and plots, and the
command's lines. A section names the learner class it reports on, and is found by that learner's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from supermask.config.spec import Spec
from supermask.config.sweep import Sweep
from supermask.core.registry import Registry
from supermask.recipes.learners import Learner
from supermask.recipes.results import JobResult, TrialRecord

RUN_SECTIONS: Registry[RunSection] = Registry("run report section")
SWEEP_SECTIONS: Registry[SweepSection] = Registry("sweep report section")


def register_section(cls: type) -> type:
    """Class decorator: add an instance of a RunSection or SweepSection under its learner's name."""
    registry = RUN_SECTIONS if issubclass(cls, RunSection) else SWEEP_SECTIONS
    registry.register(cls.learner.name)(cls())
    return cls


def fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def timing_line(timing: dict, total: float = 0.0) -> str:
    """Where a run's time went, in one line (`total`: the wall time when the command's own is not known)."""
    parts = [
        (label, timing.get(key))
        for label, key in (
            ("Ray start", "ray_start_seconds"),
            ("Train start", "train_start_seconds"),
            ("search", "search_seconds"),
            ("evaluation", "evaluate_seconds"),
            ("checkpoints", "checkpoint_seconds"),
            ("store writes", "store_seconds"),
            ("probes", "probe_seconds"),
            ("task inference", "inference_seconds"),
        )
    ]
    inner = ", ".join(f"{label} {value:.1f} s" for label, value in parts if value)
    total = timing.get("command_seconds", total)
    if not inner:
        return f"{total:.1f} s in all"
    return f"{total:.1f} s in all ({inner}; the search and what follows it summed over workers)"


class RunSection:
    """What a run's outputs say about its learner kind."""

    learner: ClassVar[type[Learner]]

    def headline(self, spec: Spec) -> str:
        """What the run learns, for the command's first line."""
        raise NotImplementedError

    def results(self, spec: Spec, result: JobResult) -> dict:
        """The kind's keys of results.json."""
        raise NotImplementedError

    def probe_timing(self, results: dict, result: JobResult) -> dict:
        """The probe and learning seconds the probes' overhead is measured with."""
        return result.timing

    def markdown(self, spec: Spec, results: dict, result: JobResult, out_dir: Path) -> list[str]:
        """report.md up to its probes section (and the plots it shows)."""
        raise NotImplementedError

    def probe_note(self) -> list[str]:
        """Lines the probes section adds after its first paragraph."""
        return []

    def appendix(self, spec: Spec, results: dict, out_dir: Path) -> list[str]:
        """report.md after its probes section."""
        return []

    def console(self, spec: Spec, learner: Learner, results: dict, out_dir: Path) -> list[str]:
        """What the command prints once the run is done."""
        raise NotImplementedError


class SweepSection:
    """What a sweep's outputs say about the kind its trials learn."""

    learner: ClassVar[type[Learner]]

    def describe(self, sweep: Sweep) -> str:
        """What each trial learns and how it is scored, for the report's first paragraph."""
        raise NotImplementedError

    def score(self, best: TrialRecord, bold: bool = False) -> str:
        """The best trial's score in words: e.g. "validation accuracy 0.9123 at density 0.3000"."""
        raise NotImplementedError

    def plots(self, sweep: Sweep, trials: list[TrialRecord], out_dir: Path) -> tuple[list[str], list[str]]:
        """Draw the sweep's plots; (the Pareto front's trial ids, report.md lines showing the plots)."""
        raise NotImplementedError

    def columns(self) -> list[tuple[str, str]]:
        """The table's columns after status: (header, metric), where metric "epochs" is epochs run of planned
        and "pareto" marks the Pareto front."""
        raise NotImplementedError
