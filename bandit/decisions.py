"""Winner rule: when can the service stop exploring a segment?

An arm is declared the winner when it is very probably the best AND choosing it
costs little in expectation.  P(best) alone is not enough: two nearly identical
arms can keep P(best) near 0.5 forever although either is a fine choice (the
expected-loss criterion stops them); expected loss alone can be small simply
because all arms are poor (P(best) keeps that honest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .allocation import Allocation

__all__ = ["WinnerRule", "Decision", "decide"]


@dataclass(frozen=True)
class WinnerRule:
    """min_p_best: required P(best).  max_relative_loss: expected loss as a share of
    the arm's posterior mean (0.01 = we expect to give up < 1 % of its conversions).
    max_expected_loss: optional absolute threshold (objective units per send)."""

    min_p_best: float = 0.95
    max_relative_loss: float = 0.01
    max_expected_loss: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_p_best) and 0.0 < self.min_p_best <= 1.0):
            raise ValueError(f"min_p_best: must be in (0, 1], got {self.min_p_best!r}")
        if not (math.isfinite(self.max_relative_loss) and self.max_relative_loss >= 0):
            raise ValueError(f"max_relative_loss: must be >= 0, got {self.max_relative_loss!r}")
        if self.max_expected_loss is not None and not (
            math.isfinite(self.max_expected_loss) and self.max_expected_loss >= 0
        ):
            raise ValueError(f"max_expected_loss: must be None or >= 0, got {self.max_expected_loss!r}")


@dataclass(frozen=True)
class Decision:
    winner: int | None  # arm index, or None while undecided
    p_best: np.ndarray
    expected_loss: np.ndarray
    reason: str

    def as_dict(self) -> dict:
        return {
            "winner": self.winner,
            "p_best": self.p_best.tolist(),
            "expected_loss": self.expected_loss.tolist(),
            "reason": self.reason,
        }


def decide(allocation: Allocation, rule: WinnerRule = WinnerRule()) -> Decision:
    """Apply `rule` to the posterior summary carried by an Allocation."""
    if allocation.expected_loss is None or allocation.posterior_mean is None:
        raise ValueError("allocation: carries no expected loss (produced by an old engine version?)")
    p = np.asarray(allocation.p_best, dtype=np.float64)
    loss = np.asarray(allocation.expected_loss, dtype=np.float64)
    mean = np.asarray(allocation.posterior_mean, dtype=np.float64)
    lead = int(np.argmax(p))
    relative = loss[lead] / mean[lead] if mean[lead] > 0 else math.inf
    facts = f"arm {lead}: P(best)={p[lead]:.3f}, expected loss={loss[lead]:.3g} ({relative:.2%} of its mean)"
    if allocation.stage == "burn_in":
        return Decision(None, p, loss, f"undecided: still in burn-in; leader {facts}")
    if p[lead] < rule.min_p_best:
        return Decision(None, p, loss, f"undecided: P(best) below {rule.min_p_best}; leader {facts}")
    if relative > rule.max_relative_loss:
        return Decision(None, p, loss, f"undecided: relative expected loss above {rule.max_relative_loss:.2%}; {facts}")
    if rule.max_expected_loss is not None and loss[lead] > rule.max_expected_loss:
        return Decision(None, p, loss, f"undecided: expected loss above {rule.max_expected_loss:g}; {facts}")
    return Decision(lead, p, loss, f"winner {facts}")
