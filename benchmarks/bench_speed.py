"""Speed: weights for 8 segments x 200 arms, and assignment of 12M customers.

First, every model (independent, hierarchical, structured) with the default
AllocationConfig against a naive numpy Thompson pass (10,000 Beta draws per
segment, argmax, bincount) on the conversion and revenue objectives, timed in
the same run (`--weights-only` stops there).

MABWiser's ThompsonSampling (if installed: 10,000 predict() draws per segment, the
same number of posterior samples, binary conversion reward) is timed in the same
interleaved rounds.  The full run (without --weights-only) also times it on the
click objective, and a plain Python loop of the same sampling (random.betavariate per arm and
draw; timed on 1 segment x 1,000 draws and extrapolated x80, which is stated).

Run:  python benchmarks/bench_speed.py [--quick] [--weights-only] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bandit import AllocationConfig, ArmStats, allocate_segments, assign  # noqa: E402


def campaign(seed: int = 0, sends_per_arm: int = 750):
    rng = np.random.default_rng(seed)
    segs = []
    for _ in range(8):
        p = rng.uniform(0.02, 0.05, 200)
        n = np.full(200, sends_per_arm)
        c = rng.binomial(n, p)
        v = rng.binomial(c, 0.1)
        segs.append(ArmStats(n, c, v, v * 50.0))
    return segs


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def naive_pass(segs, objective: str, n_draws: int = 10_000) -> None:
    """The floor: one naive numpy Thompson pass per segment (Beta draws, argmax, bincount)."""
    rng = np.random.default_rng(0)
    for s in segs:
        theta = rng.beta(1 + s.clicks, 1 + s.sends - s.clicks, size=(n_draws, s.n_arms))
        theta *= rng.beta(1 + s.conversions, 1 + s.clicks - s.conversions, size=(n_draws, s.n_arms))
        if objective == "revenue":
            theta *= (1 + s.revenue) / rng.gamma(1 + s.conversions, size=(n_draws, s.n_arms))
        np.bincount(theta.argmax(axis=1), minlength=s.n_arms)


def mabwiser_job(segs, n_draws: int = 10_000):
    """MABWiser's ThompsonSampling fitted on the same counts (binary reward = converted), one MAB
    per segment, or None if not installed.  The job is what a period costs it: predict() for
    n_draws customers per segment (one posterior sample per customer); the fit is not timed."""
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError:
        return None
    mabs = []
    for seg_index, s in enumerate(segs):
        sends = s.sends.astype(np.int64)
        decisions = np.repeat(np.arange(s.n_arms), sends)
        rewards = np.zeros(decisions.size)
        starts = np.r_[0, np.cumsum(sends)[:-1]]
        for arm in np.flatnonzero(s.conversions):
            rewards[starts[arm] : starts[arm] + int(s.conversions[arm])] = 1.0
        mab = MAB(list(range(s.n_arms)), LearningPolicy.ThompsonSampling(), seed=seg_index)
        mab.fit(decisions, rewards)
        mabs.append(mab)
    contexts = np.zeros((n_draws, 1))
    return lambda: [mab.predict(contexts) for mab in mabs]


def weights_against_naive(repeat: int) -> None:
    """Every model with the default AllocationConfig against the naive pass, same run.

    Counts after three weekly periods of the 12M case (2,250 sends per arm and
    segment).  Candidates are timed in interleaved rounds (best of `repeat`), so a
    burst of load from other processes hits them alike; one thread each
    (max_workers=1), like the naive pass.  MABWiser's Thompson sampling (if
    installed) has no funnel or revenue model: it is timed on the binary
    conversion reward, and the same job stands in the revenue rows.
    """
    from bandit import FactorDesign

    segs = campaign(sends_per_arm=2_250)
    design = FactorDesign.full_factorial(4, 5, 10)
    mabwiser = mabwiser_job(segs)
    print(f"weights for 8 x 200 arms, default AllocationConfig, one thread, best of {repeat} interleaved rounds")
    if mabwiser is None:
        print("  MABWiser not installed (pip install -r benchmarks/requirements.txt): its row is left out")
    for objective in ("conversion", "revenue"):
        jobs = {"naive numpy pass": lambda o=objective: naive_pass(segs, o)}
        for model in ("independent", "hierarchical", "structured"):
            cfg = AllocationConfig(objective=objective, model=model)
            d = design if model == "structured" else None
            jobs[model] = lambda cfg=cfg, d=d: allocate_segments(segs, cfg, seed=0, design=d, max_workers=1)
        if mabwiser is not None:
            jobs["MABWiser TS"] = mabwiser
        best = {name: float("inf") for name in jobs}
        for _ in range(repeat):
            for name, fn in jobs.items():
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
        floor = best["naive numpy pass"]
        for name, t in best.items():
            print(f"  {objective:<10} {name:<17} {t:6.3f} s   {t / floor:4.2f}x the naive pass")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--weights-only", action="store_true", help="only the per-model weights vs the naive pass")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    weights_against_naive(2 if args.quick else args.repeat)
    if args.weights_only:
        return
    segs = campaign()
    print("weights for 8 segments x 200 arms, 10,000 MC draws (week-1 data: every arm a contender)")
    for objective in ("click", "conversion", "revenue"):
        cfg = AllocationConfig(objective=objective, model="independent")
        t = best_of(lambda cfg=cfg: allocate_segments(segs, cfg, seed=0))
        print(f"  engine independent, {objective:<10}: {t:.3f} s")
    cfg = AllocationConfig(objective="conversion", model="independent", sharpen=1.0, optimistic=False)
    t = best_of(lambda: allocate_segments(segs, cfg, seed=0))
    print(f"  engine independent, conversion, plain TS weights (sharpen=1, no optimism): {t:.3f} s")
    cfg = AllocationConfig(model="hierarchical")
    print(f"  engine hierarchical, conversion: {best_of(lambda: allocate_segments(segs, cfg, seed=0)):.3f} s")
    from bandit import FactorDesign

    design = FactorDesign.full_factorial(4, 5, 10)
    cfg = AllocationConfig(model="structured")
    t = best_of(lambda: allocate_segments(segs, cfg, seed=0, design=design), 1)
    print(f"  engine structured, conversion  : {t:.3f} s")
    late = campaign(sends_per_arm=20_000)
    cfg = AllocationConfig(model="independent")
    t = best_of(lambda: allocate_segments(late, cfg, seed=0))
    print(f"  engine independent, conversion, late campaign (arms pruned): {t:.3f} s")

    # plain Python loop of the same sampling (click objective: one Beta per arm)
    draws = 200 if args.quick else 1000
    s0 = segs[0]
    a = (1 + s0.clicks).tolist()
    b = (1 + s0.sends - s0.clicks).tolist()
    rnd = random.Random(0)
    t = time.perf_counter()
    wins = [0] * 200
    for _ in range(draws):
        best, arg = -1.0, 0
        for i in range(200):
            x = rnd.betavariate(a[i], b[i])
            if x > best:
                best, arg = x, i
        wins[arg] += 1
    loop = (time.perf_counter() - t) * (10_000 / draws) * 8
    print(f"  plain Python loop, click (extrapolated from 1 segment x {draws} draws): {loop:.1f} s")

    try:
        from mabwiser.mab import MAB, LearningPolicy

        mabs = []
        for s in segs:
            m = MAB(list(range(200)), LearningPolicy.ThompsonSampling(), seed=0)
            dec = np.repeat(np.arange(200), s.sends.astype(int))
            rew = np.zeros(dec.size)
            starts = np.r_[0, np.cumsum(s.sends.astype(int))[:-1]]
            for i in range(200):
                rew[starts[i] : starts[i] + int(s.clicks[i])] = 1
            m.fit(dec, rew)
            mabs.append(m)
        n = 1000 if args.quick else 10_000
        t = time.perf_counter()
        for m in mabs:
            m.predict(np.zeros((n, 1)))
        mw = (time.perf_counter() - t) * (10_000 / n)
        print(f"  MABWiser ThompsonSampling, click, 8 x predict(10,000): {mw:.2f} s")
    except ImportError:
        print("  MABWiser not installed (pip install -r benchmarks/requirements.txt)")

    n = 1_200_000 if args.quick else 12_000_000
    w = np.random.default_rng(1).dirichlet(np.ones(200))
    t = best_of(lambda: assign(n, w, 0.1, seed=0), 2)
    print(f"assign {n:,} customers to 200 arms + 10 % holdout: {t:.2f} s")
    rng = random.Random(0)
    cum = np.cumsum(np.r_[0.1, 0.9 * w]).tolist()
    m = 200_000
    t = time.perf_counter()
    import bisect

    arms = [bisect.bisect_right(cum, rng.random()) - 1 for _ in range(m)]
    loop = (time.perf_counter() - t) * n / m
    print(f"  plain Python loop (bisect per customer, {len(arms):,} timed), extrapolated to {n:,}: {loop:.1f} s")


if __name__ == "__main__":
    main()
