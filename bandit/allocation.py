"""Batch allocation: sufficient statistics + config in, weights + diagnostics out.

Pipeline for one segment (every step a small pure function):

1. posterior of the objective per arm (independent Beta funnel, hierarchical
   empirical-Bayes prior, or structured Bayesian logistic regression);
2. P(best) and expected loss from `n_draws` joint Monte Carlo draws of the honest
   posterior (arms that cannot be best -- upper 1e-6 tail below another arm's
   lower tail -- are skipped: their P(best) is < 4e-6, far below MC error);
3. allocation base = P(best) of the *tuned* posterior (sharpened / optimistic if
   configured), optionally turned into top-two sampling;
4. per-arm burn-in: an arm below `burn_in_min_sends` gets at least 1/K (see
   weights.burn_in_weights); equal weights only while every arm is below it;
5. additive floor (total exploration share spread evenly), then the cap.

"Too little data" is a stage with a reason, never an exception; bad input is a
ValueError naming the argument.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .posterior import FunnelPosterior, funnel_posterior
from .stats import ArmStats, Objective, combine_periods
from .weights import (
    apply_cap,
    apply_floor,
    burn_in_weights,
    expected_loss_from_draws,
    limit_move,
    p_best_from_draws,
    top_two_weights,
)

__all__ = [
    "Model",
    "AllocationConfig",
    "Allocation",
    "allocate",
    "allocate_segments",
    "allocate_periods",
]


class Model(str, enum.Enum):  # noqa: UP042 -- StrEnum would change str(member); keep the public API
    """Which posterior the campaign uses."""

    INDEPENDENT = "independent"  # one Beta funnel per arm, nothing shared
    HIERARCHICAL = "hierarchical"  # empirical-Bayes prior pooling a variant across segments
    STRUCTURED = "structured"  # Bayesian logistic regression over factor levels (+ segment interactions)
    AUTO = "auto"  # structured if a FactorDesign is given, else hierarchical if >1 segment, else independent


def resolve_model(model: Model, n_segments: int, has_design: bool) -> Model:
    """The default (AUTO) picks the model that won the email-campaign simulation
    (benchmarks/bench_email.py: structured > hierarchical > independent) among
    those the inputs allow."""
    if model is not Model.AUTO:
        return model
    if has_design:
        return Model.STRUCTURED
    return Model.HIERARCHICAL if n_segments > 1 else Model.INDEPENDENT


@dataclass(frozen=True)
class AllocationConfig:
    """How to turn a posterior into weights.  All fields have defaults.

    objective:  what "best" means (click / conversion per send / revenue per send).
    n_draws:    Monte Carlo draws for P(best); standard error <= 0.5/sqrt(n_draws) (0.005).
                The tuned weights use half as many (SE <= 0.007 at the default).
    floor:      TOTAL share of traffic spread evenly over the arms, so each arm gets
                >= floor / K.  Valid for any number of arms (see weights.apply_floor).
    cap:        maximum weight of one arm; must be >= 1/K for the arms given.
    burn_in_min_sends: per-arm burn-in: an arm with fewer sends gets at least 1/K of
                the traffic (max of its Thompson weight and 1/K), the others keep
                their Thompson weights; equal weights only while every arm is short.
    top_two:    None, or the leader probability beta of top-two Thompson sampling.
    sharpen:    evidence multiplier (>= 1 narrows the posterior used for the weights
                only; P(best) and expected loss are always from the honest posterior).
                Default 2 (with optimistic=True): lower regret than plain TS (sharpen=1,
                optimistic=False) at every feedback delay measured and in the email
                simulation -- see benchmarks/README.md (Chapelle-Li, email case).
    optimistic: use max(draw, posterior mean) for the weights (optimistic TS).
    discount:   per-period decay of old evidence used by `allocate_periods` (1 = none).
    model:      posterior model (see Model).
    value_shape, value_prior_weight: revenue posterior (see posterior.py).
    prior_sd, interaction_sd, residual_sd: prior std-devs (logit scale) of the
                structured model's main effects, segment x factor interactions and
                per-variant residuals.
    diagonal_posterior: structured model with a diagonal-Gaussian (mean-field)
                instead of a full Laplace covariance.
    prune_eps:  tail mass used to skip arms that cannot be best (0 disables).
    economics:  per-arm costs (bandit.profit.ArmEconomics); required by, and only
                allowed with, Objective.PROFIT.  Supported by the independent and
                hierarchical models; the structured model refuses it (ValueError).
    max_move:   largest total-variation move of a segment's weights from the
                previous period's weights (given as previous_weights), in (0, 1];
                1 = no limit (weights.limit_move).
    """

    objective: Objective = Objective.CONVERSION
    n_draws: int = 10_000
    floor: float = 0.0  # measured: a floor costs regret in every benchmark (benchmarks/README.md)
    cap: float = 1.0
    burn_in_min_sends: int = 10
    top_two: float | None = None
    sharpen: float = 2.0
    optimistic: bool = True
    discount: float = 1.0
    model: Model = Model.AUTO
    value_shape: float = 1.0
    value_prior_weight: float = 1.0
    prior_sd: float = 1.5
    interaction_sd: float = 0.5
    residual_sd: float = 0.15
    diagonal_posterior: bool = False
    prune_eps: float = 1e-6
    economics: Any = None
    max_move: float = 1.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            raise ValueError(f"objective: unknown objective {self.objective!r}") from None
        try:
            object.__setattr__(self, "model", Model(self.model))
        except ValueError:
            raise ValueError(f"model: unknown model {self.model!r}") from None
        _require(
            isinstance(self.n_draws, (int, np.integer)) and self.n_draws >= 1,
            "n_draws",
            "an integer >= 1",
            self.n_draws,
        )
        _require(_finite(self.floor) and 0.0 <= self.floor <= 1.0, "floor", "a total share in [0, 1]", self.floor)
        _require(_finite(self.cap) and 0.0 < self.cap <= 1.0, "cap", "in (0, 1]", self.cap)
        _require(
            isinstance(self.burn_in_min_sends, (int, np.integer)) and self.burn_in_min_sends >= 0,
            "burn_in_min_sends",
            "an integer >= 0",
            self.burn_in_min_sends,
        )
        if self.top_two is not None:
            _require(_finite(self.top_two) and 0.0 < self.top_two < 1.0, "top_two", "None or in (0, 1)", self.top_two)
        _require(_finite(self.sharpen) and self.sharpen > 0, "sharpen", "a positive number", self.sharpen)
        _require(_finite(self.discount) and 0.0 < self.discount <= 1.0, "discount", "in (0, 1]", self.discount)
        _require(_finite(self.value_shape) and self.value_shape > 0, "value_shape", "positive", self.value_shape)
        _require(
            _finite(self.value_prior_weight) and self.value_prior_weight > 0,
            "value_prior_weight",
            "positive",
            self.value_prior_weight,
        )
        _require(_finite(self.prior_sd) and self.prior_sd > 0, "prior_sd", "positive", self.prior_sd)
        _require(
            _finite(self.interaction_sd) and self.interaction_sd > 0, "interaction_sd", "positive", self.interaction_sd
        )
        _require(_finite(self.residual_sd) and self.residual_sd > 0, "residual_sd", "positive", self.residual_sd)
        _require(_finite(self.prune_eps) and 0.0 <= self.prune_eps < 0.01, "prune_eps", "in [0, 0.01)", self.prune_eps)
        from .profit import ArmEconomics

        if self.objective is Objective.PROFIT:
            if not isinstance(self.economics, ArmEconomics):
                raise ValueError("economics: Objective.PROFIT needs an ArmEconomics (margin and per-arm costs)")
        elif self.economics is not None:
            raise ValueError(f"economics: only used by the profit objective, not {self.objective.value!r}")
        _require(_finite(self.max_move) and 0.0 < self.max_move <= 1.0, "max_move", "in (0, 1]", self.max_move)

    def check_arms(self, n_arms: int) -> None:
        """Raise ValueError if the floor/cap cannot be met with `n_arms` arms."""
        if n_arms * self.cap < 1.0 - 1e-12:
            raise ValueError(
                f"cap: {self.cap} x {n_arms} arms < 1, the weights cannot sum to 1 (need cap >= {1.0 / n_arms:.6g})"
            )
        if self.economics is not None:
            self.economics.check_arms(n_arms)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _require(ok: bool, name: str, what: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {what}, got {value!r}")


@dataclass(frozen=True)
class Allocation:
    """Result of `allocate` for one segment.

    weights:       (K,) traffic shares, sum to 1, floor/cap hold.
    p_best:        (K,) posterior probability each arm is best (honest posterior).
    seed:          the seed used (re-running with it reproduces the result).
    stage:         "burn_in" | "thompson" | "top_two" | "single_arm".
    reason:        human-readable explanation when the engine could not (yet) learn.
    diagnostics:   JSON-serialisable details (posterior means, MC error, ...).
    expected_loss: (K,) E[max_j theta_j - theta_i], in objective units per send.
    posterior_mean:(K,) posterior mean of the objective per send.
    """

    weights: np.ndarray
    p_best: np.ndarray
    seed: int
    stage: str
    reason: str | None
    diagnostics: dict
    expected_loss: np.ndarray | None = field(default=None)
    posterior_mean: np.ndarray | None = field(default=None)


class PosteriorModel(Protocol):
    """What the allocation pipeline needs from a posterior over K arms."""

    def mean(self, sharpen: float = 1.0) -> np.ndarray: ...

    def draw(self, rng: np.random.Generator, n_draws: int, sharpen: float = 1.0) -> np.ndarray: ...

    def contenders(self, eps: float) -> np.ndarray | None: ...


class IndependentModel:
    """Independent funnel posterior per arm, with optional per-arm Beta priors."""

    name = "independent"

    def __init__(
        self,
        stats: ArmStats,
        config: AllocationConfig,
        click_prior: tuple = (1.0, 1.0),
        conv_prior: tuple = (1.0, 1.0),
    ) -> None:
        self.stats = stats
        self.config = config
        self.click_prior = click_prior
        self.conv_prior = conv_prior
        self._cache: dict[float, FunnelPosterior] = {}

    def posterior(self, sharpen: float = 1.0) -> FunnelPosterior:
        if sharpen not in self._cache and self.config.objective is Objective.PROFIT:
            from .profit import profit_posterior

            self._cache[sharpen] = profit_posterior(
                self.stats,
                self.config.economics,
                sharpen=sharpen,
                click_prior=self.click_prior,
                conv_prior=self.conv_prior,
                value_k=self.config.value_shape,
                value_prior_weight=self.config.value_prior_weight,
            )
        if sharpen not in self._cache:
            self._cache[sharpen] = funnel_posterior(
                self.stats,
                self.config.objective,
                sharpen=sharpen,
                click_prior=self.click_prior,
                conv_prior=self.conv_prior,
                value_k=self.config.value_shape,
                value_prior_weight=self.config.value_prior_weight,
            )
        return self._cache[sharpen]

    def mean(self, sharpen: float = 1.0) -> np.ndarray:
        return self.posterior(sharpen).mean()

    def draw(self, rng: np.random.Generator, n_draws: int, sharpen: float = 1.0) -> np.ndarray:
        return self.posterior(sharpen).draw(rng, n_draws)

    def draw_subset(self, rng, n_draws, mask, sharpen=1.0) -> np.ndarray:
        return self.posterior(sharpen).subset(mask).draw(rng, n_draws)

    def contenders(self, eps: float, sharpen: float = 1.0) -> np.ndarray | None:
        if eps <= 0 or self.config.objective is Objective.PROFIT:
            return None  # profit can be negative: the product-of-quantiles bounds do not hold
        lo, hi = self.posterior(sharpen).quantile_bounds(eps)
        return hi >= lo.max()


# ---------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------


def _draws_over_contenders(model, rng, n_draws, eps, sharpen) -> tuple[np.ndarray, np.ndarray | None]:
    """Draws for the arms that can be best; the mask is None when all were drawn."""
    mask = model.contenders(eps, sharpen) if hasattr(model, "draw_subset") else None
    if mask is None or mask.all():
        return model.draw(rng, n_draws, sharpen), None
    return model.draw_subset(rng, n_draws, mask, sharpen), mask


def _scatter(values: np.ndarray, mask: np.ndarray | None, n_arms: int, fill: float = 0.0) -> np.ndarray:
    if mask is None:
        return np.asarray(values, dtype=np.float64)
    out = np.full(n_arms, fill, dtype=np.float64)
    out[mask] = values
    return out


def posterior_summary(model, n_arms: int, config: AllocationConfig, rng: np.random.Generator):
    """(p_best, expected_loss, mean, n_contenders) from the honest posterior."""
    draws, mask = _draws_over_contenders(model, rng, config.n_draws, config.prune_eps, 1.0)
    mean = np.asarray(model.mean(1.0), dtype=np.float64)
    p_best = _scatter(p_best_from_draws(draws), mask, n_arms)
    best = draws.max(axis=1).mean(dtype=np.float64)
    loss = np.maximum(best - mean, 0.0)
    if mask is None:
        loss = expected_loss_from_draws(draws)
    else:
        loss[mask] = expected_loss_from_draws(draws)
    n_contenders = n_arms if mask is None else int(mask.sum())
    return p_best, loss, mean, n_contenders


# The weights are a tuned P(best) (sharpened / optimistic) estimated from half as
# many draws as the honest P(best): its Monte Carlo error (<= 0.5/sqrt(5,000) =
# 0.007 at the default 10,000) is unbiased noise on the traffic shares, small
# beside the multinomial noise of the sends themselves, and the pass costs half.
# The honest P(best) and expected loss, which decisions and reports read, keep
# the full n_draws.
WEIGHT_DRAW_SHARE = 0.5


def weight_draws(config: AllocationConfig) -> int:
    return max(1, int(config.n_draws * WEIGHT_DRAW_SHARE))


def _allocation_base(model, p_best_honest, config: AllocationConfig, rng) -> np.ndarray:
    """P(best) under the tuned (sharpened/optimistic) posterior, then top-two."""
    if config.sharpen == 1.0 and not config.optimistic:
        base = p_best_honest
    else:
        n_arms = p_best_honest.shape[0]
        draws, mask = _draws_over_contenders(model, rng, weight_draws(config), config.prune_eps, config.sharpen)
        if config.optimistic:
            mean = np.asarray(model.mean(config.sharpen), dtype=np.float32)
            draws = np.maximum(draws, mean if mask is None else mean[mask])
        base = _scatter(p_best_from_draws(draws), mask, n_arms)
    if config.top_two is not None:
        base = top_two_weights(base, config.top_two)
    return base


def _finish(
    model,
    stats: ArmStats,
    config: AllocationConfig,
    seed: int,
    extra_diagnostics: dict | None = None,
    previous: np.ndarray | None = None,
) -> Allocation:
    try:
        return _finish_segment(model, stats, config, seed, extra_diagnostics, previous)
    finally:
        # Models that share one set of draws between the honest and the tuned
        # pass (structured) drop them here: 8 segments x 10,000 x 200 floats each.
        if hasattr(model, "release_draws"):
            model.release_draws()


def _finish_segment(
    model,
    stats: ArmStats,
    config: AllocationConfig,
    seed: int,
    extra_diagnostics: dict | None,
    previous: np.ndarray | None = None,
) -> Allocation:
    n_arms = stats.n_arms
    rng = np.random.default_rng(seed)
    diagnostics: dict = {
        "model": getattr(model, "name", "independent"),
        "objective": config.objective.value,
        "n_arms": n_arms,
        "n_draws": int(config.n_draws),
        "floor_total": float(config.floor),
        "floor_per_arm": float(config.floor / n_arms),
        "cap": float(config.cap),
    }
    if extra_diagnostics:
        diagnostics.update(extra_diagnostics)
    if n_arms == 1:
        one = np.ones(1)
        mean = np.asarray(model.mean(1.0), dtype=np.float64)
        diagnostics["posterior_mean"] = mean.tolist()
        reason = "only one arm: nothing to choose"
        return Allocation(one, one.copy(), seed, "single_arm", reason, diagnostics, np.zeros(1), mean)

    p_best, loss, mean, n_contenders = posterior_summary(model, n_arms, config, rng)
    diagnostics.update(
        {
            "posterior_mean": mean.tolist(),
            "expected_loss": loss.tolist(),
            "n_contenders": n_contenders,
            # Binomial standard error of the Monte Carlo P(best) estimate.
            "mc_standard_error_max": float(np.sqrt(p_best * (1 - p_best) / config.n_draws).max()),
            "mc_standard_error_bound": float(0.5 / math.sqrt(config.n_draws)),
        }
    )

    # Burn-in is per arm: an arm below the minimum gets a guaranteed share
    # (weights.burn_in_weights: max(Thompson weight, 1/K)) and the others keep
    # their Thompson weights.  A segment-wide reset to equal weights whenever one
    # arm is short (a new variant, a starved arm) cost 3x the regret of plain TS
    # in the Chapelle-Li benchmark; only a segment where every arm is short gets
    # equal weights.
    short = stats.sends < config.burn_in_min_sends
    if short.all():
        weights = np.full(n_arms, 1.0 / n_arms)
        reason = (
            f"burn-in: all {n_arms} arms have fewer than {config.burn_in_min_sends} sends "
            f"(fewest: {float(stats.sends.min()):g}); equal weights until each has enough data"
        )
        diagnostics["arms_below_burn_in"] = np.flatnonzero(short).tolist()
        return Allocation(weights, p_best, seed, "burn_in", reason, diagnostics, loss, mean)

    base = _allocation_base(model, p_best, config, rng)
    if previous is not None and config.max_move < 1.0:
        target = base
        base = limit_move(target, previous, config.max_move)
        diagnostics["max_move"] = float(config.max_move)
        diagnostics["move_target_tv"] = float(0.5 * np.abs(target - previous / previous.sum()).sum())
    reason = None
    if short.any():
        base = burn_in_weights(base, short)
        diagnostics["arms_below_burn_in"] = np.flatnonzero(short).tolist()
        reason = (
            f"burn-in: {int(short.sum())} of {n_arms} arms have fewer than {config.burn_in_min_sends} sends; "
            f"each gets at least 1/{n_arms} of the traffic, the others keep their Thompson weights"
        )
    weights = apply_cap(apply_floor(base, config.floor), config.cap)
    stage = "top_two" if config.top_two is not None else "thompson"
    diagnostics.update(
        {
            "sharpen": float(config.sharpen),
            # plain TS weights are the honest P(best) itself (n_draws draws)
            "weight_draws": int(config.n_draws) if config.sharpen == 1.0 and not config.optimistic
            else weight_draws(config),
            "optimistic": bool(config.optimistic),
            "top_two": None if config.top_two is None else float(config.top_two),
            "capped_arms": np.flatnonzero(weights >= config.cap - 1e-12).tolist() if config.cap < 1 else [],
        }
    )
    diagnostics["weight_mc_standard_error_bound"] = float(0.5 / math.sqrt(diagnostics["weight_draws"]))
    return Allocation(weights, p_best, seed, stage, reason, diagnostics, loss, mean)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


def allocate(
    stats: ArmStats,
    config: AllocationConfig = AllocationConfig(),
    seed: int = 0,
    previous_weights: Any = None,
    **model_inputs: Any,
) -> Allocation:
    """Weights for the next batch of one segment.

    previous_weights: the segment's weights of the previous period (or None);
      with config.max_move < 1 the new weights move at most max_move from them.

    model_inputs:
      design: FactorDesign -- required by Model.STRUCTURED (factor levels per arm).
    Model.HIERARCHICAL needs several segments: use `allocate_segments`; with one
    segment it falls back to independent arms (noted in diagnostics).
    """
    if not isinstance(stats, ArmStats):
        raise ValueError(f"stats: expected ArmStats, got {type(stats).__name__}")
    if not isinstance(config, AllocationConfig):
        raise ValueError(f"config: expected AllocationConfig, got {type(config).__name__}")
    seed = _check_seed(seed)
    unknown = set(model_inputs) - {"design"}
    if unknown:
        raise ValueError(f"model_inputs: unknown keyword(s) {sorted(unknown)}")
    config.check_arms(stats.n_arms)
    design = model_inputs.get("design")
    previous = None if previous_weights is None else [previous_weights]
    if resolve_model(config.model, 1, design is not None) is not Model.INDEPENDENT:
        return allocate_segments([stats], config, seed, design=design, previous_weights=previous)[0]
    prev = _check_previous(previous, 1, stats.n_arms)
    return _finish(IndependentModel(stats, config), stats, config, seed, None, prev[0])


def _check_previous(previous_weights: Any, n_segments: int, n_arms: int) -> list:
    """previous_weights as a list of (K,) float arrays (or Nones), checked."""
    if previous_weights is None:
        return [None] * n_segments
    rows = list(previous_weights)
    if len(rows) != n_segments:
        raise ValueError(f"previous_weights: {len(rows)} rows for {n_segments} segments")
    out = []
    for i, row in enumerate(rows):
        if row is None:
            out.append(None)
            continue
        try:
            w = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"previous_weights: row {i} is not numeric") from None
        if w.shape != (n_arms,):
            raise ValueError(f"previous_weights: row {i} has shape {w.shape}, expected ({n_arms},)")
        if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
            raise ValueError(f"previous_weights: row {i} must be finite, non-negative and not all zero")
        out.append(w)
    return out


def _segment_seed(seed: int, segment: int) -> int:
    # Independent, reproducible streams per segment.
    return int(np.random.SeedSequence([seed, segment]).generate_state(1)[0])


def allocate_segments(
    stats_by_segment: Sequence[ArmStats],
    config: AllocationConfig = AllocationConfig(),
    seed: int = 0,
    *,
    design: Any = None,
    max_workers: int | None = None,
    previous_weights: Any = None,
) -> list[Allocation]:
    """Weights for every segment of a campaign (same arms in each segment).

    Needed by the models that share strength across segments: the hierarchical
    prior pools each variant over segments, the structured model fits one
    regression with segment x factor interactions.  Segment s uses the seed
    derived from (seed, s), reported in its Allocation.  Segments are computed
    in `max_workers` threads (default: one per CPU).  previous_weights: one
    row per segment (the previous period's weights, or None), used by
    config.max_move.
    """
    if not isinstance(config, AllocationConfig):
        raise ValueError(f"config: expected AllocationConfig, got {type(config).__name__}")
    seed = _check_seed(seed)
    segments = list(stats_by_segment)
    if not segments:
        raise ValueError("stats_by_segment: at least one segment is required")
    for i, s in enumerate(segments):
        if not isinstance(s, ArmStats):
            raise ValueError(f"stats_by_segment: item {i} is {type(s).__name__}, expected ArmStats")
        if s.n_arms != segments[0].n_arms:
            raise ValueError(
                f"stats_by_segment: segment {i} has {s.n_arms} arms, segment 0 has {segments[0].n_arms}"
            )
    config.check_arms(segments[0].n_arms)
    previous = _check_previous(previous_weights, len(segments), segments[0].n_arms)
    seeds = [_segment_seed(seed, i) for i in range(len(segments))] if len(segments) > 1 else [seed]
    model_kind = resolve_model(config.model, len(segments), design is not None)

    if model_kind is Model.STRUCTURED:
        from .structured import FactorDesign, structured_models

        if not isinstance(design, FactorDesign):
            raise ValueError("design: Model.STRUCTURED needs a FactorDesign (factor levels of every arm)")
        if design.n_arms != segments[0].n_arms:
            raise ValueError(f"design: describes {design.n_arms} arms, stats have {segments[0].n_arms}")
        if config.objective is Objective.PROFIT:
            raise ValueError("objective: the structured model does not support profit; use independent or hierarchical")
        models, extra = structured_models(segments, design, config)
    elif model_kind is Model.HIERARCHICAL:
        from .hierarchical import hierarchical_models

        models, extra = hierarchical_models(segments, config)
    else:
        models, extra = [IndependentModel(s, config) for s in segments], {}
    jobs = list(zip(models, segments, seeds, previous, strict=True))
    workers = min(len(jobs), max_workers if max_workers is not None else (os.cpu_count() or 1))
    if workers <= 1:
        return [_finish(m, s, config, sd, extra, pw) for m, s, sd, pw in jobs]
    # numpy's samplers and BLAS release the GIL, so segments run in parallel;
    # each segment has its own seeded Generator, so the result does not depend
    # on the scheduling.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _finish(job[0], job[1], config, job[2], extra, job[3]), jobs))


def allocate_periods(
    periods: Sequence[ArmStats],
    config: AllocationConfig = AllocationConfig(),
    seed: int = 0,
    **model_inputs: Any,
) -> Allocation:
    """`allocate` on per-period statistics (oldest first) discounted by config.discount."""
    return allocate(combine_periods(periods, config.discount), config, seed, **model_inputs)
