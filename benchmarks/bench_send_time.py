"""Conversions with and without send-time learning, on a world where segments prefer different windows.

World: three offers × three send windows (tue 09:00, tue 18:00, sat 11:00), two segments. The
offers rank the same in both segments (2.0%, 2.4%, 2.8% of sends convert at the best window);
the windows do not: office workers convert best on tuesday morning, families on saturday, and
every other window converts at 60% of a segment's best. Clicks: 10% of sends.

Policies, each over 12 periods of 2,000 sends per segment with the real engine
(bandit.allocate_segments, the campaign's default `auto` model, i.e. structured over the factor
levels), measured in the same run:
- `even`: every (offer × window) arm alike — no learning at all;
- `fixed window`: the engine learns the offer, every email leaves at one window (tue 09:00, the
  first), as a campaign without send windows does;
- `send windows`: the engine learns offer × window per segment (send_window as a factor);
- `oracle`: each segment's best offer at its best window, the ceiling.
Prints conversions per 1,000 sends (mean over seeds) and the ratio to `fixed window`.

    nice -n 10 .venv/bin/python benchmarks/bench_send_time.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bandit import AllocationConfig, ArmStats, FactorDesign, allocate_segments

WINDOWS = ("tue 09:00", "tue 18:00", "sat 11:00")
OFFER_CONVERSION = np.array([0.020, 0.024, 0.028])  # at a segment's best window
BEST_WINDOW = {"office": 0, "families": 2}
OTHER_WINDOWS = 0.6  # a window that is not the segment's best converts at this share
CLICK = 0.10
PERIODS = 12
SENDS = 2000  # per segment and period

N_OFFERS, N_WINDOWS = len(OFFER_CONVERSION), len(WINDOWS)
LEVELS = np.array([[o, w] for o in range(N_OFFERS) for w in range(N_WINDOWS)], dtype=np.int64)  # arm -> levels


def truth(segment: str) -> np.ndarray:
    """Conversion rate of every (offer, window) arm in a segment."""
    factor = np.where(LEVELS[:, 1] == BEST_WINDOW[segment], 1.0, OTHER_WINDOWS)
    return OFFER_CONVERSION[LEVELS[:, 0]] * factor


def _weights(policy: str, stats: list[np.ndarray], seed: int, period: int) -> list[np.ndarray]:
    k = len(LEVELS)
    if policy == "even":
        return [np.full(k, 1.0 / k)] * len(BEST_WINDOW)
    if policy == "oracle":
        return [np.eye(k)[int(np.argmax(truth(s)))] for s in BEST_WINDOW]
    if policy == "fixed window":  # offers only, all at the first window
        arms = np.flatnonzero(LEVELS[:, 1] == 0)
        design = FactorDesign(LEVELS[arms, :1], n_levels=(N_OFFERS,), names=("offer",))
        sub = [ArmStats(*s[:, arms]) for s in stats]
    else:
        arms = np.arange(k)
        design = FactorDesign(LEVELS, n_levels=(N_OFFERS, N_WINDOWS), names=("offer", "send_window"))
        sub = [ArmStats(*s) for s in stats]
    allocations = allocate_segments(sub, AllocationConfig(objective="conversion"), seed=seed * 1000 + period,
                                    design=design, max_workers=1)
    out = []
    for a in allocations:
        w = np.zeros(k)
        w[arms] = a.weights
        out.append(w)
    return out


def run(policy: str, seed: int) -> float:
    """Conversions per 1,000 sends over the whole run."""
    rng = np.random.default_rng(seed)
    k = len(LEVELS)
    stats = [np.zeros((4, k)) for _ in BEST_WINDOW]  # sends, clicks, conversions, revenue
    conversions = sends_total = 0.0
    for period in range(PERIODS):
        for s, (segment, w) in enumerate(zip(BEST_WINDOW, _weights(policy, stats, seed, period), strict=True)):
            sends = rng.multinomial(SENDS, w / w.sum())
            clicks = rng.binomial(sends, CLICK)
            conv = rng.binomial(clicks, truth(segment) / CLICK)
            stats[s] += np.stack([sends, clicks, conv, conv * 30.0]).astype(float)
            conversions += conv.sum()
            sends_total += sends.sum()
    return 1000.0 * conversions / sends_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"{len(BEST_WINDOW)} segments x {PERIODS} periods x {SENDS} sends, {N_OFFERS} offers x {N_WINDOWS} windows, "
          f"{args.seeds} seeds (mean ± sd over seeds)")
    print(f"{'policy':<14}{'conv/1000':>11}{'sd':>7}{'vs fixed':>10}{'seconds':>9}")
    results = {}
    for policy in ("even", "fixed window", "send windows", "oracle"):
        started = time.perf_counter()
        results[policy] = np.array([run(policy, seed) for seed in range(args.seeds)])
        results[policy + " time"] = time.perf_counter() - started
    for policy in ("even", "fixed window", "send windows", "oracle"):
        r = results[policy]
        ratio = r.mean() / results["fixed window"].mean()
        print(f"{policy:<14}{r.mean():>11.2f}{r.std():>7.2f}{ratio:>10.2f}{results[policy + ' time']:>9.1f}")


if __name__ == "__main__":
    main()
