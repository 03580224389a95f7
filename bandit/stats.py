"""Sufficient statistics of a set of arms, and their validation.

Everything the engine knows about a campaign segment is four per-arm totals
(sends, clicks, conversions, revenue) plus, for delayed feedback, how many
sends are still inside their attribution window.  Counts are stored as float64
so that discounted (drift-aware) statistics, which are fractional, use the same
type; integer inputs are accepted unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Objective", "ArmStats", "combine_periods"]


class Objective(str, enum.Enum):  # noqa: UP042 -- StrEnum would change str(member); keep the public API
    """What "best arm" means."""

    CLICK = "click"  # clicks per send
    CONVERSION = "conversion"  # conversions per send = click rate x conversion-given-click
    REVENUE = "revenue"  # revenue per send = conversion per send x mean order value
    PROFIT = "profit"  # revenue x margin - level costs - unsubscribe rate x its cost (bandit/profit.py)


def _as_vector(name: str, value, reference_shape: tuple[int, ...] | None) -> np.ndarray:
    """Coerce to a finite, non-negative float vector or raise ValueError naming `name`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not a numeric array ({exc})") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of per-arm values, got shape {array.shape}")
    if reference_shape is None and array.size == 0:
        raise ValueError(f"{name}: empty arm set (at least one arm is required)")
    if reference_shape is not None and array.shape != reference_shape:
        raise ValueError(f"{name}: shape {array.shape} does not match sends shape {reference_shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name}: contains NaN at arms {np.flatnonzero(np.isnan(array)).tolist()}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains infinite values")
    if (array < 0).any():
        raise ValueError(f"{name}: negative values at arms {np.flatnonzero(array < 0).tolist()}")
    array.setflags(write=False)
    return array


def _check_at_most(name: str, value: np.ndarray, bound_name: str, bound: np.ndarray) -> None:
    # A small tolerance lets discounted (float) statistics through rounding noise.
    bad = value > bound + 1e-9 * np.maximum(1.0, bound)
    if bad.any():
        raise ValueError(f"{name}: exceeds {bound_name} at arms {np.flatnonzero(bad).tolist()}")


@dataclass(frozen=True)
class ArmStats:
    """Per-arm totals for one segment of one campaign.

    sends:        number of customers mailed the arm.
    clicks:       customers who clicked (0 <= clicks <= sends).
    conversions:  customers who converted (conversions <= sends).
    revenue:      total revenue attributed to the arm (>= 0).
    pending_clicks:      sends not clicked yet whose click window is still open.
                         They are neither successes nor failures (delayed feedback).
    pending_conversions: clicks not converted yet whose conversion window is still open.
    unsubscribes:        customers who unsubscribed from the arm's email (<= sends; zeros by default).

    Arrays are validated and frozen; any problem raises ValueError naming the
    argument.
    """

    sends: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    revenue: np.ndarray
    pending_clicks: np.ndarray | None = field(default=None)
    pending_conversions: np.ndarray | None = field(default=None)
    unsubscribes: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        sends = _as_vector("sends", self.sends, None)
        shape = sends.shape
        clicks = _as_vector("clicks", self.clicks, shape)
        conversions = _as_vector("conversions", self.conversions, shape)
        revenue = _as_vector("revenue", self.revenue, shape)
        _check_at_most("clicks", clicks, "sends", sends)
        _check_at_most("conversions", conversions, "sends", sends)
        if self.pending_clicks is None:
            pending_clicks = np.zeros(shape)
        else:
            pending_clicks = _as_vector("pending_clicks", self.pending_clicks, shape)
            _check_at_most("pending_clicks", pending_clicks, "sends - clicks", sends - clicks)
        if self.pending_conversions is None:
            pending_conversions = np.zeros(shape)
        else:
            pending_conversions = _as_vector("pending_conversions", self.pending_conversions, shape)
            _check_at_most(
                "pending_conversions",
                pending_conversions,
                "clicks - conversions",
                np.maximum(clicks - conversions, 0.0),
            )
        if self.unsubscribes is None:
            unsubscribes = np.zeros(shape)
            unsubscribes.setflags(write=False)
        else:
            unsubscribes = _as_vector("unsubscribes", self.unsubscribes, shape)
            _check_at_most("unsubscribes", unsubscribes, "sends", sends)
        for name, value in (
            ("sends", sends),
            ("clicks", clicks),
            ("conversions", conversions),
            ("revenue", revenue),
            ("pending_clicks", pending_clicks),
            ("pending_conversions", pending_conversions),
            ("unsubscribes", unsubscribes),
        ):
            object.__setattr__(self, name, value)

    # -- convenience -----------------------------------------------------
    @property
    def n_arms(self) -> int:
        return int(self.sends.shape[0])

    @property
    def funnel_consistent(self) -> bool:
        """True when every conversion went through a click (conversions <= clicks).

        Only then can conversion-per-send be factorised as click x conversion|click.
        """
        return bool((self.conversions <= self.clicks + 1e-9).all())

    @classmethod
    def zeros(cls, n_arms: int) -> ArmStats:
        if n_arms < 1:
            raise ValueError("n_arms: empty arm set (at least one arm is required)")
        z = np.zeros(n_arms)
        return cls(z, z, z, z)

    def __add__(self, other: ArmStats) -> ArmStats:
        if not isinstance(other, ArmStats):
            return NotImplemented
        if other.sends.shape != self.sends.shape:
            raise ValueError(f"other: shape {other.sends.shape} does not match {self.sends.shape}")
        return ArmStats(
            self.sends + other.sends,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.revenue + other.revenue,
            self.pending_clicks + other.pending_clicks,
            self.pending_conversions + other.pending_conversions,
            self.unsubscribes + other.unsubscribes,
        )

    def scaled(self, factor: float) -> ArmStats:
        """All evidence multiplied by `factor` (used by discounting and sharpening)."""
        if not np.isfinite(factor) or factor < 0:
            raise ValueError(f"factor: must be a finite non-negative number, got {factor!r}")
        return ArmStats(
            self.sends * factor,
            self.clicks * factor,
            self.conversions * factor,
            self.revenue * factor,
            self.pending_clicks * factor,
            self.pending_conversions * factor,
            self.unsubscribes * factor,
        )


def combine_periods(periods: Sequence[ArmStats], discount: float = 1.0) -> ArmStats:
    """Sum per-period statistics, oldest first, discounting old evidence.

    The period that is `age` periods old is weighted by discount**age, the most
    recent one by 1.  Discounting per *period* (a week of sends) rather than per
    event keeps the effective memory measured in calendar time, which is what
    drifting tastes are about, and keeps the statistics a few numbers per arm.
    With discount = 1 this is a plain sum.  The effective sample size of a
    stationary arm converges to sends_per_period / (1 - discount).
    """
    if not periods:
        raise ValueError("periods: at least one period of statistics is required")
    if not (0.0 < discount <= 1.0) or not np.isfinite(discount):
        raise ValueError(f"discount: must lie in (0, 1], got {discount!r}")
    total = periods[-1]
    weight = 1.0
    for period in reversed(periods[:-1]):
        weight *= discount
        total = total + period.scaled(weight)
    return total
