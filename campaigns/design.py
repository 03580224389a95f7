"""Pure functions of a campaign's design: the factor grid, exclusions, per-segment eligibility.

No database here, so these are unit-tested directly and shared by the service and the demo.
"""

import itertools
import re
from collections.abc import Mapping, Sequence

from campaigns.errors import InvalidInput

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def validate_factors(factors: Mapping[str, Sequence[str]]) -> None:
    if not factors:
        raise InvalidInput("factors", "at least one factor with at least one level is required")
    for name, levels in factors.items():
        if not IDENTIFIER.match(name):
            raise InvalidInput(
                f"factors.{name}", "factor names must be lowercase identifiers (a-z, 0-9, _)"
            )
        if not levels:
            raise InvalidInput(f"factors.{name}", "a factor needs at least one level (the grid is empty)")
        if len(set(levels)) != len(levels):
            raise InvalidInput(f"factors.{name}", "levels must be unique")
        for i, level in enumerate(levels):
            if not isinstance(level, str) or not level.strip():
                raise InvalidInput(f"factors.{name}[{i}]", "a level must be a non-empty string")


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def validate_exclusions(
    factors: Mapping[str, Sequence[str]], exclusions: Sequence[Mapping], segment_names: set[str]
) -> None:
    for i, rule in enumerate(exclusions):
        when = rule.get("when") or {}
        if not when:
            raise InvalidInput(f"exclusions[{i}].when", "a rule needs at least one factor condition")
        for factor, value in when.items():
            if factor not in factors:
                raise InvalidInput(f"exclusions[{i}].when.{factor}", f"unknown factor '{factor}'")
            for level in _as_list(value):
                if level not in factors[factor]:
                    raise InvalidInput(
                        f"exclusions[{i}].when.{factor}",
                        f"unknown level '{level}' (levels: {', '.join(factors[factor])})",
                    )
        for j, seg in enumerate(rule.get("segments") or []):
            if seg not in segment_names:
                raise InvalidInput(
                    f"exclusions[{i}].segments[{j}]", f"segment '{seg}' is not targeted by this campaign"
                )


def _matches(params: Mapping[str, str], when: Mapping) -> bool:
    return all(params[f] in _as_list(v) for f, v in when.items())


def variant_grid(factors: Mapping[str, Sequence[str]], exclusions: Sequence[Mapping]) -> list[dict]:
    """All level combinations minus globally excluded ones (rules without `segments`)."""
    names = list(factors)
    global_rules = [r["when"] for r in exclusions if not r.get("segments")]
    grid = []
    for combo in itertools.product(*(factors[n] for n in names)):
        params = dict(zip(names, combo, strict=True))
        if not any(_matches(params, when) for when in global_rules):
            grid.append(params)
    return grid


def variant_key(params: Mapping[str, str]) -> str:
    return "|".join(f"{k}={v}" for k, v in params.items())


def eligible_arms(variants: Sequence[Mapping[str, str]], exclusions: Sequence[Mapping], segment: str) -> list[int]:
    """Arm indices a segment may receive: per-segment rules remove variants for that segment only."""
    rules = [r["when"] for r in exclusions if segment in (r.get("segments") or [])]
    return [i for i, params in enumerate(variants) if not any(_matches(params, w) for w in rules)]
