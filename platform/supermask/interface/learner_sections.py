"""Every learner kind's report sections, registered on import (one module per kind), found by kind name."""

from __future__ import annotations

from supermask.interface import (  # noqa: F401  (each module registers its sections)
    classification_report,
    classification_sweep,
    translation_report,
)
from supermask.interface.sections import RUN_SECTIONS, SWEEP_SECTIONS, RunSection, SweepSection


def run_section(learn: str) -> RunSection:
    """The run report section of learner kind `learn`."""
    return RUN_SECTIONS.get(learn)


def sweep_section(learn: str) -> SweepSection:
    """The sweep report section of learner kind `learn`."""
    return SWEEP_SECTIONS.get(learn)
