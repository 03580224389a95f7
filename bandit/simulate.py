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
    "Waves",
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
# waves inside a period (test, then send)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Waves:
    """Split every period into a first wave and the rest (test, then send).

    share:                  the first wave's share of each segment's period audience, in (0, 1).
    wait_hours:             hours between the first wave and the rest of the period.
    click_delay_hours:      mean delay from send to click (exponential: most clicks within hours).
    conversion_delay_hours: mean delay from click to conversion (exponential: spread over days).
    pending:                how the first wave's sends without an event yet reach the engine:
                            "window" as the service passes them (every send still inside its
                            attribution window with no click is a pending click, every click with
                            no conversion a pending conversion: none of them is a failure);
                            "expected" only the share of them whose event could still come
                            (sends x P(click not due yet), clicks x P(conversion not due yet)).

    The first wave is allocated from the posterior before the period, the rest from the
    posterior updated with what of the first wave arrived within the wait.  Between periods the
    environment's own delay model applies, as without waves.
    """

    share: float = 0.15
    wait_hours: float = 24.0
    click_delay_hours: float = 4.0
    conversion_delay_hours: float = 48.0
    pending: str = "window"

    def __post_init__(self) -> None:
        if not (0.0 < float(self.share) < 1.0):
            raise ValueError(f"share: must lie in (0, 1), got {self.share!r}")
        for name in ("wait_hours", "click_delay_hours", "conversion_delay_hours"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: must be a finite positive number of hours, got {value!r}")
        if self.pending not in ("window", "expected"):
            raise ValueError(f"pending: must be 'window' or 'expected', got {self.pending!r}")

    @property
    def click_due(self) -> float:
        """P(a click has arrived by the end of the wait)."""
        return float(-np.expm1(-self.wait_hours / self.click_delay_hours))

    @property
    def conversion_due(self) -> float:
        """P(click delay + conversion delay <= wait): a hypoexponential distribution function."""
        a, b, w = float(self.click_delay_hours), float(self.conversion_delay_hours), float(self.wait_hours)
        if abs(a - b) < 1e-9 * max(a, b):
            return float(1.0 - np.exp(-w / a) * (1.0 + w / a))
        return float(1.0 - (a * np.exp(-w / a) - b * np.exp(-w / b)) / (a - b))

    def first_wave_size(self, batch: int) -> int:
        return int(round(self.share * batch))


def _first_wave_view(waves: Waves, sends, clicks, convs, value, value_shape, rng) -> ArmStats:
    """What the engine sees of the first wave at the end of the wait: the clicks and conversions
    that arrived, the rest pending (a conversion's click always arrives before it)."""
    f_click, f_conv = waves.click_due, waves.conversion_due
    clicks_i, convs_i = clicks.astype(np.int64), convs.astype(np.int64)
    conv_seen = rng.binomial(convs_i, f_conv)
    # converters whose click arrived but whose conversion did not: P(click due | conversion not due)
    p_click_only = min(max((f_click - f_conv) / (1.0 - f_conv), 0.0), 1.0) if f_conv < 1.0 else 0.0
    click_only = rng.binomial(convs_i - conv_seen, p_click_only)
    clicks_seen = conv_seen + click_only + rng.binomial(clicks_i - convs_i, f_click)
    seen_c, seen_v = clicks_seen.astype(float), conv_seen.astype(float)
    if waves.pending == "window":
        pend_c, pend_v = sends - seen_c, seen_c - seen_v
    else:
        pend_c = np.minimum(sends * (1.0 - f_click), sends - seen_c)
        pend_v = np.minimum(seen_c * (1.0 - f_conv / f_click), seen_c - seen_v)
    revenue = np.zeros_like(seen_v)
    pos = seen_v > 0
    revenue[pos] = rng.gamma(seen_v[pos] * value_shape, value[pos] / value_shape)
    return ArmStats(sends, seen_c, seen_v, revenue, pend_c, pend_v)


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
    trace: dict[str, list[dict]] = field(default_factory=dict)  # per-period waves, when simulated with waves

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


def _weights(policy: Policy, t: int, history, rng, reward) -> np.ndarray:
    if getattr(policy, "is_oracle", False):
        return policy(t, history, rng, truth=reward)
    return policy(t, history, rng)


def _mail(rng, n: int, w: np.ndarray, click, conv):
    """n customers per segment split by the weights w, and their outcomes (counts per arm)."""
    sends = np.stack([rng.multinomial(n, w[s] / w[s].sum()) for s in range(w.shape[0])]).astype(float)
    clicks = rng.binomial(sends.astype(np.int64), click).astype(float)
    convs = rng.binomial(clicks.astype(np.int64), conv).astype(float)
    return sends, clicks, convs


def _period_in_waves(env: Environment, waves: Waves, policy, t, history, rng, reward, click, conv, trace):
    """One period as two waves: the rest is allocated once the first wave's early feedback is in.
    Every customer of a segment is in exactly one wave: the two sizes add to the batch."""
    first = waves.first_wave_size(env.batch)
    w1 = _weights(policy, t, history, rng, reward)
    s1, c1, v1 = _mail(rng, first, w1, click, conv)
    seen = [
        _first_wave_view(waves, s1[s], c1[s], v1[s], env.value[s], env.value_shape, rng) for s in range(env.n_segments)
    ]
    # the first wave is this period's most recent (partial) evidence; it is replaced by the
    # whole period's once the period is over
    w2 = _weights(policy, t, [h + [v] for h, v in zip(history, seen, strict=True)], rng, reward)
    s2, c2, v2 = _mail(rng, env.batch - first, w2, click, conv)
    if trace is not None:
        propensity = np.stack([w1 / w1.sum(axis=1, keepdims=True), w2 / w2.sum(axis=1, keepdims=True)])
        trace.append({"propensity": propensity, "sends": np.stack([s1, s2]), "first_wave_seen": seen})
    return s1 + s2, c1 + c2, v1 + v2


def run_policy(
    env: Environment,
    policy: Policy,
    periods: int,
    seed: int,
    on_period: Callable[[int], None] | None = None,
    waves: Waves | None = None,
    trace: list | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative regret, cumulative conversions, cumulative expected conversions) per period.

    With `waves`, every period is mailed in two waves (see Waves); `trace`, if a list, gets one
    dict per period: each wave's propensities and sends (2, S, K) and what the engine saw of the
    first wave before the second."""
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
        if waves is None:
            sends, clicks, convs = _mail(rng, env.batch, _weights(policy, t, history, rng, reward), click, conv)
        else:
            sends, clicks, convs = _period_in_waves(env, waves, policy, t, history, rng, reward, click, conv, trace)
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
    waves: Waves | None = None,
) -> SimulationResult:
    """Run every policy on the same environment (same drift path) and collect curves.

    With `waves` (default: none) every period is mailed in two waves, and `result.trace[policy]`
    holds each period's per-wave propensities and sends."""
    if periods < 1:
        raise ValueError(f"periods: must be >= 1, got {periods!r}")
    if env.batch < 1:
        raise ValueError(f"batch: must be >= 1, got {env.batch!r}")
    result = SimulationResult(periods=periods, batch=env.batch)
    for name, policy in policies.items():
        callback = (lambda t, _n=name: on_period(_n, t)) if on_period else None
        trace: list | None = [] if waves is not None else None
        r, c, e = run_policy(env, policy, periods, seed, callback, waves=waves, trace=trace)
        result.regret[name], result.conversions[name], result.expected_conversions[name] = r, c, e
        if trace is not None:
            result.trace[name] = trace
    return result
