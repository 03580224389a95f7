"""Calibration of P(best) in the email case, and how much weight the truly best variant gets.

The factorial email case of bench_email.py (200 variants x 8 segments, conversions per send) is
run for `--periods` weekly periods with the default engine (AllocationConfig(), structured model:
the campaign has factors); then the honest P(best) of every (segment, variant) is binned and
compared with the share of the bin that is truly best.  Calibrated: in the bin around p, about a
share p are the true best.  Also printed: the weight the default puts on each segment's top
variant and on the true best.

Run:  python benchmarks/bench_calibration.py --seeds 0,1,2,3,4 --customers 12000000
      python benchmarks/bench_calibration.py --quick
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bandit import AllocationConfig, Model, allocate_segments, combine_periods  # noqa: E402
from bandit.simulate import factorial_environment, thompson_policy  # noqa: E402
from bandit.stats import ArmStats  # noqa: E402

BINS = np.array([0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0 + 1e-9])


def one_world(customers: int, seed: int, periods: int, config: AllocationConfig):
    env = factorial_environment(customers=customers, periods=10, seed=seed)
    policy = thompson_policy(env, config)
    rng = np.random.default_rng(seed)
    history: list[list[ArmStats]] = [[] for _ in range(env.n_segments)]
    reward = env.reward()
    for t in range(periods):
        w = policy(t, history, rng)
        for s in range(env.n_segments):
            sends = rng.multinomial(env.batch, w[s] / w[s].sum()).astype(float)
            clicks = rng.binomial(sends.astype(np.int64), env.click[s]).astype(float)
            convs = rng.binomial(clicks.astype(np.int64), env.conv[s]).astype(float)
            history[s].append(ArmStats(sends, clicks, convs, convs * 60.0))
    stats = [combine_periods(p) for p in history]
    out = allocate_segments(stats, replace(config, objective=env.objective), seed=seed, design=env.design)
    best = reward.argmax(axis=1)
    p_best = np.stack([a.p_best for a in out])
    weights = np.stack([a.weights for a in out])
    truth = np.zeros_like(p_best)
    truth[np.arange(env.n_segments), best] = 1.0
    return p_best, weights, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--customers", type=int, default=12_000_000)
    parser.add_argument("--periods", type=int, default=3, help="periods of data before the P(best) is read")
    parser.add_argument("--model", default="structured", choices=[m.value for m in Model])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        seeds, args.customers = seeds[:1], 200_000
    config = AllocationConfig(model=Model(args.model))
    ps, ws, ts = [], [], []
    for seed in seeds:
        p, w, t = one_world(args.customers, seed, args.periods, config)
        ps.append(p), ws.append(w), ts.append(t)
    p, w, t = np.concatenate(ps), np.concatenate(ws), np.concatenate(ts)
    print(f"{args.customers:,} customers, {args.model} model, P(best) after {args.periods} periods, "
          f"{len(seeds)} worlds x {p.shape[0] // len(seeds)} segments")
    print(f"{'P(best) bin':<14} {'variants':>9} {'mean P(best)':>13} {'truly best':>11} {'+- SE':>7}")
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        sel = (p >= lo) & (p < hi)
        n = int(sel.sum())
        if n == 0:
            continue
        share = t[sel].mean()
        se = np.sqrt(max(share * (1 - share), 1e-12) / n)
        print(f"[{lo:.2f}, {min(hi, 1.0):.2f}) {n:>9} {p[sel].mean():>13.3f} {share:>11.3f} {se:>7.3f}")
    rows = np.arange(p.shape[0])
    truth = t.argmax(axis=1)
    print(f"segments whose top-weight variant is the true best: {(w.argmax(axis=1) == truth).mean():.0%}")
    print(f"weight on the top variant: median {np.median(w.max(axis=1)):.2f}, "
          f"on the true best: median {np.median(w[rows, truth]):.2f}")
    print(f"honest P(best) of the true best: median {np.median(p[rows, truth]):.2f}; "
          f"sum over segments of P(best) of the true best / number of segments = {p[rows, truth].mean():.2f}")


if __name__ == "__main__":
    main()
