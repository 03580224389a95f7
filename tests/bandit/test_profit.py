"""Profit objective in the engine: economics validation, posterior invariants, costly discount loses."""

import numpy as np
import pytest

from bandit import ArmStats
from bandit.allocation import AllocationConfig, Model, allocate, allocate_segments
from bandit.profit import ArmEconomics, profit_posterior
from bandit.stats import Objective

# Arm 0: no discount; arm 1: 40% off, converting slightly better (6% vs 5% of sends).
STATS = ArmStats(
    sends=[4000, 4000],
    clicks=[800, 800],
    conversions=[200, 240],
    revenue=[200 * 50.0, 240 * 50.0],
    unsubscribes=[8, 8],
)
ECON = ArmEconomics(margin=0.5, cost_share=[0.0, 0.4], cost_fixed=[0.0, 0.0], unsubscribe_cost=20.0)


def test_costly_discount_wins_under_conversion_and_loses_under_profit():
    conv = allocate(STATS, AllocationConfig(objective=Objective.CONVERSION), seed=7)
    profit = allocate(STATS, AllocationConfig(objective=Objective.PROFIT, economics=ECON), seed=7)
    assert conv.p_best[1] > 0.9
    assert profit.p_best[0] > 0.99
    assert profit.weights[0] > profit.weights[1]
    # expected profit per send: 0.05*50*0.5 - 0.002*20 = 1.21 vs 0.06*50*0.1 - 0.04 = 0.26
    assert profit.posterior_mean[0] == pytest.approx(1.21, rel=0.05)
    assert profit.posterior_mean[1] == pytest.approx(0.26, rel=0.1)


def test_free_economics_with_full_margin_ranks_like_revenue():
    stats = ArmStats([1000, 1000, 1000], [200, 220, 180], [40, 50, 30], [2000.0, 2100.0, 1700.0])
    econ = ArmEconomics.free(3, margin=1.0)
    p = profit_posterior(stats, econ)
    rev = allocate(stats, AllocationConfig(objective=Objective.REVENUE, prune_eps=0.0), seed=1)
    assert np.argmax(p.mean()) == np.argmax(rev.posterior_mean)
    assert np.allclose(p.mean(), rev.posterior_mean, rtol=1e-9)


def test_fixed_cost_and_unsubscribes_lower_profit_by_their_expected_amount():
    stats = ArmStats([1000, 1000], [200, 200], [40, 40], [2000.0, 2000.0], unsubscribes=[0, 50])
    base = profit_posterior(stats, ArmEconomics(0.6, [0, 0], [0, 0], 0.0)).mean()
    costed = profit_posterior(stats, ArmEconomics(0.6, [0, 0], [5.0, 0], 10.0)).mean()
    unsub_mean = (1 + np.array([0, 50])) / (2 + 1000)
    conv_mean = (201 / 1002) * (41 / 202)
    assert costed[0] == pytest.approx(base[0] - conv_mean * 5.0 - unsub_mean[0] * 10.0)
    assert costed[1] == pytest.approx(base[1] - unsub_mean[1] * 10.0)


def test_profit_draws_finite_and_can_be_negative_and_weights_sum_to_one():
    econ = ArmEconomics(0.3, [0.0, 0.5], [0.0, 2.0], 100.0)
    stats = ArmStats([50, 50], [5, 6], [1, 2], [40.0, 90.0], unsubscribes=[3, 4])
    p = profit_posterior(stats, econ)
    draws = p.draw(np.random.default_rng(3), 2000)
    assert draws.shape == (2000, 2)
    assert np.isfinite(draws).all()
    assert (draws < 0).any()
    a = allocate(stats, AllocationConfig(objective="profit", economics=econ), seed=3)
    assert np.isfinite(a.weights).all() and a.weights.sum() == pytest.approx(1.0)
    again = allocate(stats, AllocationConfig(objective="profit", economics=econ), seed=3)
    assert np.array_equal(a.weights, again.weights)


def test_zero_data_gives_finite_weights():
    econ = ArmEconomics(0.5, [0.0, 0.2, 0.4], [0.0, 0.0, 1.0], 5.0)
    a = allocate(ArmStats.zeros(3), AllocationConfig(objective="profit", economics=econ), seed=0)
    assert np.isfinite(a.weights).all() and a.weights.sum() == pytest.approx(1.0)


def test_hierarchical_supports_profit_and_structured_refuses():
    econ = ArmEconomics(0.5, [0.0, 0.4], [0.0, 0.0], 20.0)
    cfg = AllocationConfig(objective="profit", economics=econ, model=Model.HIERARCHICAL)
    out = allocate_segments([STATS, STATS], cfg, seed=2)
    assert all(o.p_best[0] > 0.99 for o in out)
    from bandit.structured import FactorDesign

    design = FactorDesign(np.array([[0], [1]]))
    with pytest.raises(ValueError, match="^objective"):
        cfg = AllocationConfig(objective="profit", economics=econ, model="structured")
        allocate_segments([STATS], cfg, 0, design=design)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"margin": 1.5}, "margin"),
        ({"margin": float("nan")}, "margin"),
        ({"cost_share": [0.0, -0.1]}, "cost_share"),
        ({"cost_fixed": [0.0, float("inf")]}, "cost_fixed"),
        ({"cost_fixed": [0.0]}, "cost_fixed"),
        ({"unsubscribe_cost": -1}, "unsubscribe_cost"),
    ],
)
def test_bad_economics_names_the_argument(kwargs, field):
    base = {"margin": 0.5, "cost_share": [0.0, 0.2], "cost_fixed": [0.0, 0.0], "unsubscribe_cost": 1.0}
    with pytest.raises(ValueError, match=f"^{field}"):
        ArmEconomics(**{**base, **kwargs})


def test_config_requires_economics_exactly_with_profit():
    with pytest.raises(ValueError, match="^economics"):
        AllocationConfig(objective="profit")
    with pytest.raises(ValueError, match="^economics"):
        AllocationConfig(objective="conversion", economics=ECON)
    with pytest.raises(ValueError, match="^economics"):
        allocate(ArmStats.zeros(3), AllocationConfig(objective="profit", economics=ECON))


def test_unsubscribes_validated_and_carried_through_sums():
    with pytest.raises(ValueError, match="^unsubscribes"):
        ArmStats([10, 10], [1, 1], [0, 0], [0, 0], unsubscribes=[11, 0])
    with pytest.raises(ValueError, match="^unsubscribes"):
        ArmStats([10, 10], [1, 1], [0, 0], [0, 0], unsubscribes=[-1, 0])
    total = (STATS + STATS).scaled(0.5)
    assert np.array_equal(total.unsubscribes, STATS.unsubscribes)
    assert np.array_equal(ArmStats.zeros(2).unsubscribes, [0.0, 0.0])
