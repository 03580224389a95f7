"""Lai-Robbins: our regret over time beside the asymptotic lower bound sum_i Delta_i / KL(mu_i, mu*) log T.

K = 10 and 100 Bernoulli arms, best 0.5, others 0.5 - eps, eps = 0.1 and 0.02.
Policies: plain per-step TS and the engine's batch allocation (batches of 10 steps).

Run:  python benchmarks/bench_lai_robbins.py            # T = 10^5, 20 runs
      python benchmarks/bench_lai_robbins.py --quick    # T = 10^4, 5 runs
"""

from __future__ import annotations

import argparse

import numpy as np
from _runs import EngineSettings, simulate_runs


def kl_bernoulli(p: float, q: float) -> float:
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.horizon = 5, 10_000
    checkpoints = np.unique(np.logspace(2, np.log10(args.horizon), 4).astype(int))
    print(f"runs = {args.runs}; regret = sum of gaps of the chosen arms (expected regret)")
    for k in (10, 100):
        for eps in (0.1, 0.02):
            rates = np.r_[0.5, np.full(k - 1, 0.5 - eps)]
            bound_coef = (k - 1) * eps / kl_bernoulli(0.5 - eps, 0.5)
            fixed = {"rates": rates, "retire_prob": 0, "checkpoints": checkpoints}
            ts, _ = simulate_runs(args.runs, args.horizon, 1, "plain_ts", **fixed)
            eng, _ = simulate_runs(args.runs, args.horizon, 10, "engine", EngineSettings(max_draws=1000), **fixed)
            print(f"\nK={k}, eps={eps}: lower bound = {bound_coef:.1f} log T")
            print(f"{'T':>9} {'bound':>9} {'plain TS':>9} {'engine(batch 10)':>17} {'TS/bound':>9}")
            for t, a, b in zip(checkpoints, ts, eng, strict=True):
                bound = bound_coef * np.log(t)
                print(f"{t:>9,} {bound:>9.0f} {a:>9.0f} {b:>17.0f} {a / bound:>9.2f}")


if __name__ == "__main__":
    main()
