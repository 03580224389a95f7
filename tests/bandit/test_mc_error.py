"""The Monte Carlo error of P(best) is what the diagnostics state, for every model."""

import numpy as np
import pytest

from bandit import AllocationConfig, ArmStats, FactorDesign, allocate_segments


def _segments(seed=0, sends=400):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        n = np.full(12, float(sends))
        c = rng.binomial(n.astype(int), 0.05).astype(float)
        v = rng.binomial(c.astype(int), 0.2).astype(float)
        out.append(ArmStats(n, c, v, v * 40.0))
    return out


@pytest.mark.parametrize("model", ["independent", "hierarchical", "structured"])
@pytest.mark.parametrize("objective", ["conversion", "revenue"])
def test_p_best_spread_over_seeds_matches_the_stated_standard_error(model, objective):
    segments = _segments()
    design = FactorDesign.full_factorial(3, 4) if model == "structured" else None
    config = AllocationConfig(objective=objective, model=model, n_draws=2_000, burn_in_min_sends=0)
    runs = [allocate_segments(segments, config, seed=s, design=design, max_workers=1)[0] for s in range(40)]
    p = np.array([r.p_best for r in runs])
    stated = runs[0].diagnostics["mc_standard_error_bound"]
    assert stated == pytest.approx(0.5 / np.sqrt(2_000))
    # the binomial SE per arm, from the mean P(best); the observed spread over 40
    # seeds must match it (chi-square of 39 d.o.f.: within [0.6, 1.45] w.p. > 0.99)
    binomial = np.sqrt(p.mean(axis=0) * (1 - p.mean(axis=0)) / 2_000)
    busy = binomial > 0.003
    assert busy.sum() >= 2
    ratio = p.std(axis=0, ddof=1)[busy] / binomial[busy]
    assert ratio.min() > 0.6 and ratio.max() < 1.45
    assert (p.std(axis=0, ddof=1) <= stated * 1.45).all()
    assert all(r.diagnostics["mc_standard_error_max"] <= stated + 1e-12 for r in runs)


def test_weights_report_their_own_draws_and_error_bound():
    segments = _segments()
    default = allocate_segments(segments, AllocationConfig(n_draws=4_000, burn_in_min_sends=0), seed=0)[0]
    assert default.diagnostics["weight_draws"] == 2_000
    assert default.diagnostics["weight_mc_standard_error_bound"] == pytest.approx(0.5 / np.sqrt(2_000))
    plain = AllocationConfig(n_draws=4_000, burn_in_min_sends=0, sharpen=1.0, optimistic=False)
    result = allocate_segments(segments, plain, seed=0)[0]
    assert result.diagnostics["weight_draws"] == 4_000
    np.testing.assert_array_equal(result.weights, result.p_best)
