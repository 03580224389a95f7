"""Hierarchical (empirical-Bayes) prior: pool each variant's results across segments.

For variant i in segment s, each funnel stage's rate gets the prior

    rate[s, i] ~ Beta(kappa * m[s, i], kappa * (1 - m[s, i])),
    m[s, i]   = (variant i's rate in the OTHER segments) x (segment s's lift),

where the segment lift is segment s's overall rate divided by the campaign's,
and kappa (the prior's weight in pseudo-trials) is estimated by the method of
moments from how much the cells actually disagree with their prior means
(beta-binomial: Var(x) = m(1-m) [1/n + (1 - 1/n)/(kappa + 1)]).  Leaving the
cell's own data out of its prior mean avoids counting it twice.  When segments
agree, kappa is large and a variant learns from all 8 segments at once; when
they disagree, kappa shrinks and each cell stands on its own data.
"""

from __future__ import annotations

import numpy as np

from .stats import ArmStats, Objective

__all__ = ["empirical_bayes_prior", "hierarchical_models"]

KAPPA_MIN = 2.0  # at least as weak as a uniform prior
KAPPA_MAX = 1e5  # never treat the pooled mean as more certain than 100k trials


def empirical_bayes_prior(successes: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-cell Beta prior (a, b) and kappa for a (segments x arms) table of counts."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    n_seg = successes.shape[0]
    # leave-one-segment-out variant rate (with a Beta(1,1) guard)
    var_s, var_n = successes.sum(axis=0), trials.sum(axis=0)
    loo_rate = (var_s[None, :] - successes + 1.0) / (var_n[None, :] - trials + 2.0)
    overall = (successes.sum() + 1.0) / (trials.sum() + 2.0)
    seg_rate = (successes.sum(axis=1) + 1.0) / (trials.sum(axis=1) + 2.0)
    m = np.clip(loo_rate * (seg_rate / overall)[:, None], 1e-6, 1 - 1e-6)

    # method-of-moments estimate of 1 / (kappa + 1), weighted by trials
    has = trials > 0
    if n_seg < 2 or has.sum() < 2:
        kappa = KAPPA_MIN
    else:
        x = np.where(has, successes / np.maximum(trials, 1.0), 0.0)
        mv = m * (1.0 - m)
        excess = (x - m) ** 2 - mv / np.maximum(trials, 1.0)
        denom = mv * (1.0 - 1.0 / np.maximum(trials, 1.0))
        w = np.where(has, trials, 0.0)
        ratio = float((w * excess).sum() / max((w * denom).sum(), 1e-300))
        kappa = float(np.clip(1.0 / max(ratio, 1.0 / (KAPPA_MAX + 1.0)) - 1.0, KAPPA_MIN, KAPPA_MAX))
    return kappa * m, kappa * (1.0 - m), kappa


def hierarchical_models(segments: list[ArmStats], config) -> tuple[list, dict]:
    from .allocation import IndependentModel

    if len(segments) < 2:
        models = [IndependentModel(s, config) for s in segments]
        return models, {"hierarchical_note": "one segment: nothing to pool, independent Beta priors used"}
    sends = np.stack([s.sends for s in segments])
    clicks = np.stack([s.clicks for s in segments])
    conversions = np.stack([s.conversions for s in segments])
    pend_c = np.stack([s.pending_clicks for s in segments])
    pend_v = np.stack([s.pending_conversions for s in segments])
    consistent = all(s.funnel_consistent for s in segments)
    objective = config.objective
    if objective is Objective.CLICK or consistent:
        ca, cb, kappa_click = empirical_bayes_prior(clicks, np.maximum(sends - pend_c, clicks))
    else:
        ca, cb, kappa_click = empirical_bayes_prior(conversions, np.maximum(sends - pend_c - pend_v, conversions))
    va = vb = None
    kappa_conv = None
    if objective is not Objective.CLICK and consistent:
        va, vb, kappa_conv = empirical_bayes_prior(conversions, np.maximum(clicks - pend_v, conversions))
    models = []
    for s, stats in enumerate(segments):
        if va is not None:
            model = IndependentModel(stats, config, click_prior=(ca[s], cb[s]), conv_prior=(va[s], vb[s]))
        elif objective is Objective.CLICK:
            model = IndependentModel(stats, config, click_prior=(ca[s], cb[s]))
        else:
            # inconsistent funnel: the first stage *is* conversion per send
            model = IndependentModel(stats, config, conv_prior=(ca[s], cb[s]))
        model.name = "hierarchical"
        models.append(model)
    extra = {"kappa_click": float(kappa_click)}
    if kappa_conv is not None:
        extra["kappa_conversion"] = float(kappa_conv)
    return models, extra
