"""Learners by kind: one registered class per kind of learner, the plug-in the generic runtime calls.

Importing the package registers every learner (each module registers its class); `learner_for(spec)`
resolves a validated spec into its learner, and an unknown kind gets an error listing the known ones.
"""

from __future__ import annotations

from supermask.config.spec import Spec
from supermask.recipes.learners.base import (
    LEARNERS,
    BlockContext,
    Evaluation,
    Learner,
    Schedule,
    TrialWork,
    register_learner,
)
from supermask.recipes.learners.fine_tune import FineTuneLearner
from supermask.recipes.learners.supermask import SupermaskLearner
from supermask.recipes.learners.translation import TranslationLearner
from supermask.recipes.learners.weights import WeightsLearner


def learner_for(spec: Spec) -> Learner:
    """The learner of a validated spec, its recipe resolved (loads the dataset's metadata)."""
    return LEARNERS.get(spec.learn).from_spec(spec)


__all__ = [
    "LEARNERS",
    "BlockContext",
    "Evaluation",
    "FineTuneLearner",
    "Learner",
    "Schedule",
    "SupermaskLearner",
    "TranslationLearner",
    "TrialWork",
    "WeightsLearner",
    "learner_for",
    "register_learner",
]
