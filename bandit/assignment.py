"""Assigning customers to arms (or to the holdout) given the weights.

One uniform draw per customer and a binary search in the cumulative
probabilities: O(N log K) arithmetic, fully vectorised (for K <= a few hundred
the log K is a handful of comparisons), ~0.5 s for 12M customers.  Every
customer's propensity (the probability of the assignment actually drawn) is
returned so that off-policy evaluation / inverse-propensity weighting is
possible later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["HOLDOUT", "Assignment", "assign", "assignment_probabilities"]

HOLDOUT = -1  # arm index used for the control (holdout) group


@dataclass(frozen=True)
class Assignment:
    """arm: (N,) int, index of the arm or -1 (holdout); propensity: (N,) float."""

    arm: np.ndarray
    propensity: np.ndarray

    def counts(self, n_arms: int) -> tuple[int, np.ndarray]:
        """(holdout count, per-arm counts)."""
        c = np.bincount(self.arm + 1, minlength=n_arms + 1)
        return int(c[0]), c[1:]


def _check_weights(weights) -> np.ndarray:
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("weights: not a numeric array") from None
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights: expected a non-empty 1-D array, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights: contains NaN or infinite values")
    if (w < 0).any():
        raise ValueError(f"weights: negative at arms {np.flatnonzero(w < 0).tolist()}")
    if abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights: must sum to 1, sum to {w.sum()!r}")
    return w / w.sum()


def assignment_probabilities(weights, holdout_share: float) -> np.ndarray:
    """(K + 1,) probabilities: [holdout, arm 0, ..., arm K-1].

    The holdout share is fixed first; the arms share the rest in proportion to the
    weights, so reweighting the arms never changes the size of the control group.
    """
    w = _check_weights(weights)
    if not (isinstance(holdout_share, (int, float, np.floating)) and math.isfinite(holdout_share)):
        raise ValueError(f"holdout_share: must be a number in [0, 1), got {holdout_share!r}")
    if not 0.0 <= holdout_share < 1.0:
        raise ValueError(f"holdout_share: must be in [0, 1), got {holdout_share!r}")
    return np.concatenate(([float(holdout_share)], (1.0 - holdout_share) * w))


def assign(n: int, weights: np.ndarray, holdout_share: float, seed: int) -> Assignment:
    """Draw an arm (or the holdout, -1) independently for each of `n` customers.

    P(holdout) = holdout_share and P(arm i) = (1 - holdout_share) * weights[i]
    exactly (up to float rounding of the cumulative sum).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    probs = assignment_probabilities(weights, holdout_share)
    rng = np.random.default_rng(int(seed))
    cumulative = np.cumsum(probs)
    u = rng.random(int(n))
    # side="right": bucket j is chosen iff cum[j-1] <= u < cum[j], which is empty
    # (never chosen) when probs[j] == 0.  u can exceed cum[-1] only by rounding.
    bucket = np.searchsorted(cumulative, u, side="right")
    last_positive = int(np.flatnonzero(probs > 0)[-1])
    np.minimum(bucket, last_positive, out=bucket)
    arm = (bucket - 1).astype(np.int64)
    return Assignment(arm=arm, propensity=probs[bucket])
