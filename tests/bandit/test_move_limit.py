"""max_move: a segment's weights move at most max_move (total variation) per period."""

import numpy as np
import pytest

from bandit import AllocationConfig, ArmStats, Model, allocate, allocate_segments
from bandit.weights import apply_cap, apply_floor, limit_move


def tv(a, b):
    return 0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum()


@pytest.mark.parametrize("seed", range(20))
def test_limit_move_invariants_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 50))
    floor, cap = 0.1, 0.8
    target = apply_cap(apply_floor(rng.dirichlet(np.full(k, 0.2)), floor), cap)
    previous = apply_cap(apply_floor(rng.dirichlet(np.full(k, 0.2)), floor), cap)
    max_move = float(rng.uniform(0.01, 1.0))
    w = limit_move(target, previous, max_move)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= floor / k - 1e-12).all()  # a floor both vectors meet holds
    assert (w <= max(cap, 1.0 / k) + 1e-12).all()  # so does a cap
    assert tv(w, previous) <= max_move + 1e-9
    # it moves as far as allowed, in the target's direction
    assert tv(w, previous) == pytest.approx(min(max_move, tv(target, previous)))
    assert tv(w, target) <= tv(previous, target) + 1e-12


def test_no_previous_or_no_limit_returns_the_target():
    target = np.array([0.7, 0.2, 0.1])
    assert limit_move(target, None, 0.2) is target
    assert np.array_equal(limit_move(target, np.full(3, 1 / 3), 1.0), target)


def test_allocation_moves_at_most_max_move_from_previous_weights():
    stats = ArmStats(
        sends=[5000, 5000, 5000], clicks=[100, 150, 300], conversions=[10, 15, 40], revenue=[0.0, 0.0, 0.0]
    )
    previous = np.full(3, 1 / 3)
    free = allocate(stats, AllocationConfig(max_move=1.0), seed=1, previous_weights=previous)
    limited = allocate(stats, AllocationConfig(max_move=0.2), seed=1, previous_weights=previous)
    assert tv(free.weights, previous) > 0.5  # the posterior alone would move far
    assert tv(limited.weights, previous) <= 0.2 + 1e-9
    assert limited.weights.sum() == pytest.approx(1.0)
    assert limited.weights.argmax() == 2
    assert np.array_equal(limited.p_best, free.p_best)  # the honest P(best) is untouched
    assert limited.diagnostics["max_move"] == 0.2


@pytest.mark.parametrize("model", [Model.INDEPENDENT, Model.HIERARCHICAL])
def test_segments_each_move_from_their_own_previous_weights(model):
    rng = np.random.default_rng(3)
    segs = [
        ArmStats(sends=[2000] * 4, clicks=rng.integers(20, 200, 4), conversions=[5, 6, 7, 30], revenue=[0.0] * 4)
        for _ in range(3)
    ]
    previous = rng.dirichlet(np.ones(4), size=3)
    out = allocate_segments(segs, AllocationConfig(model=model, max_move=0.1), seed=2, previous_weights=previous)
    for a, p in zip(out, previous, strict=True):
        assert tv(a.weights, p) <= 0.1 + 1e-9
        assert a.weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_max_move_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"^max_move:"):
        AllocationConfig(max_move=bad)
    with pytest.raises(ValueError, match=r"^max_move:"):
        limit_move(np.array([0.5, 0.5]), np.array([0.5, 0.5]), bad)


@pytest.mark.parametrize(
    "previous",
    [
        [[0.5, 0.5]],  # wrong number of arms
        [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]],  # wrong number of segments
        [[np.nan, 0.5, 0.5]],
        [[-0.1, 0.6, 0.5]],
        [[0.0, 0.0, 0.0]],
        [["a", "b", "c"]],
    ],
)
def test_bad_previous_weights_name_the_argument(previous):
    stats = ArmStats(sends=[100, 100, 100], clicks=[5, 6, 7], conversions=[1, 1, 2], revenue=[0.0] * 3)
    with pytest.raises(ValueError, match=r"^previous_weights:"):
        allocate_segments([stats], AllocationConfig(max_move=0.5), seed=0, previous_weights=previous)
