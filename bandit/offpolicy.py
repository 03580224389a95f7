"""Off-policy evaluation from logged propensities: what another policy would have earned per send.

Estimators of the per-send value V(pi) = E_c[ sum_a pi(a|c) mu(c, a) ] of a *target* policy pi
from data logged by another (the bandit), where each send i records its context c_i (segment),
action a_i (arm), reward r_i and the probability p_i with which the logging policy chose a_i:

* IPS (inverse propensity scoring): mean of w_i r_i, w_i = pi(a_i|c_i) / p_i. Unbiased whenever
  p_i > 0 wherever pi puts mass, also when the logging policy adapts from period to period (the
  propensity is the one in force when the send was assigned, so E[w r | past] = V).
* SNIPS (self-normalised IPS): sum w_i r_i / sum w_i. Biased by O(1/n), much smaller variance
  when weights are large; invariant to adding a constant to the rewards.
* DR (doubly robust): mean of  sum_a pi(a|c_i) q(c_i, a) + w_i (r_i - q(c_i, a_i)), with a direct
  model q (here: the per (context, action) mean reward). Unbiased if either the propensities or
  q are right; lower variance than IPS when q is good. q fitted on the same data (no
  cross-fitting) adds an O(1/n) bias, negligible at campaign sizes.

Intervals are normal approximations (95%) from the per-send contributions: each estimator is a
mean (SNIPS: a ratio, linearised by the delta method) of per-send terms, and its standard error is
the sample standard deviation of those terms over sqrt(n). With rare rewards and a few huge
weights the normal approximation undercovers; `effective_sample_size` (Kish: (sum w)^2 / sum w^2)
says how many sends the estimate is really worth.

Input comes aggregated: sends that share context, action and propensity form one *group* carrying
the count, the sum of rewards and the sum of squared rewards. Every estimator above is a sum of
per-send terms that are affine in r_i within a group, so group sums give exactly the per-send
answer (per-send data is the special case count = 1) -- that is what lets the service aggregate
12M sends in SQL and never read them one by one.

Pure numpy; bad input raises ValueError naming the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Z95",
    "LoggedData",
    "OffPolicyEstimate",
    "direct_model",
    "doubly_robust",
    "evaluate",
    "greedy_policy",
    "ips",
    "snips",
    "uniform_policy",
    "unsupported_mass",
]

Z95 = 1.959963984540054


def _vector(name: str, value, dtype=np.float64) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: not a numeric array") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {arr.shape}")
    if dtype is np.float64 and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return arr


@dataclass(frozen=True)
class LoggedData:
    """Logged sends, grouped by (context, action, propensity).

    context:       (G,) int, the segment index of the group's sends.
    action:        (G,) int, the arm the logging policy chose.
    propensity:    (G,) probability with which it chose that arm in that context, in (0, 1].
    count:         (G,) number of sends in the group (> 0).
    reward_sum:    (G,) sum of the sends' rewards.
    reward_sq_sum: (G,) sum of the squared rewards (= reward_sum for 0/1 rewards).
    """

    context: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    count: np.ndarray
    reward_sum: np.ndarray
    reward_sq_sum: np.ndarray

    def __post_init__(self) -> None:
        arrays = {
            "context": _vector("context", self.context, np.int64),
            "action": _vector("action", self.action, np.int64),
            "propensity": _vector("propensity", self.propensity),
            "count": _vector("count", self.count),
            "reward_sum": _vector("reward_sum", self.reward_sum),
            "reward_sq_sum": _vector("reward_sq_sum", self.reward_sq_sum),
        }
        g = arrays["context"].shape[0]
        for name, arr in arrays.items():
            if arr.shape[0] != g:
                raise ValueError(f"{name}: has {arr.shape[0]} groups, context has {g}")
            object.__setattr__(self, name, arr)
        if (arrays["context"] < 0).any() or (arrays["action"] < 0).any():
            raise ValueError("context: indices must be >= 0" if (arrays["context"] < 0).any()
                             else "action: indices must be >= 0")
        p = arrays["propensity"]
        if ((p <= 0) | (p > 1)).any():
            bad = np.flatnonzero((p <= 0) | (p > 1))[:5].tolist()
            raise ValueError(f"propensity: must be in (0, 1], groups {bad} are not")
        if (arrays["count"] <= 0).any():
            raise ValueError("count: every group needs at least one send")
        # Cauchy-Schwarz: (sum r)^2 <= n sum r^2; a violation means the sums do not belong together.
        excess = arrays["reward_sum"] ** 2 - arrays["count"] * arrays["reward_sq_sum"]
        if (excess > 1e-9 * np.maximum(arrays["reward_sum"] ** 2, 1.0)).any():
            raise ValueError("reward_sq_sum: smaller than reward_sum**2 / count in some group")

    @classmethod
    def from_sends(cls, context, action, propensity, reward) -> LoggedData:
        """One group per send (for tests and small data)."""
        r = _vector("reward", reward)
        return cls(context, action, propensity, np.ones_like(r), r, r * r)

    @property
    def n(self) -> float:
        return float(self.count.sum())

    def subset(self, mask: np.ndarray) -> LoggedData:
        m = np.asarray(mask, dtype=bool)
        return LoggedData(self.context[m], self.action[m], self.propensity[m], self.count[m],
                          self.reward_sum[m], self.reward_sq_sum[m])


@dataclass(frozen=True)
class OffPolicyEstimate:
    """Per-send value of the target policy, with a normal-approximation 95% interval.

    value, std_error, ci_low, ci_high: per send (multiply by a number of sends for totals).
    n: logged sends used. effective_sample_size: Kish's (sum w)^2 / sum w^2 over the sends
    (n when the target is the logging policy). reason: why there is no estimate, if there is none.
    """

    estimator: str
    value: float
    std_error: float
    ci_low: float
    ci_high: float
    n: float
    effective_sample_size: float
    reason: str | None = None

    def as_dict(self) -> dict:
        def clean(x):
            return None if x is None or not math.isfinite(x) else float(x)

        return {"estimator": self.estimator, "value": clean(self.value), "std_error": clean(self.std_error),
                "ci95": [clean(self.ci_low), clean(self.ci_high)], "n": clean(self.n),
                "effective_sample_size": clean(self.effective_sample_size), "reason": self.reason}


def _empty(estimator: str, reason: str) -> OffPolicyEstimate:
    return OffPolicyEstimate(estimator, math.nan, math.nan, math.nan, math.nan, 0.0, 0.0, reason)


def _target_probs(data: LoggedData, target: np.ndarray) -> np.ndarray:
    t = np.asarray(target, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"target: expected a (contexts, actions) matrix, got shape {t.shape}")
    if data.context.size and (data.context.max() >= t.shape[0] or data.action.max() >= t.shape[1]):
        raise ValueError(f"target: shape {t.shape} does not cover the logged contexts/actions")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("target: probabilities must be finite and >= 0")
    used = np.unique(data.context)
    sums = t[used].sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-9):
        bad = used[~np.isclose(sums, 1.0, atol=1e-9)][:5].tolist()
        raise ValueError(f"target: rows {bad} do not sum to 1")
    return t[data.context, data.action]


def _mean_estimate(estimator: str, n: float, total: float, total_sq: float, ess: float) -> OffPolicyEstimate:
    """Mean of per-send terms x_i given n, sum x and sum x^2, with a t-free normal interval."""
    mean = total / n
    ss = max(total_sq - total * total / n, 0.0)  # sum of squared deviations
    se = math.sqrt(ss / (n - 1) / n) if n > 1 else math.nan
    return OffPolicyEstimate(estimator, mean, se, mean - Z95 * se, mean + Z95 * se, n, ess)


def _kish(data: LoggedData, w: np.ndarray) -> float:
    s1 = float((data.count * w).sum())
    s2 = float((data.count * w * w).sum())
    return s1 * s1 / s2 if s2 > 0 else 0.0


def ips(data: LoggedData, target: np.ndarray) -> OffPolicyEstimate:
    """Inverse propensity scoring: mean of w r over the logged sends."""
    pe = _target_probs(data, target)
    if data.n == 0:
        return _empty("ips", "no logged sends")
    w = pe / data.propensity
    total = float((w * data.reward_sum).sum())
    total_sq = float((w * w * data.reward_sq_sum).sum())
    return _mean_estimate("ips", data.n, total, total_sq, _kish(data, w))


def snips(data: LoggedData, target: np.ndarray) -> OffPolicyEstimate:
    """Self-normalised IPS, sum w r / sum w; delta-method standard error of the ratio."""
    pe = _target_probs(data, target)
    if data.n == 0:
        return _empty("snips", "no logged sends")
    w = pe / data.propensity
    sw = float((data.count * w).sum())
    if sw <= 0:
        return _empty("snips", "the target policy never chose a logged action")
    n = data.n
    value = float((w * data.reward_sum).sum()) / sw
    # Influence of send i: w_i (r_i - V) / mean(w); it sums to zero, so its sum of squares is n-1 times
    # its variance estimate.
    w_bar = sw / n
    ss = float((w * w * (data.reward_sq_sum - 2 * value * data.reward_sum + value * value * data.count)).sum())
    se = math.sqrt(max(ss, 0.0) / (w_bar * w_bar) / (n - 1) / n) if n > 1 else math.nan
    return OffPolicyEstimate("snips", value, se, value - Z95 * se, value + Z95 * se, n, _kish(data, w))


def direct_model(data: LoggedData, n_contexts: int, n_actions: int) -> np.ndarray:
    """(contexts, actions) mean reward per cell; a cell never logged gets its context's mean
    (and a context never logged the overall mean)."""
    sends = np.zeros((n_contexts, n_actions))
    rewards = np.zeros((n_contexts, n_actions))
    np.add.at(sends, (data.context, data.action), data.count)
    np.add.at(rewards, (data.context, data.action), data.reward_sum)
    overall = rewards.sum() / sends.sum() if sends.sum() > 0 else 0.0
    ctx_sends = sends.sum(axis=1, keepdims=True)
    ctx_mean = np.where(ctx_sends > 0, rewards.sum(axis=1, keepdims=True) / np.maximum(ctx_sends, 1e-300), overall)
    return np.where(sends > 0, rewards / np.maximum(sends, 1e-300), ctx_mean)


def doubly_robust(data: LoggedData, target: np.ndarray, q: np.ndarray | None = None) -> OffPolicyEstimate:
    """Doubly robust: direct model plus the IPS-weighted residual of the logged action."""
    pe = _target_probs(data, target)
    if data.n == 0:
        return _empty("dr", "no logged sends")
    t = np.asarray(target, dtype=np.float64)
    if q is None:
        q = direct_model(data, t.shape[0], t.shape[1])
    q = np.asarray(q, dtype=np.float64)
    if q.shape != t.shape or not np.isfinite(q).all():
        raise ValueError(f"q: expected a finite matrix of shape {t.shape}, got {q.shape}")
    w = pe / data.propensity
    dm = (t * q).sum(axis=1)[data.context]  # value of the target under the model, per group's context
    q_a = q[data.context, data.action]
    n_g = data.count
    resid_sum = data.reward_sum - n_g * q_a
    resid_sq = data.reward_sq_sum - 2 * q_a * data.reward_sum + n_g * q_a * q_a
    total = float((n_g * dm + w * resid_sum).sum())
    total_sq = float((n_g * dm * dm + 2 * dm * w * resid_sum + w * w * resid_sq).sum())
    return _mean_estimate("dr", data.n, total, total_sq, _kish(data, w))


def evaluate(data: LoggedData, target: np.ndarray, q: np.ndarray | None = None) -> dict[str, OffPolicyEstimate]:
    """IPS, SNIPS and DR of one target policy."""
    return {"ips": ips(data, target), "snips": snips(data, target), "dr": doubly_robust(data, target, q)}


def uniform_policy(eligible: np.ndarray) -> np.ndarray:
    """Equal probability over each context's eligible actions ((contexts, actions) bool mask)."""
    m = np.asarray(eligible, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"eligible: expected a (contexts, actions) mask, got shape {m.shape}")
    k = m.sum(axis=1, keepdims=True)
    return np.where(k > 0, m / np.maximum(k, 1), 0.0)


def greedy_policy(best: np.ndarray, n_actions: int) -> np.ndarray:
    """Every send of context c gets action best[c] (e.g. each segment's current leader)."""
    b = _vector("best", best, np.int64)
    if ((b < 0) | (b >= n_actions)).any():
        raise ValueError(f"best: actions must be in [0, {n_actions})")
    out = np.zeros((b.shape[0], n_actions))
    out[np.arange(b.shape[0]), b] = 1.0
    return out


def unsupported_mass(target: np.ndarray, logging: np.ndarray, sends: np.ndarray) -> float:
    """Share of the target's probability mass, averaged over sends, on actions the logging policy
    could not choose (probability 0): the part IPS cannot see (it is then biased towards 0).

    All per batch of sends that shared one logging distribution (a period x segment):
    target (B, A) the target's probabilities in the batch's context, logging (B, A) the logging
    policy's, sends (B,) the batch sizes.
    """
    t = np.asarray(target, dtype=np.float64)
    lg = np.asarray(logging, dtype=np.float64)
    n = _vector("sends", sends)
    if t.shape != lg.shape or t.ndim != 2 or t.shape[0] != n.shape[0]:
        raise ValueError(f"logging: shapes {t.shape}, {lg.shape} and {n.shape} do not match")
    if n.sum() <= 0:
        return 0.0
    gap = (t * (lg <= 0)).sum(axis=1)
    return float((gap * n).sum() / n.sum())
