"""Profit per send: the revenue hurdle model net of margin, level costs and unsubscribes.

profit per send = conversions/send x order value x (margin - cost_share)
                  - conversions/send x cost_fixed
                  - unsubscribes/send x unsubscribe_cost

* conversions/send and the order value V come from the revenue posterior of
  posterior.py (funnel Betas x hurdle Gamma), unchanged;
* cost_share (per arm) is the share of the order the arm's levels give away
  (a 20% discount: 0.2), cost_fixed (per arm) what they cost per conversion in
  money (a free dessert: its price);
* the unsubscribe rate is u ~ Beta(1 + unsubscribes, 1 + sends - unsubscribes),
  independent of the funnel.

Profit may be negative, so the pruning bounds of the positive objectives do not
apply: `ProfitPosterior.quantile_bounds` is not defined and the model never
prunes (`contenders` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .posterior import FunnelPosterior, beta_draws, funnel_posterior, gamma_draws
from .stats import ArmStats, Objective, _as_vector

__all__ = ["ArmEconomics", "ProfitPosterior", "profit_posterior"]


def _finite_number(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class ArmEconomics:
    """What a conversion earns and what each arm costs.

    margin:           gross margin on revenue, in [0, 1].
    cost_share:       per arm, share of the order value given away per conversion (>= 0).
    cost_fixed:       per arm, money spent per conversion (>= 0).
    unsubscribe_cost: value of a lost subscriber (>= 0).
    """

    margin: float
    cost_share: np.ndarray
    cost_fixed: np.ndarray
    unsubscribe_cost: float = 0.0

    def __post_init__(self) -> None:
        margin = _finite_number("margin", self.margin)
        if not 0.0 <= margin <= 1.0:
            raise ValueError(f"margin: must lie in [0, 1], got {self.margin!r}")
        share = _as_vector("cost_share", self.cost_share, None)
        fixed = _as_vector("cost_fixed", self.cost_fixed, None)
        if fixed.shape != share.shape:
            raise ValueError(f"cost_fixed: shape {fixed.shape} does not match cost_share shape {share.shape}")
        unsub = _finite_number("unsubscribe_cost", self.unsubscribe_cost)
        if unsub < 0:
            raise ValueError(f"unsubscribe_cost: must be >= 0, got {self.unsubscribe_cost!r}")
        object.__setattr__(self, "margin", margin)
        object.__setattr__(self, "cost_share", share)
        object.__setattr__(self, "cost_fixed", fixed)
        object.__setattr__(self, "unsubscribe_cost", unsub)

    @property
    def n_arms(self) -> int:
        return int(self.cost_share.shape[0])

    def check_arms(self, n_arms: int) -> None:
        if self.n_arms != n_arms:
            raise ValueError(f"economics: costs for {self.n_arms} arms, but the statistics have {n_arms}")

    @classmethod
    def free(cls, n_arms: int, margin: float = 1.0) -> ArmEconomics:
        """No level costs and no unsubscribe cost: profit = margin x revenue."""
        z = np.zeros(n_arms)
        return cls(margin, z, z, 0.0)


@dataclass(frozen=True)
class ProfitPosterior:
    """Posterior of profit per send: a revenue posterior, the economics and an unsubscribe Beta."""

    revenue: FunnelPosterior
    economics: ArmEconomics
    unsub_a: np.ndarray
    unsub_b: np.ndarray

    @property
    def n_arms(self) -> int:
        return self.revenue.n_arms

    def _net_share(self) -> np.ndarray:
        return self.economics.margin - self.economics.cost_share

    def _conversion_mean(self) -> np.ndarray:
        r = self.revenue
        m = r.click_a / (r.click_a + r.click_b)
        if r.conv_a is not None:
            m = m * r.conv_a / (r.conv_a + r.conv_b)
        return m

    def _value_mean(self) -> np.ndarray:
        r = self.revenue
        if r.value_shape is None:
            return np.ones(self.n_arms)
        return r.value_k * r.value_rate / (r.value_shape - 1.0)

    def mean(self) -> np.ndarray:
        conv = self._conversion_mean()
        unsub = self.unsub_a / (self.unsub_a + self.unsub_b)
        return (
            conv * self._value_mean() * self._net_share()
            - conv * self.economics.cost_fixed
            - unsub * self.economics.unsubscribe_cost
        )

    def subset(self, mask: np.ndarray) -> ProfitPosterior:
        econ = ArmEconomics(
            self.economics.margin,
            self.economics.cost_share[mask],
            self.economics.cost_fixed[mask],
            self.economics.unsubscribe_cost,
        )
        return ProfitPosterior(self.revenue.subset(mask), econ, self.unsub_a[mask], self.unsub_b[mask])

    def draw(self, rng: np.random.Generator, n_draws: int) -> np.ndarray:
        """(n_draws, K) float32 draws of profit per send."""
        r = self.revenue
        conv = beta_draws(rng, r.click_a, r.click_b, n_draws)
        if r.conv_a is not None:
            conv *= beta_draws(rng, r.conv_a, r.conv_b, n_draws)
        if r.value_shape is not None:
            rate = gamma_draws(rng, r.value_shape, (n_draws, self.n_arms))
            value = (r.value_k * r.value_rate).astype(np.float32) / rate
        else:
            value = np.ones((n_draws, self.n_arms), dtype=np.float32)
        unsub = beta_draws(rng, self.unsub_a, self.unsub_b, n_draws)
        profit = conv * (value * self._net_share().astype(np.float32) - self.economics.cost_fixed.astype(np.float32))
        profit -= unsub * np.float32(self.economics.unsubscribe_cost)
        return profit


def profit_posterior(stats: ArmStats, economics: ArmEconomics, **posterior_kwargs) -> ProfitPosterior:
    """Posterior of profit per send for every arm (keyword arguments as in funnel_posterior)."""
    if not isinstance(economics, ArmEconomics):
        raise ValueError(f"economics: expected ArmEconomics, got {type(economics).__name__}")
    economics.check_arms(stats.n_arms)
    sharpen = float(posterior_kwargs.get("sharpen", 1.0))
    revenue = funnel_posterior(stats, Objective.REVENUE, **posterior_kwargs)
    unsub_a = 1.0 + sharpen * stats.unsubscribes
    unsub_b = 1.0 + sharpen * np.maximum(stats.sends - stats.unsubscribes, 0.0)
    return ProfitPosterior(revenue, economics, unsub_a, unsub_b)
