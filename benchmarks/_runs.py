"""Bernoulli bandit simulation vectorised across independent runs (shared by the
Chapelle-Li and Lai-Robbins benchmarks).

Each of R runs has K arms.  Time advances in *chunks*: maximal stretches of steps
in which neither the posterior (feedback arrives only at the end of each block of
`delta` steps) nor the true rates (an arm may retire at any step) change, so a
chunk's choices are drawn with one vectorised call.

Policies
  plain_ts   per-step Thompson sampling: a fresh posterior draw for every step
             (with a stale posterior inside a block, as in Chapelle & Li).
  engine     our batch allocation: at each block start the weights are computed
             once from the posterior (P(best) from min(max_draws, 3 delta) Monte
             Carlo draws -- max_draws = 1000 by default, SE <= 0.016 -- optional
             sharpening / optimism / top-two / floor, exactly the maths of
             bandit.allocate) and stay fixed for the whole block.  When an arm
             retires mid-block the arm set changes, so that run's weights are
             recomputed (as the service does when a variant is replaced) from the
             same stale posterior -- no feedback is applied early.

For speed the engine's maths is batched over the R runs here (bandit.allocate
handles one segment per call and 10^6 calls would take hours); `check_engine_parity`
verifies on random posteriors that the batched weights equal bandit.allocate's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bandit import AllocationConfig, ArmStats, allocate  # noqa: E402

# MC draws per block = min(max_draws, DRAWS_PER_STEP * delta); see bench_chapelle_li.py
DRAWS_PER_STEP = 3


@dataclass(frozen=True)
class EngineSettings:
    sharpen: float = 1.0
    optimistic: bool = False
    top_two: float | None = None
    floor: float = 0.0
    # AllocationConfig.burn_in_min_sends (per-arm burn-in); an arm counts the sends whose
    # feedback has been applied (the service also counts sends still awaiting it)
    burn_in: int = 0
    max_draws: int = 1000  # MC draws per block (see module doc)

    @classmethod
    def defaults(cls) -> EngineSettings:
        """The engine exactly as AllocationConfig() configures it (what the service uses)."""
        d = AllocationConfig()
        return cls(d.sharpen, d.optimistic, d.top_two, d.floor, d.burn_in_min_sends)

    def label(self) -> str:
        parts = []
        if self.sharpen != 1.0:
            parts.append(f"sharpen={self.sharpen:g}")
        if self.optimistic:
            parts.append("optimistic")
        if self.top_two is not None:
            parts.append(f"top_two={self.top_two:g}")
        if self.floor:
            parts.append(f"floor={self.floor:g}")
        if self.burn_in:
            parts.append(f"burn_in={self.burn_in}")
        return "engine(" + ", ".join(parts) + ")" if parts else "engine(default)"

    def config(self) -> AllocationConfig:
        return AllocationConfig(
            objective="click",
            floor=self.floor,
            sharpen=self.sharpen,
            optimistic=self.optimistic,
            top_two=self.top_two,
            burn_in_min_sends=self.burn_in,
            prune_eps=0.0,
        )


def _gamma(rng, shape, size):
    return rng.standard_gamma(np.broadcast_to(shape, size).astype(np.float32), dtype=np.float32)


def _beta_draws(rng, succ, fail, n, sharpen=1.0):
    """(R, n, K) draws from Beta(1 + c S, 1 + c F)."""
    r, k = succ.shape
    size = (r, n, k)
    a = (1.0 + sharpen * succ)[:, None, :]
    b = (1.0 + sharpen * fail)[:, None, :]
    x = _gamma(rng, a, size)
    y = _gamma(rng, b, size)
    return x / (x + y)


def top_two_rows(p: np.ndarray, leader_share: float) -> np.ndarray:
    """Row-wise bandit.weights.top_two_weights (same formula, vectorised over runs)."""
    one_minus = np.maximum(1.0 - p, 1e-12)
    ratio = np.where(p < 1.0 - 1e-12, p / one_minus, 0.0)
    challenger = p * (ratio.sum(axis=1, keepdims=True) - ratio)
    total = challenger.sum(axis=1, keepdims=True)
    leader_only = np.isclose(p.max(axis=1, keepdims=True), 1.0) | (total <= 0)
    mixed = leader_share * p + (1.0 - leader_share) * challenger / np.where(total > 0, total, 1.0)
    return np.where(leader_only, p, mixed)


def burn_in_rows(t: np.ndarray, short: np.ndarray) -> np.ndarray:
    """Row-wise bandit.weights.burn_in_weights (same formula, vectorised over runs)."""
    r, k = t.shape
    g = 1.0 / k
    w = np.where(short, np.maximum(t, g), t)
    short_mass = np.where(short, w, 0.0).sum(axis=1, keepdims=True)
    long_mass = np.where(short, 0.0, t).sum(axis=1, keepdims=True)
    rest = 1.0 - short_mass
    n_long = (~short).sum(axis=1, keepdims=True)
    scale = np.where(long_mass > 0, rest / np.where(long_mass > 0, long_mass, 1.0), 0.0)
    w = np.where(short, w, np.where(long_mass > 0, t * scale, rest / np.maximum(n_long, 1)))
    over = (rest <= 0).ravel()
    if over.any():
        excess = np.where(short[over], np.maximum(t[over] - g, 0.0), 0.0)
        n_short = short[over].sum(axis=1, keepdims=True)
        w[over] = np.where(short[over], g + (1.0 - n_short * g) * excess / excess.sum(axis=1, keepdims=True), 0.0)
    w[short.all(axis=1)] = g
    return w


def engine_weights(rng, succ, fail, settings: EngineSettings, n_draws: int) -> np.ndarray:
    """(R, K) weights: batched version of bandit.allocate for click-rate Beta arms."""
    draws = _beta_draws(rng, succ, fail, n_draws, settings.sharpen)
    if settings.optimistic:
        mean = ((1.0 + settings.sharpen * succ) / (2.0 + settings.sharpen * (succ + fail)))[:, None, :]
        draws = np.maximum(draws, mean.astype(np.float32))
    r, _, k = draws.shape
    winners = draws.argmax(axis=2) + (np.arange(r) * k)[:, None]
    p = np.bincount(winners.ravel(), minlength=r * k).reshape(r, k) / n_draws
    if settings.top_two is not None:
        p = top_two_rows(p, settings.top_two)
    if settings.burn_in:
        short = (succ + fail) < settings.burn_in
        if short.any():
            p = burn_in_rows(p, short)
    if settings.floor:
        p = settings.floor / k + (1.0 - settings.floor) * p  # apply_floor; cap = 1 is a no-op
    return p


def check_engine_parity(seed: int = 0) -> float:
    """Max |batched weights - bandit.allocate weights| on random posteriors (MC error only)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for settings in (
        EngineSettings(),
        EngineSettings(sharpen=3.0, top_two=0.5, floor=0.1),
        EngineSettings.defaults(),
        EngineSettings(burn_in=60),
    ):
        succ = rng.integers(0, 50, (3, 5)).astype(float)
        fail = succ + rng.integers(0, 100, (3, 5))
        succ[:, 0] = fail[:, 0] = 0.0  # a new arm: below any burn-in
        batched = engine_weights(rng, succ, fail, settings, 200_000)
        for i in range(3):
            sends = succ[i] + fail[i]
            stats = ArmStats(sends, succ[i], np.zeros(5), np.zeros(5))
            cfg = settings.config()
            cfg = AllocationConfig(**{**cfg.__dict__, "n_draws": 200_000})
            worst = max(worst, float(np.abs(allocate(stats, cfg, seed=i).weights - batched[i]).max()))
    return worst


def simulate_runs(
    runs: int,
    horizon: int,
    delta: int,
    policy: str,
    settings: EngineSettings | None = None,
    *,
    seed: int = 0,
    n_arms: int = 10,
    rates: np.ndarray | None = None,
    retire_prob: float = 1e-3,
    checkpoints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean cumulative regret at `checkpoints` (default: horizon) and per-run totals.

    rates None: rates drawn from Beta(4, 4) per run and arm (Chapelle & Li), and
    retiring arms are replaced by fresh Beta(4, 4) draws.  Otherwise fixed rates.
    """
    rng = np.random.default_rng(seed)
    env_rng = np.random.default_rng([seed, 7])  # same environment for every policy
    if rates is None:
        true = env_rng.beta(4, 4, (runs, n_arms))
    else:
        true = np.tile(np.asarray(rates, dtype=float), (runs, 1))
        n_arms = true.shape[1]
    # pre-draw retirements: (time, run, arm, new rate), sorted by time
    if retire_prob > 0:
        counts = env_rng.binomial(horizon, retire_prob, runs)
        ev_run = np.repeat(np.arange(runs), counts)
        ev_time = env_rng.integers(1, horizon, ev_run.size)
        order = np.argsort(ev_time, kind="stable")
        ev_time, ev_run = ev_time[order], ev_run[order]
        ev_arm = env_rng.integers(0, n_arms, ev_run.size)
        ev_rate = env_rng.beta(4, 4, ev_run.size)
    else:
        ev_time = np.array([horizon], dtype=np.int64)
        ev_run = ev_arm = np.zeros(1, dtype=np.int64)
        ev_rate = np.zeros(1)
    checkpoints = np.array([horizon]) if checkpoints is None else np.asarray(checkpoints)
    succ = np.zeros((runs, n_arms))
    fail = np.zeros((runs, n_arms))
    pend_s = np.zeros((runs, n_arms))
    pend_n = np.zeros((runs, n_arms))
    regret = np.zeros(runs)
    out = np.zeros(checkpoints.size)
    ci = 0
    flat = np.arange(runs)[:, None] * n_arms
    weights = None
    ptr = 0
    t = 0
    block_end = delta
    n_draws = min(settings.max_draws, DRAWS_PER_STEP * delta) if settings else 0
    if policy == "engine" and delta == 1 and settings.top_two is None and not settings.floor and not settings.burn_in:
        # One choice per block drawn from the (tuned) P(best) has exactly the law of
        # argmax of one (tuned) posterior draw: per-step sampling, same distribution.
        policy, tuned = "plain_ts", settings
    else:
        tuned = EngineSettings()
    while t < horizon:
        if policy == "engine" and weights is None:
            weights = engine_weights(rng, succ, fail, settings, n_draws)
            cum = np.cumsum(weights, axis=1)
            cum[:, -1] = 1.0
        next_event = ev_time[ptr] if ptr < ev_time.size else horizon
        stop = min(block_end, next_event, horizon, checkpoints[ci] if ci < checkpoints.size else horizon)
        length = stop - t
        if length > 0:
            if policy == "plain_ts":
                draws = _beta_draws(rng, succ, fail, length, tuned.sharpen)
                if tuned.optimistic:
                    mean = (1.0 + tuned.sharpen * succ) / (2.0 + tuned.sharpen * (succ + fail))
                    draws = np.maximum(draws, mean[:, None, :].astype(np.float32))
                chosen = draws.argmax(axis=2)  # (R, L)
            else:
                u = rng.random((runs, length))
                chosen = (u[:, :, None] >= cum[:, None, :]).sum(axis=2)
                np.minimum(chosen, n_arms - 1, out=chosen)
            rate = np.take_along_axis(true, chosen, axis=1)
            regret += (true.max(axis=1)[:, None] - rate).sum(axis=1)
            rewards = rng.random((runs, length)) < rate
            idx = (flat + chosen).ravel()
            pend_n += np.bincount(idx, minlength=runs * n_arms).reshape(runs, n_arms)
            pend_s += np.bincount(idx, weights=rewards.ravel(), minlength=runs * n_arms).reshape(runs, n_arms)
            t = stop
        while ci < checkpoints.size and t >= checkpoints[ci]:
            out[ci] = regret.mean()
            ci += 1
        while ptr < ev_time.size and ev_time[ptr] == t and retire_prob > 0:
            r, a = ev_run[ptr], ev_arm[ptr]
            true[r, a] = ev_rate[ptr]
            succ[r, a] = fail[r, a] = pend_s[r, a] = pend_n[r, a] = 0.0  # a new item: prior Beta(1, 1)
            ptr += 1
            if policy == "engine" and weights is not None:
                # The arm set changed: the service re-runs the allocation for this
                # campaign (no new feedback, the new arm enters with its prior).
                w = engine_weights(rng, succ[r : r + 1], fail[r : r + 1], settings, n_draws)[0]
                weights[r] = w
                cum[r] = np.cumsum(w)
                cum[r, -1] = 1.0
        if t == block_end:
            succ += pend_s
            fail += pend_n - pend_s
            pend_s[:] = 0.0
            pend_n[:] = 0.0
            block_end += delta
            weights = None
    return out, regret
