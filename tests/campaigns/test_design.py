"""Pure design functions: the grid, exclusions and per-segment eligibility."""

import pytest

from campaigns import design
from campaigns.errors import InvalidInput

FACTORS = {"tone": ["a", "b"], "offer": ["x", "y", "z"]}


def test_grid_is_the_product_in_factor_order():
    grid = design.variant_grid(FACTORS, [])
    assert len(grid) == 6
    assert grid[0] == {"tone": "a", "offer": "x"} and grid[-1] == {"tone": "b", "offer": "z"}
    assert design.variant_key(grid[1]) == "tone=a|offer=y"


def test_global_rule_removes_matching_variants_everywhere():
    grid = design.variant_grid(FACTORS, [{"when": {"tone": "a", "offer": ["x", "y"]}}])
    assert {design.variant_key(p) for p in grid} == {"tone=a|offer=z", "tone=b|offer=x", "tone=b|offer=y",
                                                     "tone=b|offer=z"}


def test_segment_rule_only_removes_for_that_segment():
    rules = [{"when": {"offer": "z"}, "segments": ["vip"]}]
    grid = design.variant_grid(FACTORS, rules)
    assert len(grid) == 6
    assert design.eligible_arms(grid, rules, "vip") == [0, 1, 3, 4]
    assert design.eligible_arms(grid, rules, "other") == list(range(6))


@pytest.mark.parametrize(("factors", "loc"), [
    ({}, "factors"),
    ({"tone": []}, "factors.tone"),
    ({"tone": ["a", "a"]}, "factors.tone"),
    ({"tone": ["a", " "]}, "factors.tone[1]"),
    ({"Tone": ["a"]}, "factors.Tone"),
])
def test_bad_factors_name_the_field(factors, loc):
    with pytest.raises(InvalidInput) as exc:
        design.validate_factors(factors)
    assert exc.value.field == loc
