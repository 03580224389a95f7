"""Campaign simulator: environments x policies -> cumulative regret and conversions.

Outcomes are drawn per arm and period with binomial/multinomial draws (never per
customer), so a 12M-customer campaign costs a few hundred array operations.

Environment: true click rate, conversion-given-click and mean order value per
(segment, arm), optionally drifting per period, with conversions arriving after
a random delay (in periods).  Policy: maps the observed statistics to weights
per segment.  Regret of a period = expected objective of the oracle allocation
minus expected objective of the policy's actual sends (per-send objective x
sends), so it is free of outcome noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import expit, logit

from .allocation import AllocationConfig, Model, allocate_segments
from .stats import ArmStats, Objective, combine_periods
from .structured import FactorDesign

__all__ = [
    "Environment",
    "bernoulli_environment",
    "factorial_environment",
    "Policy",
    "uniform_policy",
    "epsilon_greedy_policy",
    "thompson_policy",
    "oracle_policy",
    "default_policies",
    "SimulationResult",
    "simulate",
]


# ---------------------------------------------------------------------------
# environments
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """click, conv, value: (S, K) true click rate, conversion|click, mean order value.

    batch:          customers per segment per period.
    drift_sd:       per-period random-walk std-dev of the click/conversion log-odds.
    delay_mean:     mean conversion delay in periods (0 = immediate); delays are
                    geometric, and a conversion older than `window` periods is lost.
    window:         attribution window in periods.
    design:         factor levels of the arms (for the structured model).
    objective:      what regret is measured on.
    """

    click: np.ndarray
    conv: np.ndarray
    value: np.ndarray
    batch: int
    objective: Objective = Objective.CONVERSION
    drift_sd: float = 0.0
    delay_mean: float = 0.0
    window: int = 4
    design: FactorDesign | None = None
    value_shape: float = 1.0
    name: str = "custom"

    @property
    def n_segments(self) -> int:
        return int(self.click.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.click.shape[1])

    def reward(self, click=None, conv=None) -> np.ndarray:
        """(S, K) expected objective per send."""
        click = self.click if click is None else click
        conv = self.conv if conv is None else conv
        if self.objective is Objective.CLICK:
            return click
        if self.objective is Objective.CONVERSION:
            return click * conv
        return click * conv * self.value


def bernoulli_environment(rates: Sequence[float], batch: int = 1000, **kw) -> Environment:
    """K Bernoulli arms in one segment; reward = click."""
    click = np.asarray(rates, dtype=np.float64)[None, :]
    ones = np.ones_like(click)
    return Environment(click, ones, ones, batch, objective=Objective.CLICK, name="bernoulli", **kw)


def factorial_environment(
    levels: Sequence[int] = (4, 5, 10),
    n_segments: int = 8,
    customers: int = 12_000_000,
    periods: int = 10,
    seed: int = 0,
    *,
    click_range: tuple[float, float] = (0.02, 0.05),
    conv_range: tuple[float, float] = (0.05, 0.15),
    main_sd: float = 0.25,
    interaction_sd: float = 0.12,
    residual_sd: float = 0.05,
    **kw,
) -> Environment:
    """Factorial email campaign: log-odds = base + factor main effects + segment x factor
    interactions + small variant residual, rescaled into the given rate ranges."""
    rng = np.random.default_rng(seed)
    design = FactorDesign.full_factorial(*levels)
    k = design.n_arms

    def stage(lo, hi):
        eta = np.zeros((n_segments, k))
        eta += rng.normal(0, 0.15, (n_segments, 1))  # segment baselines
        for f, n in enumerate(levels):
            main = rng.normal(0, main_sd, n)
            inter = rng.normal(0, interaction_sd, (n_segments, n))
            eta += main[design.levels[:, f]][None, :] + inter[:, design.levels[:, f]]
        eta += rng.normal(0, residual_sd, (1, k))
        # map the spread of log-odds into [lo, hi]
        lo_l, hi_l = logit(lo), logit(hi)
        z = (eta - eta.mean()) / max(eta.std(), 1e-9)
        return expit((lo_l + hi_l) / 2 + z * (hi_l - lo_l) / 4)

    click = stage(*click_range)
    conv = stage(*conv_range)
    value = np.full((n_segments, k), 60.0)
    batch = int(customers // (n_segments * periods))
    return Environment(click, conv, value, batch, design=design, name="factorial", **kw)


# ---------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------

# A policy gets (period, per-segment list of per-period ArmStats, rng) and
# returns (S, K) weights.
Policy = Callable[[int, list[list[ArmStats]], np.random.Generator], np.ndarray]


def uniform_policy(env: Environment) -> Policy:
    """Today's practice: equal split (an A/B/n test that never stops)."""

    def policy(t, history, rng):
        return np.full((env.n_segments, env.n_arms), 1.0 / env.n_arms)

    return policy


def _empirical(env: Environment, stats: ArmStats) -> np.ndarray:
    n = np.maximum(stats.sends, 1.0)
    if env.objective is Objective.CLICK:
        return stats.clicks / n
    if env.objective is Objective.CONVERSION:
        return stats.conversions / n
    return stats.revenue / n


def epsilon_greedy_policy(env: Environment, epsilon: float = 0.1) -> Policy:
    """Explore uniformly with probability epsilon, else exploit the best empirical mean."""

    def policy(t, history, rng):
        w = np.full((env.n_segments, env.n_arms), epsilon / env.n_arms)
        for s, periods in enumerate(history):
            if not periods:
                w[s] = 1.0 / env.n_arms
                continue
            mean = _empirical(env, combine_periods(periods))
            best = rng.choice(np.flatnonzero(mean == mean.max()))
            w[s, best] += 1.0 - epsilon
        return w

    return policy


def thompson_policy(env: Environment, config: AllocationConfig) -> Policy:
    """The engine: allocate_segments with `config` (any model) on the observed stats."""
    config = replace(config, objective=env.objective)

    last: dict = {}  # the previous period's weights, for config.max_move

    def policy(t, history, rng):
        if not history[0]:
            last["w"] = np.full((env.n_segments, env.n_arms), 1.0 / env.n_arms)
            return last["w"]
        stats = [combine_periods(periods, config.discount) for periods in history]
        seed = int(rng.integers(2**31))
        out = allocate_segments(stats, config, seed, design=env.design, previous_weights=last.get("w"))
        last["w"] = np.stack([a.weights for a in out])
        return last["w"]

    return policy


def oracle_policy(env: Environment) -> Policy:
    """Knows the true rates: all traffic to the best arm of each segment (sets regret 0)."""

    def policy(t, history, rng, truth=None):
        reward = truth if truth is not None else env.reward()
        w = np.zeros_like(reward)
        w[np.arange(reward.shape[0]), reward.argmax(axis=1)] = 1.0
        return w

    policy.is_oracle = True  # type: ignore[attr-defined]
    return policy


def default_policies(env: Environment, config: AllocationConfig | None = None) -> dict[str, Policy]:
    config = config or AllocationConfig()
    policies = {
        "uniform": uniform_policy(env),
        "epsilon_greedy": epsilon_greedy_policy(env, 0.1),
        "independent_ts": thompson_policy(env, replace(config, model=Model.INDEPENDENT)),
    }
    if env.n_segments > 1:
        policies["hierarchical_ts"] = thompson_policy(env, replace(config, model=Model.HIERARCHICAL))
    if env.design is not None:
        policies["structured_ts"] = thompson_policy(env, replace(config, model=Model.STRUCTURED))
    policies["oracle"] = oracle_policy(env)
    return policies


# ---------------------------------------------------------------------------
# the simulation loop (periods x segments, vectorised over arms)
# ---------------------------------------------------------------------------


@dataclass
class SimulationResult:
    periods: int
    batch: int
    regret: dict[str, np.ndarray] = field(default_factory=dict)  # cumulative expected regret per period
    conversions: dict[str, np.ndarray] = field(default_factory=dict)  # cumulative realised conversions
    expected_conversions: dict[str, np.ndarray] = field(default_factory=dict)  # cumulative expected

    def share_of_oracle(self, policy: str) -> float:
        oracle = self.expected_conversions.get("oracle")
        if oracle is None or oracle[-1] <= 0:
            return float("nan")
        return float(self.expected_conversions[policy][-1] / oracle[-1])

    def summary(self) -> list[dict]:
        return [
            {
                "policy": name,
                "regret": float(self.regret[name][-1]),
                "conversions": float(self.conversions[name][-1]),
                "share_of_oracle": self.share_of_oracle(name),
            }
            for name in self.regret
        ]


def _drift(env: Environment, click, conv, rng):
    if env.drift_sd <= 0:
        return click, conv
    click = expit(logit(click) + rng.normal(0, env.drift_sd, click.shape))
    conv = expit(logit(conv) + rng.normal(0, env.drift_sd, conv.shape))
    return click, conv


def run_policy(
    env: Environment,
    policy: Policy,
    periods: int,
    seed: int,
    on_period: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative regret, cumulative conversions, cumulative expected conversions) per period."""
    rng = np.random.default_rng(seed)
    env_rng = np.random.default_rng([seed, 1])  # same drift path for every policy
    s_n, k = env.n_segments, env.n_arms
    click, conv = env.click.copy(), env.conv.copy()
    history: list[list[ArmStats]] = [[] for _ in range(s_n)]
    # Delayed conversions: cohort (send period) -> (clicks, conversions that will arrive at period t)
    cohort_clicks = np.zeros((periods, s_n, k))
    cohort_conv_due = np.zeros((periods, periods + env.window + 2, s_n, k)) if env.delay_mean > 0 else None
    regret = np.zeros(periods)
    got = np.zeros(periods)
    expected = np.zeros(periods)
    p_delay = 1.0 / (1.0 + env.delay_mean) if env.delay_mean > 0 else 1.0
    for t in range(periods):
        click, conv = _drift(env, click, conv, env_rng)
        reward = env.reward(click, conv)
        if getattr(policy, "is_oracle", False):
            w = policy(t, history, rng, truth=reward)
        else:
            w = policy(t, history, rng)
        sends = np.stack([rng.multinomial(env.batch, w[s] / w[s].sum()) for s in range(s_n)]).astype(float)
        clicks = rng.binomial(sends.astype(np.int64), click).astype(float)
        convs = rng.binomial(clicks.astype(np.int64), conv).astype(float)
        regret[t] = float((sends * (reward.max(axis=1, keepdims=True) - reward)).sum())
        expected[t] = float((sends * click * conv).sum())
        got[t] = float(convs.sum())
        if cohort_conv_due is None:
            observed_conv = convs
        else:
            # geometric delay in whole periods; those beyond the window are lost
            cohort_clicks[t] = clicks
            remaining = convs.astype(np.int64)
            for d in range(env.window + 1):
                now = rng.binomial(remaining, p_delay) if d < env.window else remaining * 0
                cohort_conv_due[t, t + d] = now
                remaining = remaining - now
            observed_conv = None
        if cohort_conv_due is not None:
            # rebuild this period's view of every cohort: what arrived so far, what is pending
            new_history = []
            for s in range(s_n):
                periods_stats = []
                for c in range(t + 1):
                    arrived = cohort_conv_due[c, : t + 1, s].sum(axis=0)
                    open_window = (t - c) < env.window
                    pend = np.maximum(cohort_clicks[c, s] - arrived, 0.0) if open_window else None
                    prev = history[s][c] if c < len(history[s]) else None
                    c_sends = prev.sends if prev is not None else sends[s]
                    c_clicks = prev.clicks if prev is not None else clicks[s]
                    value = arrived * env.value[s]
                    periods_stats.append(ArmStats(c_sends, c_clicks, arrived, value, None, pend))
                new_history.append(periods_stats)
            history = new_history
        else:
            revenue = np.zeros_like(convs)
            pos = convs > 0
            # sum of n Gamma(k, mean/k) order values is Gamma(n k, mean/k)
            revenue[pos] = rng.gamma(convs[pos] * env.value_shape, env.value[pos] / env.value_shape)
            for s in range(s_n):
                history[s].append(ArmStats(sends[s], clicks[s], observed_conv[s], revenue[s]))
        if on_period is not None:
            on_period(t)
    return np.cumsum(regret), np.cumsum(got), np.cumsum(expected)


def simulate(
    env: Environment,
    policies: dict[str, Policy],
    periods: int,
    seed: int = 0,
    on_period: Callable[[str, int], None] | None = None,
) -> SimulationResult:
    """Run every policy on the same environment (same drift path) and collect curves."""
    if periods < 1:
        raise ValueError(f"periods: must be >= 1, got {periods!r}")
    if env.batch < 1:
        raise ValueError(f"batch: must be >= 1, got {env.batch!r}")
    result = SimulationResult(periods=periods, batch=env.batch)
    for name, policy in policies.items():
        callback = (lambda t, _n=name: on_period(_n, t)) if on_period else None
        r, c, e = run_policy(env, policy, periods, seed, callback)
        result.regret[name], result.conversions[name], result.expected_conversions[name] = r, c, e
    return result
