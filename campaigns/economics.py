"""A profit campaign's economics: what a conversion earns and what each variant costs.

Stored on the campaign as JSON (`campaign.economics`):

    {"margin": 0.65, "unsubscribe_cost": 12.0,
     "level_costs": {"discount": {"20%": {"share": 0.2, "fixed": 0.0}},
                     "offer": {"free dessert": {"share": 0.0, "fixed": 4.5}}}}

A variant's costs are the sums over its levels: its cost share (of the order value given away) and
its fixed cost per conversion. Profit per send = revenue x (margin - cost share) - conversions x
fixed cost - unsubscribes x unsubscribe cost. The holdout's email (the control) has no level costs.

Pure functions: no database, shared by the campaign service, the period planner and the report.
"""

from collections.abc import Mapping, Sequence

import numpy as np

import bandit
from campaigns.errors import InvalidInput

PROFIT = "profit"
# The models whose posterior supports the profit objective (the structured one does not).
PROFIT_MODELS = ("auto", "independent", "hierarchical")


def validate(objective: str, model: str, economics, factors: Mapping[str, Sequence[str]]) -> dict | None:
    """The economics to store (plain JSON), or a 422 naming the field: economics without the profit
    objective, the profit objective without economics or with the structured model, a cost for an
    unknown factor or level, a variant whose levels give away more than the whole order."""
    if objective != PROFIT:
        if economics is not None:
            raise InvalidInput("economics", f"only used by the profit objective, not {objective!r}")
        return None
    if economics is None:
        raise InvalidInput("economics", "the profit objective needs economics: margin, level costs, unsubscribe cost")
    if model not in PROFIT_MODELS:
        raise InvalidInput("model", f"the {model} model does not support the profit objective: use auto, "
                                    "hierarchical or independent")
    stored = economics.model_dump(mode="json")
    for factor, levels in stored["level_costs"].items():
        if factor not in factors:
            raise InvalidInput(f"economics.level_costs.{factor}", f"unknown factor '{factor}'")
        for level in levels:
            if level not in factors[factor]:
                raise InvalidInput(f"economics.level_costs.{factor}.{level}",
                                   f"unknown level '{level}' of factor '{factor}'")
    worst = sum(max((c["share"] for c in levels.values()), default=0.0) for levels in stored["level_costs"].values())
    if worst > 1.0 + 1e-12:
        raise InvalidInput("economics.level_costs", f"a variant combining the largest shares gives away {worst:.0%} "
                                                    "of the order: the shares of one variant's levels sum above 1")
    return stored


def arm_costs(economics: Mapping, variants: Sequence[Mapping[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per variant (arm order): (cost share, fixed cost per conversion), summed over its levels."""
    share = np.zeros(len(variants))
    fixed = np.zeros(len(variants))
    for factor, levels in economics.get("level_costs", {}).items():
        for i, params in enumerate(variants):
            cost = levels.get(params.get(factor))
            if cost is not None:
                share[i] += cost.get("share", 0.0)
                fixed[i] += cost.get("fixed", 0.0)
    return share, fixed


def arm_economics(economics: Mapping, variants: Sequence[Mapping[str, str]]) -> bandit.ArmEconomics:
    """The engine's per-arm economics of a campaign's variants."""
    share, fixed = arm_costs(economics, variants)
    return bandit.ArmEconomics(float(economics["margin"]), share, fixed, float(economics.get("unsubscribe_cost", 0.0)))


def engine_model(objective: str, model: str) -> bandit.Model:
    """The posterior model a campaign runs: `auto` with profit is the hierarchical model, the best
    that supports it (the structured model does not; over one segment it is the independent one)."""
    if objective == PROFIT and model == "auto":
        return bandit.Model.HIERARCHICAL
    return bandit.Model(model)
