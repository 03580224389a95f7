"""Invariants of allocate(): weights are a distribution, floor/cap hold, seeds reproduce."""

import json

import numpy as np
import pytest

import bandit
from bandit import Allocation, AllocationConfig, ArmStats, Objective, allocate


def make_stats(rates, sends=2000, seed=0, conv_given_click=0.1, value=40.0):
    rng = np.random.default_rng(seed)
    rates = np.asarray(rates, dtype=float)
    sends = np.full(rates.shape, sends)
    clicks = rng.binomial(sends, rates)
    conversions = rng.binomial(clicks, conv_given_click)
    revenue = rng.gamma(1.0, value, size=rates.shape) * conversions
    return ArmStats(sends, clicks, conversions, revenue)

from bandit.profit import ArmEconomics  # noqa: E402


@pytest.mark.parametrize("objective", list(Objective))
@pytest.mark.parametrize("n_arms", [2, 7, 200])
def test_weights_are_a_distribution_with_floor_and_cap(objective, n_arms):
    rates = np.linspace(0.02, 0.06, n_arms)
    stats = make_stats(rates, seed=n_arms)
    cap = max(0.3, 1.5 / n_arms)
    economics = ArmEconomics.free(n_arms) if objective is Objective.PROFIT else None
    config = AllocationConfig(objective=objective, floor=0.1, cap=cap, n_draws=2000, economics=economics)
    result = allocate(stats, config, seed=3)
    w = result.weights
    assert isinstance(result, Allocation)
    assert w.shape == (n_arms,)
    assert abs(w.sum() - 1.0) < 1e-12
    assert np.all(w >= 0.1 / n_arms - 1e-12)
    assert np.all(w <= cap + 1e-12)
    assert np.all(np.isfinite(result.p_best))
    assert abs(result.p_best.sum() - 1.0) < 1e-9
    assert result.stage == "thompson"


def test_floor_stays_valid_when_arms_times_floor_exceeds_one():
    # 200 arms x 0.5 total floor: per-arm floor 0.0025 -- still a distribution.
    stats = make_stats(np.r_[0.2, np.full(199, 0.01)], sends=5000)
    result = allocate(stats, AllocationConfig(floor=0.5, n_draws=2000), seed=1)
    assert abs(result.weights.sum() - 1.0) < 1e-12
    assert result.weights.min() >= 0.5 / 200 - 1e-15
    # the clear winner keeps all the non-floor traffic
    assert result.weights[0] == pytest.approx(0.5 + 0.5 / 200, abs=1e-3)


def test_cap_redistributes_excess_and_keeps_floor():
    stats = make_stats([0.2, 0.01, 0.01, 0.01], sends=5000)
    result = allocate(stats, AllocationConfig(cap=0.4, floor=0.04), seed=2)
    w = result.weights
    assert w[0] == pytest.approx(0.4)
    assert abs(w.sum() - 1) < 1e-12
    assert np.all(w >= 0.01 - 1e-12)


def test_deterministic_under_seed_and_varies_with_seed():
    stats = make_stats([0.03, 0.031, 0.032, 0.029], sends=3000)
    config = AllocationConfig(n_draws=3000)
    a = allocate(stats, config, seed=42)
    b = allocate(stats, config, seed=42)
    c = allocate(stats, config, seed=43)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.p_best, b.p_best)
    assert a.seed == 42
    assert not np.array_equal(a.p_best, c.p_best)


def test_burn_in_is_per_arm_short_arm_gets_its_equal_share_others_keep_thompson():
    stats = ArmStats(sends=[500, 20, 800], clicks=[20, 5, 30], conversions=[2, 1, 3], revenue=[10, 5, 30])
    config = AllocationConfig(burn_in_min_sends=100)
    result = allocate(stats, config, seed=0)
    plain = allocate(stats, AllocationConfig(burn_in_min_sends=0), seed=0)
    assert result.stage == "thompson"
    assert "burn-in" in result.reason and "100" in result.reason
    assert result.diagnostics["arms_below_burn_in"] == [1]
    assert result.weights[1] >= 1 / 3 - 1e-12
    assert result.weights[1] == pytest.approx(max(plain.weights[1], 1 / 3))
    # the arms past the burn-in keep their Thompson ratio
    assert result.weights[0] * plain.weights[2] == pytest.approx(result.weights[2] * plain.weights[0])
    assert result.weights.sum() == pytest.approx(1.0)


def test_burn_in_all_arms_short_gives_equal_weights_with_reason():
    stats = ArmStats(sends=[50, 20, 80], clicks=[2, 5, 3], conversions=[1, 1, 0], revenue=[1, 5, 0])
    result = allocate(stats, AllocationConfig(burn_in_min_sends=100), seed=0)
    np.testing.assert_allclose(result.weights, np.full(3, 1 / 3))
    assert result.stage == "burn_in"
    assert "burn-in" in result.reason and "100" in result.reason
    assert result.diagnostics["arms_below_burn_in"] == [0, 1, 2]


def test_no_data_at_all_is_a_value_not_an_error():
    stats = ArmStats.zeros(5)
    result = allocate(stats, seed=0)
    np.testing.assert_allclose(result.weights, 0.2)
    assert result.stage == "burn_in"
    assert result.reason


def test_single_arm():
    result = allocate(ArmStats([10], [1], [0], [0.0]))
    assert result.weights.tolist() == [1.0]
    assert result.stage == "single_arm"


def test_p_best_converges_to_truth_when_arms_far_apart():
    stats = make_stats([0.02, 0.05, 0.03], sends=20000, conv_given_click=0.2)
    for objective in Objective:
        economics = ArmEconomics.free(3) if objective is Objective.PROFIT else None
        result = allocate(stats, AllocationConfig(objective=objective, floor=0.0, economics=economics), seed=5)
        assert result.p_best[1] > 0.99, objective
        assert result.weights[1] > 0.99
        assert result.expected_loss[1] < 1e-4 * max(result.posterior_mean[1], 1e-9) * 100


def test_p_best_matches_two_arm_closed_form():
    # P(theta_1 > theta_0) for Beta posteriors by numerical integration.
    from scipy import integrate
    from scipy import stats as sps

    stats = ArmStats(sends=[400, 400], clicks=[12, 20], conversions=[0, 0], revenue=[0, 0])
    a0, b0, a1, b1 = 13, 389, 21, 381
    exact, _ = integrate.quad(lambda x: sps.beta.pdf(x, a1, b1) * sps.beta.cdf(x, a0, b0), 0, 1, points=[0.03, 0.05])
    result = allocate(stats, AllocationConfig(objective="click", n_draws=200_000, floor=0.0), seed=9)
    assert result.p_best[1] == pytest.approx(exact, abs=4 * 0.5 / np.sqrt(200_000))


def test_diagnostics_are_json_serialisable():
    stats = make_stats([0.02, 0.04, 0.03])
    result = allocate(stats, AllocationConfig(top_two=0.5, sharpen=2.0, cap=0.9), seed=1)
    text = json.dumps(result.diagnostics)
    assert "posterior_mean" in text
    assert result.stage == "top_two"


def test_top_two_spends_more_on_runner_up():
    stats = make_stats([0.03, 0.034, 0.02], sends=4000, seed=4)
    plain = allocate(stats, AllocationConfig(floor=0.0, sharpen=1.0, optimistic=False), seed=1)
    top2 = allocate(stats, AllocationConfig(floor=0.0, sharpen=1.0, optimistic=False, top_two=0.5), seed=1)
    leader = int(np.argmax(plain.weights))
    assert top2.weights[leader] < plain.weights[leader]
    assert abs(top2.weights.sum() - 1) < 1e-12


def test_sharpen_concentrates_weights_but_not_reported_p_best():
    stats = make_stats([0.03, 0.033, 0.031], sends=3000, seed=6)
    plain = allocate(stats, AllocationConfig(floor=0.0, sharpen=1.0, optimistic=False), seed=1)
    sharp = allocate(stats, AllocationConfig(floor=0.0, sharpen=4.0, optimistic=False), seed=1)
    assert sharp.weights.max() > plain.weights.max()
    np.testing.assert_array_equal(sharp.p_best, plain.p_best)


def test_default_levers_sharpen_and_optimism_but_honest_p_best():
    # defaults chosen by benchmarks/bench_chapelle_li.py and bench_email.py (see benchmarks/README.md)
    assert AllocationConfig().sharpen == 2.0 and AllocationConfig().optimistic is True
    stats = make_stats([0.03, 0.033, 0.031], sends=3000, seed=6)
    plain = allocate(stats, AllocationConfig(floor=0.0, sharpen=1.0, optimistic=False), seed=1)
    tuned = allocate(stats, AllocationConfig(floor=0.0), seed=1)
    np.testing.assert_array_equal(tuned.p_best, plain.p_best)
    assert tuned.weights.max() > plain.weights.max()
    assert abs(tuned.weights.sum() - 1) < 1e-12


def test_pruning_does_not_change_p_best_materially():
    stats = make_stats(np.r_[0.05, 0.049, np.full(50, 0.01)], sends=5000)
    pruned = allocate(stats, AllocationConfig(objective="click", n_draws=20000), seed=1)
    full = allocate(stats, AllocationConfig(objective="click", n_draws=20000, prune_eps=0.0), seed=1)
    assert pruned.diagnostics["n_contenders"] < 52
    np.testing.assert_allclose(pruned.p_best, full.p_best, atol=0.02)


def test_tied_draws_share_the_win_instead_of_going_to_the_lowest_index():
    from bandit.weights import p_best_from_draws

    draws = np.array([[1.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.2, 0.1]])
    assert np.allclose(p_best_from_draws(draws), [(0.5 + 1 / 3) / 3, (0.5 + 1 / 3 + 1) / 3, (1 / 3) / 3])


@pytest.mark.parametrize("model", ["structured", "hierarchical", "independent"])
def test_no_data_gives_equal_weights_under_every_model_with_optimistic_sampling(model):
    """Optimistic sampling clamps draws below the mean to the mean; with a correlated posterior
    whole rows tie. Those ties once all went to arm 0 (48% of the traffic of 6 arms)."""
    k = 6
    empty = [bandit.ArmStats(sends=np.zeros(k), clicks=np.zeros(k), conversions=np.zeros(k), revenue=np.zeros(k))
             for _ in range(2)]
    design = bandit.FactorDesign(np.array([[i // 3, i % 3] for i in range(k)]), n_levels=(2, 3), names=("a", "b"))
    config = bandit.AllocationConfig(model=bandit.Model(model), burn_in_min_sends=0, optimistic=True)
    for alloc in bandit.allocate_segments(empty, config, seed=3, design=design):
        assert np.allclose(alloc.weights, 1 / k, atol=0.02), alloc.weights  # MC error ≈ 0.004
