"""Learner kinds as the config layer sees them, by name (`learn` in a task spec).

Importing the package registers every kind; `spec_kind(name)` looks one up and names the known
ones for any other name.
"""

from supermask.config.kinds import masks, translation, weights  # noqa: F401  (each module registers its kinds)
from supermask.config.kinds.base import SPEC_KINDS, SpecKind, refuse_unused, spec_kind

__all__ = ["SPEC_KINDS", "SpecKind", "refuse_unused", "spec_kind"]
