"""Thompson-sampling engine of MAB Campaigns (pure numpy/scipy).

Sufficient statistics and a config in, frozen dataclasses out; every random draw
comes from a seeded numpy Generator.  See bandit/README.md for the maths.
"""

from .allocation import (
    Allocation,
    AllocationConfig,
    Model,
    allocate,
    allocate_periods,
    allocate_segments,
)
from .assignment import HOLDOUT, Assignment, assign, assignment_probabilities
from .decisions import Decision, WinnerRule, decide
from .posterior import FunnelPosterior, funnel_posterior
from .profit import ArmEconomics
from .stats import ArmStats, Objective, combine_periods
from .structured import FactorDesign

__all__ = [
    "Allocation",
    "AllocationConfig",
    "ArmEconomics",
    "ArmStats",
    "Assignment",
    "Decision",
    "FactorDesign",
    "FunnelPosterior",
    "HOLDOUT",
    "Model",
    "Objective",
    "WinnerRule",
    "allocate",
    "allocate_periods",
    "allocate_segments",
    "assign",
    "assignment_probabilities",
    "combine_periods",
    "decide",
    "funnel_posterior",
]
