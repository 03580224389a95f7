"""Inference for the lift report: intervals that agree with each other, stay valid when read every
period, and use what is known about customers before the campaign. Pure functions of sufficient
statistics (no data rows): the report aggregates in SQL and calls these.

* `fieller`: the interval of a ratio b / c of two independent estimates. It is the set of ratios r
  the difference test does not reject, (b - r c)^2 <= z^2 (var_b + r^2 var_c); at r = 1 that is the
  absolute-lift test itself, so the relative interval excludes 0 exactly when the absolute one does.
* `confidence_sequence`: the normal-mixture confidence sequence of Howard, Ramdas, McAuliffe and
  Sekhon (2021), in the form GrowthBook uses for sequential testing: a half-width that holds
  simultaneously at every look, so reading the report after each period and stopping at the first
  "significant" one keeps the error rate at alpha.
* `cuped`: regression adjustment (CUPED, Deng et al. 2013; Lin 2013) of a two-group mean difference
  on pre-period covariates, with one pooled coefficient vector; falls back to the raw difference
  when the covariates carry no information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Z95", "fieller", "mixture_rho2", "confidence_sequence", "Moments", "CupedResult", "cuped"]

Z95 = 1.959963984540054


def fieller(b: float, var_b: float, c: float, var_c: float, z: float = Z95) -> tuple[float, float] | None:
    """Interval of b / c - 1 from independent estimates b and c with variances var_b and var_c.

    None when the interval is unbounded: c is not distinguishable from 0 at level z (c^2 <= z^2 var_c),
    so the data cannot bound the ratio (the honest answer, where the delta method would print a
    finite, misleading interval)."""
    vals = (b, var_b, c, var_c)
    if any(v is None or math.isnan(v) for v in vals) or var_b < 0 or var_c < 0:
        return None
    a = c * c - z * z * var_c
    if a <= 0:
        return None
    disc = z * z * (var_c * b * b + var_b * c * c - z * z * var_b * var_c)
    root = math.sqrt(max(disc, 0.0))
    return (b * c - root) / a - 1.0, (b * c + root) / a - 1.0


def mixture_rho2(tuning_n: float, alpha: float = 0.05) -> float:
    """The mixing variance (per unit of the standardized sum) that makes the sequence tightest at
    `tuning_n` observations (Howard et al. 2021, eq. 3.13's approximation)."""
    log_term = -2.0 * math.log(alpha)
    return (log_term + math.log(log_term + 1.0)) / tuning_n


def confidence_sequence(estimate: float, se: float, n: float, tuning_n: float,
                        alpha: float = 0.05) -> tuple[float, float] | None:
    """Anytime-valid (1 - alpha) interval for a mean difference after n observations in all.

    With sigma^2 = n se^2 the per-observation variance, the two-sided normal-mixture boundary gives
    the half-width sqrt(se^2 (n rho^2 + 1) / (n rho^2) * (log(n rho^2 + 1) - 2 log alpha)). It is
    wider than the fixed-horizon interval (about 1.6x at the tuning size) and the price buys validity
    at every look."""
    if n <= 0 or se is None or math.isnan(se) or math.isnan(estimate):
        return None
    nr = n * mixture_rho2(tuning_n, alpha)
    half = math.sqrt(se * se * (nr + 1.0) / nr * (math.log(nr + 1.0) - 2.0 * math.log(alpha)))
    return estimate - half, estimate + half


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one group for regression adjustment: count, sums of the outcome y
    and of its square, sums of the covariates x (length p), of x x' (p x p) and of x y."""

    n: float
    sy: float
    syy: float
    sx: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray

    def mean_var(self) -> tuple[float, float]:
        """Mean of y and the variance of that mean."""
        if self.n < 2:
            return math.nan, math.nan
        m = self.sy / self.n
        return m, max(self.syy / self.n - m * m, 0.0) * self.n / (self.n - 1) / self.n


@dataclass(frozen=True)
class CupedResult:
    difference: float  # adjusted treated - control
    se: float
    raw_difference: float
    raw_se: float
    variance_reduction: float  # 1 - se^2 / raw_se^2
    theta: list[float]  # pooled coefficients, one per covariate used
    used: list[int]  # which covariates entered (the others had no variance)
    reason: str | None  # why nothing was adjusted, when so

    def ci(self, z: float = Z95) -> tuple[float, float]:
        return self.difference - z * self.se, self.difference + z * self.se


def _centered(g: Moments):
    """Within-group centered cross products: Sxx, Sxy, Syy."""
    mx = g.sx / g.n
    my = g.sy / g.n
    return g.sxx - g.n * np.outer(mx, mx), g.sxy - g.n * mx * my, g.syy - g.n * my * my


def cuped(control: Moments, treated: Moments) -> CupedResult:
    """Adjusted difference of means treated - control: y - theta'(x - mean x) per group, theta the
    pooled within-group regression of y on x. Randomization makes the x means equal in expectation,
    so the adjustment removes noise, not effect; the variance of each adjusted mean is the residual
    variance over n (theta's own noise is O(1/n^2) and ignored, as CUPED does)."""
    mc, vc = control.mean_var()
    mt, vt = treated.mean_var()
    raw, raw_se = mt - mc, math.sqrt(vt + vc) if not math.isnan(vt + vc) else math.nan

    def fallback(reason: str) -> CupedResult:
        return CupedResult(raw, raw_se, raw, raw_se, 0.0, [], [], reason)

    if math.isnan(raw_se) or raw_se == 0:
        return fallback("too few sends to estimate a variance")
    sxx_c, sxy_c, syy_c = _centered(control)
    sxx_t, sxy_t, syy_t = _centered(treated)
    sxx, sxy = sxx_c + sxx_t, sxy_c + sxy_t
    scale = np.sqrt(np.maximum(np.diag(sxx), 0.0))
    used = [j for j in range(len(scale)) if scale[j] > 1e-9 * max(1.0, float(np.abs(sxx).max()))]
    if not used:
        return fallback("no pre-campaign history (every customer has the same covariates)")
    idx = np.array(used)
    a = sxx[np.ix_(idx, idx)]
    if np.linalg.cond(a) > 1e12:
        return fallback("pre-campaign covariates are collinear")
    theta = np.linalg.solve(a, sxy[idx])
    # residual sums of squares within each group
    res_c = syy_c - 2 * theta @ sxy_c[idx] + theta @ sxx_c[np.ix_(idx, idx)] @ theta
    res_t = syy_t - 2 * theta @ sxy_t[idx] + theta @ sxx_t[np.ix_(idx, idx)] @ theta
    xbar_c, xbar_t = control.sx[idx] / control.n, treated.sx[idx] / treated.n
    diff = raw - float(theta @ (xbar_t - xbar_c))
    var = max(res_t, 0.0) / (treated.n - 1) / treated.n + max(res_c, 0.0) / (control.n - 1) / control.n
    se = math.sqrt(var)
    return CupedResult(diff, se, raw, raw_se, 1.0 - var / raw_se**2, [float(t) for t in theta], used, None)

