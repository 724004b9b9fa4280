"""A run's outputs, for every learner kind: results a program can parse (results.json) and a person can
read (report.md with PNG plots), and the resolved spec (spec.yaml); what depends on the kind comes
from its RunSection (interface/sections.py)."""

from __future__ import annotations

import dataclasses
import json
import platform as _platform
import time
from pathlib import Path

from supermask import __version__
from supermask.config.spec import Spec, dump_spec
from supermask.interface.learner_sections import run_section
from supermask.interface.probe_report import plot_probes, probe_lines, probe_summary
from supermask.interface.sections import timing_line
from supermask.recipes.results import JobResult

__all__ = ["timing_line", "write_report"]


def write_report(spec: Spec, result: JobResult, out_dir: Path) -> dict:
    """Write results.json, report.md (with its plots) and the resolved spec into out_dir; returns the results."""
    section = run_section(spec.learn)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"name": spec.name, "learner": spec.learn, **section.results(spec, result)}
    results["versions"] = {"supermask": __version__, "python": _platform.python_version()}
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["probes"] = probe_summary(
        out_dir, section.probe_timing(results, result)
    )  # None: no probes recorded
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    (out_dir / "spec.yaml").write_text(dump_spec(spec))
    lines = section.markdown(spec, results, result, out_dir)
    probes = probe_lines(results["probes"], plot_probes(out_dir), spec.probes.every, spec.probes.scale)
    if probes:
        probes[3:3] = section.probe_note()
    lines += probes + section.appendix(spec, results, out_dir)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return results


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
