"""Posterior correctness against closed forms, funnel/delay/drift handling, decisions,
shared-strength models and short simulations."""

import numpy as np
import pytest
from scipy import stats as sps

from bandit import (
    AllocationConfig,
    ArmStats,
    FactorDesign,
    Model,
    Objective,
    WinnerRule,
    allocate,
    allocate_periods,
    allocate_segments,
    combine_periods,
    decide,
    funnel_posterior,
)
from bandit.hierarchical import empirical_bayes_prior
from bandit.posterior import beta_draws, gamma_draws
from bandit.simulate import (
    bernoulli_environment,
    default_policies,
    factorial_environment,
    simulate,
    thompson_policy,
    uniform_policy,
)

STATS = ArmStats(sends=[1000, 800], clicks=[40, 20], conversions=[6, 1], revenue=[300.0, 20.0])


def test_click_posterior_matches_beta_closed_form():
    post = funnel_posterior(STATS, Objective.CLICK)
    np.testing.assert_allclose(post.click_a, [41, 21])
    np.testing.assert_allclose(post.click_b, [961, 781])
    draws = post.draw(np.random.default_rng(0), 100_000)
    for i in range(2):
        exact = sps.beta(post.click_a[i], post.click_b[i])
        assert draws[:, i].mean() == pytest.approx(exact.mean(), rel=5e-3)
        assert draws[:, i].std() == pytest.approx(exact.std(), rel=1e-2)
        assert sps.kstest(draws[:20_000, i], exact.cdf).pvalue > 1e-3


@pytest.mark.parametrize("a, b", [(3.0, 5.0), (60.0, 2000.0), (1.0, 1.0)])
def test_beta_and_gamma_samplers_match_scipy(a, b):
    rng = np.random.default_rng(1)
    x = beta_draws(rng, np.array([a]), np.array([b]), 20_000)[:, 0]
    assert sps.kstest(x, sps.beta(a, b).cdf).pvalue > 1e-3
    g = gamma_draws(rng, np.array([b]), (20_000, 1))[:, 0]
    assert sps.kstest(g, sps.gamma(b).cdf).pvalue > 1e-3


def test_conversion_posterior_is_product_of_two_betas():
    post = funnel_posterior(STATS, Objective.CONVERSION)
    np.testing.assert_allclose(post.conv_a, [7, 2])
    np.testing.assert_allclose(post.conv_b, [35, 20])
    draws = post.draw(np.random.default_rng(2), 200_000)
    # E[c v] = E[c] E[v] for independent stages
    expected = (41 / 1002) * (7 / 42)
    assert draws[:, 0].mean() == pytest.approx(expected, rel=1e-2)
    np.testing.assert_allclose(post.mean(), [expected, (21 / 802) * (2 / 22)])


def test_revenue_posterior_mean_and_prior():
    post = funnel_posterior(STATS, Objective.REVENUE, value_k=1.0, value_prior_weight=1.0)
    pooled = 320.0 / 7
    # posterior mean order value = (m0 * pooled + R) / (m0 + n)
    mean_value = post.value_rate / (post.value_shape - 1.0)
    np.testing.assert_allclose(mean_value, [(pooled + 300) / 7, (pooled + 20) / 2])
    draws = post.draw(np.random.default_rng(3), 200_000)
    assert draws[:, 0].mean() == pytest.approx(post.mean()[0], rel=3e-2)
    assert np.all(draws > 0)


def test_revenue_without_any_revenue_ranks_by_conversion():
    stats = ArmStats([1000, 1000], [50, 50], [10, 2], [0.0, 0.0])
    result = allocate(stats, AllocationConfig(objective="revenue", floor=0.0), seed=0)
    assert result.p_best[0] > 0.95
    assert np.all(np.isfinite(result.weights))


def test_conversions_without_clicks_fall_back_to_per_send_rate():
    stats = ArmStats([1000, 1000], [5, 5], [30, 10], [0.0, 0.0])  # view-through conversions
    post = funnel_posterior(stats, Objective.CONVERSION)
    assert post.conv_a is None
    np.testing.assert_allclose(post.click_a, [31, 11])


def test_pending_sends_are_not_failures():
    matured = ArmStats([1000], [30], [3], [0.0])
    pending = ArmStats([1000], [30], [3], [0.0], pending_clicks=[500], pending_conversions=[10])
    p1 = funnel_posterior(matured, Objective.CONVERSION)
    p2 = funnel_posterior(pending, Objective.CONVERSION)
    np.testing.assert_allclose(p2.click_b, p1.click_b - 500)
    np.testing.assert_allclose(p2.conv_b, p1.conv_b - 10)
    assert p2.mean()[0] > p1.mean()[0]


def test_combine_periods_discounts_per_period():
    week = ArmStats([100, 100], [10, 5], [1, 0], [10.0, 0.0])
    total = combine_periods([week, week, week], discount=0.5)
    np.testing.assert_allclose(total.sends, [175, 175])  # 100 * (1 + .5 + .25)
    np.testing.assert_allclose(combine_periods([week, week]).clicks, [20, 10])
    with pytest.raises(ValueError, match="^discount:"):
        combine_periods([week], discount=1.5)
    # allocate_periods uses config.discount
    res = allocate_periods([week, week], AllocationConfig(discount=0.5, burn_in_min_sends=0), seed=0)
    assert res.stage == "thompson"


def test_discount_lets_the_engine_follow_drift():
    old = ArmStats([20000, 20000], [1000, 400], [100, 40], [0, 0])  # arm 0 used to win
    new = ArmStats([2000, 2000], [40, 100], [4, 10], [0, 0])  # now arm 1 does
    cfg = dict(objective="click", floor=0.0, burn_in_min_sends=0)
    stale = allocate_periods([old, new], AllocationConfig(**cfg), seed=0)
    fresh = allocate_periods([old, new], AllocationConfig(discount=0.01, **cfg), seed=0)
    assert stale.p_best[0] > 0.9 and fresh.p_best[1] > 0.9


def test_decide_declares_winner_only_when_sure_and_cheap():
    clear = ArmStats([50000, 50000], [2500, 1500], [500, 150], [0, 0])
    close = ArmStats([2000, 2000], [60, 61], [6, 6], [0, 0])
    won = decide(allocate(clear, seed=0))
    assert won.winner == 0 and won.reason.startswith("winner")
    open_ = decide(allocate(close, seed=0))
    assert open_.winner is None and "undecided" in open_.reason
    assert decide(allocate(ArmStats.zeros(3))).winner is None
    with pytest.raises(ValueError, match="^min_p_best:"):
        WinnerRule(min_p_best=0)


def test_expected_loss_matches_two_arm_integral():
    stats = ArmStats([300, 300], [12, 15], [0, 0], [0, 0])
    res = allocate(stats, AllocationConfig(objective="click", n_draws=200_000, prune_eps=0), seed=4)
    a = sps.beta(13, 289).rvs(400_000, random_state=1)
    b = sps.beta(16, 286).rvs(400_000, random_state=2)
    assert res.expected_loss[0] == pytest.approx(np.maximum(b - a, 0).mean(), rel=0.03)


# --- shared strength --------------------------------------------------------


def _factorial_stats(n_segments=4, sends=600, seed=0):
    env = factorial_environment(levels=(3, 4), n_segments=n_segments, customers=10**6, periods=1, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_segments):
        n = np.full(env.n_arms, sends)
        c = rng.binomial(n, env.click[s])
        v = rng.binomial(c, env.conv[s])
        out.append(ArmStats(n, c, v, v * 50.0))
    return env, out


def test_empirical_bayes_kappa_large_when_segments_agree_small_when_not():
    rng = np.random.default_rng(0)
    trials = np.full((8, 50), 5000.0)
    same = rng.binomial(5000, np.tile(rng.uniform(0.02, 0.05, 50), (8, 1))).astype(float)
    _, _, kappa_same = empirical_bayes_prior(same, trials)
    differ = rng.binomial(5000, rng.uniform(0.01, 0.08, (8, 50))).astype(float)
    _, _, kappa_differ = empirical_bayes_prior(differ, trials)
    assert kappa_same > 10 * kappa_differ

from bandit.profit import ArmEconomics  # noqa: E402


@pytest.mark.parametrize("model", [Model.HIERARCHICAL, Model.STRUCTURED, Model.AUTO])
@pytest.mark.parametrize("objective", list(Objective))
def test_shared_models_return_valid_allocations(model, objective):
    env, stats = _factorial_stats()
    economics = ArmEconomics.free(env.n_arms) if objective is Objective.PROFIT else None
    config = AllocationConfig(model=model, objective=objective, n_draws=2000, floor=0.1, cap=0.5, economics=economics)
    if economics is not None and model is not Model.HIERARCHICAL:
        with pytest.raises(ValueError, match="^objective"):  # the structured model refuses profit
            allocate_segments(stats, config, seed=3, design=env.design)
        return
    out = allocate_segments(stats, config, seed=3, design=env.design)
    assert len(out) == len(stats)
    for a in out:
        assert abs(a.weights.sum() - 1) < 1e-12
        assert a.weights.min() >= 0.1 / env.n_arms - 1e-12 and a.weights.max() <= 0.5 + 1e-12
        assert np.isfinite(a.p_best).all()
    again = allocate_segments(stats, config, seed=3, design=env.design, max_workers=1)
    np.testing.assert_array_equal(out[2].weights, again[2].weights)


def test_structured_needs_a_matching_design():
    env, stats = _factorial_stats()
    with pytest.raises(ValueError, match="^design:"):
        allocate_segments(stats, AllocationConfig(model="structured"), seed=0)
    with pytest.raises(ValueError, match="^design:"):
        allocate_segments(stats, AllocationConfig(model="structured"), design=FactorDesign.full_factorial(2, 2))
    with pytest.raises(ValueError, match="^levels:"):
        FactorDesign(np.array([[0, -1]]))


def test_structured_posterior_recovers_main_effects():
    # one segment, two factors, lots of data: fitted rates close to the truth
    design = FactorDesign.full_factorial(3, 4)
    rng = np.random.default_rng(5)
    eta = -3.0 + np.array([0.0, 0.3, -0.3])[design.levels[:, 0]] + np.array([0, 0.2, 0.4, -0.2])[design.levels[:, 1]]
    p = 1 / (1 + np.exp(-eta))
    n = np.full(12, 50_000)
    c = rng.binomial(n, p)
    cfg = AllocationConfig(model="structured", objective="click")
    res = allocate(ArmStats(n, c, np.zeros(12), np.zeros(12)), cfg, seed=0, design=design)
    np.testing.assert_allclose(res.posterior_mean, p, rtol=0.05)
    assert int(np.argmax(res.p_best)) == int(np.argmax(p))


# --- simulations ---------------------------------------------------------------


def test_thompson_beats_uniform_clearly_on_easy_bernoulli_problem():
    env = bernoulli_environment([0.02, 0.03, 0.05, 0.025], batch=2000)
    res = simulate(
        env,
        {"uniform": uniform_policy(env), "ts": thompson_policy(env, AllocationConfig(n_draws=2000))},
        periods=15,
        seed=1,
    )
    assert res.regret["ts"][-1] < 0.35 * res.regret["uniform"][-1]


def test_structured_beats_uniform_on_small_factorial_campaign():
    env = factorial_environment(levels=(3, 4, 5), n_segments=2, customers=400_000, periods=5, seed=2)
    policies = default_policies(env, AllocationConfig(n_draws=1000))
    picked = {k: policies[k] for k in ("uniform", "structured_ts", "oracle")}
    res = simulate(env, picked, periods=5, seed=0)
    assert res.regret["structured_ts"][-1] < 0.7 * res.regret["uniform"][-1]
    assert res.share_of_oracle("structured_ts") > res.share_of_oracle("uniform")


def test_delayed_and_drifting_environments_run():
    env = factorial_environment(
        levels=(2, 3), n_segments=2, customers=60_000, periods=4, seed=3, delay_mean=1.0, window=2, drift_sd=0.1
    )
    res = simulate(env, default_policies(env, AllocationConfig(n_draws=500)), periods=4, seed=0)
    assert res.regret["oracle"][-1] == 0
    assert all(np.isfinite(v).all() for v in res.regret.values())
