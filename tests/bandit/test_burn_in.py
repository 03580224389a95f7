"""Per-arm burn-in: invariants of weights.burn_in_weights and the allocation around it."""

import numpy as np
import pytest

from bandit import AllocationConfig, ArmStats, allocate
from bandit.weights import burn_in_weights


@pytest.mark.parametrize("seed", range(20))
def test_burn_in_weights_invariants_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 30))
    base = rng.dirichlet(np.full(k, 0.3))
    short = rng.random(k) < 0.3
    w = burn_in_weights(base, short)
    assert np.isfinite(w).all() and (w >= 0).all()
    assert w.sum() == pytest.approx(1.0)
    if short.all():
        np.testing.assert_allclose(w, 1 / k)
        return
    # every short arm gets at least its equal share, and never less than its Thompson weight
    assert (w[short] >= 1 / k - 1e-12).all()
    rest = ~short
    if w[rest].sum() > 0:
        # arms past the burn-in keep their Thompson proportions and only give weight up
        np.testing.assert_allclose(w[rest] / w[rest].sum(), base[rest] / base[rest].sum(), rtol=1e-9)
        assert (w[rest] <= base[rest] + 1e-12).all()
        assert (w[short] >= base[short] - 1e-12).all()


def test_no_short_arm_leaves_thompson_weights_untouched():
    base = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(burn_in_weights(base, np.zeros(3, bool)), base)


def test_new_arm_in_a_learnt_segment_does_not_reset_the_segment():
    """The case that used to cost 3x regret: one new variant among well-measured ones."""
    sends = np.array([5000.0, 5000, 5000, 5000, 0])
    clicks = np.array([4500.0, 2500, 2400, 2600, 0])
    stats = ArmStats(sends, clicks, np.zeros(5), np.zeros(5))
    plain = AllocationConfig(objective="click", burn_in_min_sends=10, sharpen=1.0, optimistic=False)
    result = allocate(stats, plain, seed=3)
    assert result.stage == "thompson"
    # plain Thompson gives the new arm P(U > 0.9) = 0.1; the burn-in lifts it to 1/K
    assert result.weights[4] == pytest.approx(0.2)
    assert result.weights[0] == pytest.approx(0.8, abs=0.01)  # the leader keeps the rest
    assert result.weights[1:4].max() < 0.01
    assert result.diagnostics["arms_below_burn_in"] == [4]


@pytest.mark.parametrize("model", ["independent", "hierarchical", "structured"])
def test_burn_in_is_per_arm_for_every_model(model):
    from bandit import FactorDesign, allocate_segments

    rng = np.random.default_rng(0)
    design = FactorDesign.full_factorial(2, 2) if model == "structured" else None
    segments = []
    for _ in range(2):
        sends = np.array([4000.0, 4000, 4000, 3])
        clicks = rng.binomial(sends.astype(int), [0.1, 0.05, 0.05, 0.05]).astype(float)
        segments.append(ArmStats(sends, clicks, np.zeros(4), np.zeros(4)))
    config = AllocationConfig(objective="click", model=model, burn_in_min_sends=10)
    for result in allocate_segments(segments, config, seed=1, design=design):
        assert result.weights[3] >= 0.25 - 1e-12
        assert result.weights.sum() == pytest.approx(1.0)
        assert result.stage == "thompson"
