"""The report's inference, tested like code: a property of the relative interval over many seeded
cases, and simulated coverage of the fixed-horizon, anytime-valid and CUPED intervals.

Coverage acceptance, as in tests/campaigns/test_report_coverage.py: with R replications a correct
95% interval covers at least the count below which Binomial(R, 0.95) falls with probability
ALPHA; fixed seeds, so every run sees the same draws."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from bandit.inference import Z95, Moments, confidence_sequence, cuped, fieller

ALPHA = 1e-4


def coverage_floor(reps: int, level: float = 0.95, alpha: float = ALPHA) -> int:
    k = 0
    while sps.binom.cdf(k, reps, level) <= alpha:
        k += 1
    return k


# ---------------------------------------------------------------------------
# Fieller: relative and absolute intervals agree
# ---------------------------------------------------------------------------


def _cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        c = rng.choice([rng.uniform(0.001, 0.2), rng.uniform(0, 50), rng.uniform(-1, 1)])
        b = c + rng.normal(0, 1) * rng.choice([0.001, 0.01, 0.1, 5.0])
        yield float(b), float(rng.uniform(0, 0.01) ** 2 * rng.choice([1, 100])), float(c), \
            float(rng.uniform(0, 0.01) ** 2 * rng.choice([1, 100, 10_000]))


def test_relative_interval_excludes_zero_exactly_when_the_absolute_one_does():
    bounded = unbounded = significant = 0
    for b, var_b, c, var_c in _cases(20_000, seed=16):
        se = math.sqrt(var_b + var_c)
        absolute_excludes_zero = abs(b - c) > Z95 * se
        rel = fieller(b, var_b, c, var_c)
        if c * c <= Z95 * Z95 * var_c:
            assert rel is None  # the control is not told apart from 0: the ratio is unbounded
            unbounded += 1
            continue
        assert rel is not None
        lo, hi = rel
        assert lo <= hi
        if c > 0 or c < 0:
            # the point estimate lies inside whenever the interval is bounded
            assert lo - 1e-9 <= b / c - 1 <= hi + 1e-9
        if abs(abs(b - c) - Z95 * se) < 1e-9 * max(1.0, se):
            continue  # on the boundary itself either answer is right
        assert absolute_excludes_zero == (not (lo <= 0 <= hi)), (b, var_b, c, var_c, rel)
        bounded += 1
        significant += absolute_excludes_zero
    # the cases exercised both outcomes and both branches
    assert bounded > 5_000 and unbounded > 500 and 0.1 < significant / bounded < 0.9


def test_fieller_without_noise_is_the_point_ratio():
    assert fieller(0.12, 0.0, 0.10, 0.0) == pytest.approx((0.2, 0.2))


def test_fieller_is_asymmetric_with_a_small_control():
    # the case from the field: b = 0.0534, c = 0.0278 with a small control group
    lo, hi = fieller(0.0534, 0.0534 * 0.9466 / 8000, 0.0278, 0.0278 * 0.9722 / 900)
    assert lo > 0  # absolute lift is significant: +0.0256, se ~ 0.0058
    assert hi - (0.0534 / 0.0278 - 1) > (0.0534 / 0.0278 - 1) - lo  # longer upwards, as a ratio is


# ---------------------------------------------------------------------------
# anytime-valid confidence sequence: coverage at every one of 10 looks
# ---------------------------------------------------------------------------

LOOKS = 10
PER_LOOK = 2_000  # sends per period, holdout share 10%
HOLDOUT = 0.1


def _repeated_looks(reps: int, seed: int, tuning_n: float) -> tuple[np.ndarray, np.ndarray]:
    """Per replication: did the fixed-horizon and the anytime interval cover the true lift at every
    one of the 10 looks? Bernoulli conversions, control 3%, bandit 3.4%."""
    rng = np.random.default_rng(seed)
    p_c, p_b = 0.03, 0.034
    n_c = rng.binomial(PER_LOOK, HOLDOUT, size=(reps, LOOKS))
    n_b = PER_LOOK - n_c
    x_c = rng.binomial(n_c, p_c).cumsum(axis=1)
    x_b = rng.binomial(n_b, p_b).cumsum(axis=1)
    n_c, n_b = n_c.cumsum(axis=1), n_b.cumsum(axis=1)
    fixed_ok = np.ones(reps, dtype=bool)
    seq_ok = np.ones(reps, dtype=bool)
    truth = p_b - p_c
    for r in range(reps):
        for t in range(LOOKS):
            mc, mb = x_c[r, t] / n_c[r, t], x_b[r, t] / n_b[r, t]
            se = math.sqrt(mc * (1 - mc) / n_c[r, t] + mb * (1 - mb) / n_b[r, t])
            d = mb - mc
            fixed_ok[r] &= abs(d - truth) <= Z95 * se
            lo, hi = confidence_sequence(d, se, n_c[r, t] + n_b[r, t], tuning_n)
            seq_ok[r] &= lo <= truth <= hi
    return fixed_ok, seq_ok


def test_confidence_sequence_covers_at_every_look_and_the_fixed_interval_does_not():
    reps = 2_000
    fixed_ok, seq_ok = _repeated_looks(reps, seed=2021, tuning_n=LOOKS * PER_LOOK)
    assert seq_ok.sum() >= coverage_floor(reps)
    # 10 looks at a fixed-horizon 95% interval: simultaneous coverage far below 95% (about 80%)
    assert fixed_ok.sum() < coverage_floor(reps)


def test_confidence_sequence_is_wider_than_the_fixed_interval_and_shrinks():
    widths = [confidence_sequence(0.0, 0.01 / math.sqrt(n), n, 20_000) for n in (1_000, 10_000, 100_000)]
    halves = [(hi - lo) / 2 for lo, hi in widths]
    fixed = [Z95 * 0.01 / math.sqrt(n) for n in (1_000, 10_000, 100_000)]
    assert all(h > f for h, f in zip(halves, fixed, strict=True))
    assert halves[0] > halves[1] > halves[2]
    assert confidence_sequence(0.0, math.nan, 10, 100) is None


# ---------------------------------------------------------------------------
# CUPED: coverage, the variance it removes, and its fallback
# ---------------------------------------------------------------------------


def _moments(y: np.ndarray, x: np.ndarray) -> Moments:
    return Moments(n=float(len(y)), sy=float(y.sum()), syy=float(y @ y), sx=x.sum(axis=0), sxx=x.T @ x, sxy=x.T @ y)


def _spend_population(rng, n):
    """Pre-campaign spend and order count, and campaign-period revenue that depends on them."""
    orders = rng.poisson(2.0, n).astype(float)
    spend = orders * rng.gamma(2.0, 15.0, n)
    revenue = 0.4 * spend / 4 + rng.gamma(1.0, 6.0, n) * (rng.random(n) < 0.3)
    return np.column_stack([spend, orders]), revenue


def test_cuped_interval_covers_and_reduces_variance():
    rng = np.random.default_rng(1305)
    reps, n_c, n_t, lift = 600, 400, 3_600, 1.5
    cover = 0
    reductions = []
    for _ in range(reps):
        x_c, y_c = _spend_population(rng, n_c)
        x_t, y_t = _spend_population(rng, n_t)
        y_t = y_t + lift * (rng.random(n_t) < 0.5) * 2  # mean effect = lift
        res = cuped(_moments(y_c, x_c), _moments(y_t, x_t))
        lo, hi = res.ci()
        cover += lo <= lift <= hi
        reductions.append(res.variance_reduction)
        assert res.reason is None and res.used == [0, 1]
    assert cover >= coverage_floor(reps)
    assert cover <= reps - 5  # not trivially wide
    assert np.mean(reductions) > 0.3  # pre-campaign spend explains much of campaign revenue


def test_cuped_falls_back_without_history():
    rng = np.random.default_rng(3)
    y_c, y_t = rng.random(300), rng.random(900)
    zeros_c, zeros_t = np.zeros((300, 2)), np.zeros((900, 2))
    res = cuped(_moments(y_c, zeros_c), _moments(y_t, zeros_t))
    assert res.reason is not None and res.used == [] and res.variance_reduction == 0.0
    assert res.difference == pytest.approx(y_t.mean() - y_c.mean())
    assert res.se == pytest.approx(res.raw_se)


def test_cuped_with_one_informative_covariate_uses_only_it():
    rng = np.random.default_rng(4)
    x_c = np.column_stack([rng.gamma(2, 10, 500), np.zeros(500)])
    x_t = np.column_stack([rng.gamma(2, 10, 500), np.zeros(500)])
    y_c, y_t = 0.5 * x_c[:, 0] + rng.normal(0, 1, 500), 0.5 * x_t[:, 0] + rng.normal(0, 1, 500) + 1
    res = cuped(_moments(y_c, x_c), _moments(y_t, x_t))
    assert res.used == [0] and res.theta[0] == pytest.approx(0.5, abs=0.02)
    assert res.variance_reduction > 0.9
