import numpy as np
import pytest

from bandit import HOLDOUT, assign, assignment_probabilities


def test_holdout_and_arm_shares_exact_in_expectation():
    weights = np.array([0.5, 0.3, 0.2, 0.0])
    n = 400_000
    result = assign(n, weights, holdout_share=0.1, seed=7)
    holdout, counts = result.counts(4)
    expected = np.r_[0.1, 0.9 * weights]
    observed = np.r_[holdout, counts] / n
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(observed - expected) <= 5 * se + 1e-12)
    assert counts[3] == 0  # zero-weight arms are never drawn


def test_propensity_is_probability_of_drawn_assignment():
    weights = np.array([0.6, 0.4])
    result = assign(1000, weights, holdout_share=0.2, seed=1)
    probs = assignment_probabilities(weights, 0.2)
    np.testing.assert_allclose(result.propensity, probs[result.arm + 1])
    assert set(np.unique(result.arm)) <= {HOLDOUT, 0, 1}
    assert result.arm.dtype.kind == "i"


def test_deterministic_under_seed():
    w = np.full(10, 0.1)
    a = assign(5000, w, 0.05, seed=3)
    b = assign(5000, w, 0.05, seed=3)
    np.testing.assert_array_equal(a.arm, b.arm)
    assert not np.array_equal(a.arm, assign(5000, w, 0.05, seed=4).arm)


def test_holdout_fixed_while_arms_reweighted():
    p1 = assignment_probabilities([0.9, 0.1], 0.15)
    p2 = assignment_probabilities([0.1, 0.9], 0.15)
    assert p1[0] == p2[0] == 0.15
    assert p1.sum() == pytest.approx(1.0) and p2.sum() == pytest.approx(1.0)


def test_zero_customers_and_no_holdout():
    empty = assign(0, [1.0], 0.0, seed=0)
    assert empty.arm.shape == (0,)
    full = assign(100, [0.0, 1.0], 0.0, seed=0)
    assert np.all(full.arm == 1) and np.all(full.propensity == 1.0)
