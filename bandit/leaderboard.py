"""Posterior summaries for reporting: per-arm credible intervals, P(best), expected loss, and the
posterior of each factor level's average effect.

The posteriors are the allocation's own (the same model construction as `allocate_segments`:
independent funnel, hierarchical or structured), drawn *honestly* (no sharpening, no optimism),
so the leaderboard shows what the model believes, not the tuned weights. P(best) and expected loss
are taken over the arms a segment may receive (`eligible`), from the same joint draws.
Monte Carlo error of P(best) is at most 0.5 / sqrt(n_draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .allocation import AllocationConfig, IndependentModel, Model, resolve_model
from .stats import ArmStats
from .weights import expected_loss_from_draws, p_best_from_draws

__all__ = ["FactorLevelSummary", "SegmentSummary", "summarize_segments"]


@dataclass(frozen=True)
class FactorLevelSummary:
    """Posterior of the mean objective over a factor level's eligible arms (equal weight per arm:
    the level's effect averaged over the other factors), and P(this level is the factor's best)."""

    factor: int
    level: int
    n_arms: int
    mean: float
    ci_low: float
    ci_high: float
    p_best: float


@dataclass(frozen=True)
class SegmentSummary:
    """Per arm (all K arms; entries of ineligible arms are NaN): posterior mean, 95% credible
    interval, P(best) and expected loss among the eligible arms."""

    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_best: np.ndarray
    expected_loss: np.ndarray
    factor_levels: tuple[FactorLevelSummary, ...]
    model: str
    n_draws: int


def _models(segments: list[ArmStats], config: AllocationConfig, design) -> tuple[list, str]:
    kind = resolve_model(config.model, len(segments), design is not None)
    if kind is Model.STRUCTURED:
        from .structured import FactorDesign, structured_models

        if not isinstance(design, FactorDesign):
            raise ValueError("design: Model.STRUCTURED needs a FactorDesign (factor levels of every arm)")
        return structured_models(segments, design, config)[0], kind.value
    if kind is Model.HIERARCHICAL:
        from .hierarchical import hierarchical_models

        return hierarchical_models(segments, config)[0], kind.value
    return [IndependentModel(s, config) for s in segments], Model.INDEPENDENT.value


def _levels(draws: np.ndarray, eligible: np.ndarray, design) -> tuple[FactorLevelSummary, ...]:
    if design is None:
        return ()
    out = []
    for f, n_levels in enumerate(design.n_levels):
        level_draws, kept = [], []
        for level in range(n_levels):
            arms = np.flatnonzero((design.levels[:, f] == level) & eligible)
            if arms.size:
                level_draws.append(draws[:, arms].mean(axis=1, dtype=np.float64))
                kept.append((level, arms.size))
        if not kept:
            continue
        stacked = np.stack(level_draws, axis=1)
        p_best = p_best_from_draws(stacked)
        lo, hi = np.quantile(stacked, [0.025, 0.975], axis=0)
        for j, (level, n_arms) in enumerate(kept):
            out.append(FactorLevelSummary(f, level, n_arms, float(stacked[:, j].mean()), float(lo[j]), float(hi[j]),
                                          float(p_best[j])))
    return tuple(out)


def summarize_segments(
    stats_by_segment: Sequence[ArmStats],
    config: AllocationConfig = AllocationConfig(),
    seed: int = 0,
    *,
    design=None,
    eligible: Sequence[np.ndarray] | None = None,
) -> list[SegmentSummary]:
    """Posterior summary of every segment (the model pools across segments as allocation does).

    eligible: per segment, a (K,) bool mask of the arms it may receive (default: all).
    """
    segments = list(stats_by_segment)
    if not segments:
        raise ValueError("stats_by_segment: at least one segment is required")
    k = segments[0].n_arms
    if any(s.n_arms != k for s in segments):
        raise ValueError("stats_by_segment: every segment needs the same arms")
    masks = [np.ones(k, dtype=bool)] * len(segments) if eligible is None else [np.asarray(m, bool) for m in eligible]
    if len(masks) != len(segments) or any(m.shape != (k,) for m in masks):
        raise ValueError(f"eligible: expected {len(segments)} masks of {k} arms")
    models, name = _models(segments, config, design)
    out = []
    for i, (model, mask) in enumerate(zip(models, masks, strict=True)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        nan = np.full(k, np.nan)
        if not mask.any():
            out.append(SegmentSummary(nan, nan, nan, nan, nan, (), name, int(config.n_draws)))
            continue
        draws = np.asarray(model.draw(rng, int(config.n_draws), 1.0))
        cols = np.flatnonzero(mask)
        sub = draws[:, cols]
        mean, lo, hi, pb, loss = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
        mean[cols] = np.asarray(model.mean(1.0), dtype=np.float64)[cols]
        lo[cols], hi[cols] = np.quantile(sub, [0.025, 0.975], axis=0)
        pb[cols] = p_best_from_draws(sub)
        loss[cols] = expected_loss_from_draws(sub)
        out.append(SegmentSummary(mean, lo, hi, pb, loss, _levels(draws, mask, design), name, int(config.n_draws)))
    return out
