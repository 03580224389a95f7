"""Bad input raises ValueError naming the argument -- never a silent NaN weight."""

import numpy as np
import pytest

from bandit import AllocationConfig, ArmStats, allocate, assign

OK = dict(sends=[10, 10], clicks=[1, 2], conversions=[0, 1], revenue=[0.0, 5.0])


def stats_with(**override):
    return ArmStats(**{**OK, **override})


@pytest.mark.parametrize(
    "override, name",
    [
        (dict(sends=[-1, 10]), "sends"),
        (dict(clicks=[-1, 2]), "clicks"),
        (dict(conversions=[0, -2]), "conversions"),
        (dict(revenue=[-5.0, 0.0]), "revenue"),
        (dict(clicks=[11, 2]), "clicks"),
        (dict(conversions=[11, 0]), "conversions"),
        (dict(clicks=[1, 2, 3]), "clicks"),
        (dict(revenue=[0.0]), "revenue"),
        (dict(sends=[np.nan, 10]), "sends"),
        (dict(revenue=[np.nan, 1.0]), "revenue"),
        (dict(clicks=[np.inf, 1]), "clicks"),
        (dict(sends=[], clicks=[], conversions=[], revenue=[]), "sends"),
        (dict(sends=[[10, 10]]), "sends"),
        (dict(sends=["a", "b"]), "sends"),
        (dict(pending_clicks=[10, 0]), "pending_clicks"),
        (dict(pending_conversions=[0, 5]), "pending_conversions"),
    ],
)
def test_bad_stats_name_the_argument(override, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        stats_with(**override)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(floor=-0.1), "floor"),
        (dict(floor=1.5), "floor"),
        (dict(floor=float("nan")), "floor"),
        (dict(cap=0.0), "cap"),
        (dict(cap=1.2), "cap"),
        (dict(n_draws=0), "n_draws"),
        (dict(burn_in_min_sends=-1), "burn_in_min_sends"),
        (dict(top_two=1.0), "top_two"),
        (dict(sharpen=0), "sharpen"),
        (dict(discount=0), "discount"),
        (dict(objective="opens"), "objective"),
        (dict(model="neural"), "model"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        AllocationConfig(**kwargs)


def test_cap_that_cannot_be_met_for_these_arms():
    stats = ArmStats.zeros(5)
    with pytest.raises(ValueError, match=r"^cap:"):
        allocate(stats, AllocationConfig(cap=0.1))


def test_bad_seed_and_unknown_inputs():
    with pytest.raises(ValueError, match=r"^seed:"):
        allocate(stats_with(), seed=-1)
    with pytest.raises(ValueError, match=r"^model_inputs:"):
        allocate(stats_with(), foo=1)
    with pytest.raises(ValueError, match=r"^stats:"):
        allocate({"sends": [1]})


@pytest.mark.parametrize(
    "args, name",
    [
        ((10, [0.5, 0.6], 0.1, 0), "weights"),
        ((10, [0.5, np.nan], 0.1, 0), "weights"),
        ((10, [1.5, -0.5], 0.1, 0), "weights"),
        ((10, [], 0.1, 0), "weights"),
        ((10, [0.5, 0.5], 1.0, 0), "holdout_share"),
        ((10, [0.5, 0.5], -0.1, 0), "holdout_share"),
        ((10, [0.5, 0.5], float("nan"), 0), "holdout_share"),
        ((-1, [0.5, 0.5], 0.1, 0), "n"),
        ((10, [0.5, 0.5], 0.1, -3), "seed"),
    ],
)
def test_bad_assign_input(args, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        assign(*args)
