"""Chapelle & Li (2011), Table 1: regret with feedback delayed by delta steps.

10 items, click rates ~ Beta(4, 4); at each step with probability 1e-3 a random
item retires and is replaced by a fresh one (prior Beta(1, 1)); feedback is
applied every delta steps; regret = sum over steps of (best rate - chosen rate).

Every policy of one delta sees the same environment (rates and retirements), so
differences to plain TS are paired per run; the table prints mean regret +- its
standard error over runs and the paired difference to plain TS +- its SE.

Engine P(best) uses min(max_draws, 3 delta) Monte Carlo draws per block (max_draws
= 1000; the service uses 10,000): SE of each P(best) <= 0.5/sqrt(draws) = 0.029 at
delta = 100 and 0.016 at delta >= 316.  With only delta draws per block (an earlier version) the noisy weights
cost +1.4 % regret at delta = 100: unbiased on average, but the block's choices are
correlated, which wastes exploration.  At delta = 1 (one choice per block) the engine
is simulated by per-step draws of the tuned posterior: the same distribution (not for
settings with a burn-in, such as `default`: those compute weights every step).

`default` is AllocationConfig() as the service runs it (sharpen 2, optimistic, floor 0,
per-arm burn-in of 10 sends); `old_default` is floor 0.02 with sharpen 1.

Run:  python benchmarks/bench_chapelle_li.py                       # T = 10^6, 100 runs, all deltas, all variants
      python benchmarks/bench_chapelle_li.py --deltas 100,316,1000 --variants all --out cl.json
      python benchmarks/bench_chapelle_li.py --quick                 # T = 10^5, 10 runs, smoke test
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _runs import EngineSettings, check_engine_parity, simulate_runs

PAPER_TS = {1: 9105, 3: 9199, 10: 9049, 32: 9451, 100: 11550, 316: 21594, 1000: 59256}

VARIANTS = {
    "default": EngineSettings.defaults(),  # AllocationConfig(): what the service runs
    "floor0": EngineSettings(),
    "old_default": EngineSettings(floor=0.02),  # floor 0.02, sharpen 1
    "sharpen2": EngineSettings(sharpen=2.0),
    "sharpen4": EngineSettings(sharpen=4.0),
    "optimistic": EngineSettings(optimistic=True),
    "top_two": EngineSettings(top_two=0.5),
    "sharpen2_optimistic": EngineSettings(sharpen=2.0, optimistic=True),
    "sharpen2_optimistic_floor": EngineSettings(sharpen=2.0, optimistic=True, floor=0.02),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=1_000_000)
    parser.add_argument("--deltas", default="1,3,10,32,100,316,1000")
    parser.add_argument(
        "--variants", default="all", help="'all' or comma-separated names: " + ", ".join(VARIANTS)
    )
    parser.add_argument("--max-draws", type=int, default=1000, help="cap on MC draws per block")
    parser.add_argument("--quick", action="store_true", help="T=10^5, 10 runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="append per-run regrets as JSON lines to this file")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity check against bandit.allocate")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.horizon = 10, 100_000
    deltas = [int(d) for d in args.deltas.split(",")]
    names = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if not args.no_parity:
        print(f"engine batched-vs-allocate() parity: max |w diff| = {check_engine_parity():.4f} (MC error only)")
    print(f"T = {args.horizon:,}, runs = {args.runs}, seed = {args.seed}; regret averaged over runs (+- SE)")
    if args.horizon != 1_000_000:
        print("(paper column is at T = 10^6 and is not comparable at another horizon)")
    for delta in deltas:
        start = time.perf_counter()
        _, plain = simulate_runs(args.runs, args.horizon, delta, "plain_ts", seed=args.seed)
        se = plain.std(ddof=1) / np.sqrt(args.runs)
        print(f"\ndelta = {delta}: paper TS {PAPER_TS.get(delta, float('nan')):,.0f}")
        elapsed = time.perf_counter() - start
        print(f"  {'plain TS':<22} {plain.mean():>9,.0f} +- {se:>5,.0f}   [{elapsed:.0f}s]", flush=True)
        record = {"delta": delta, "runs": args.runs, "horizon": args.horizon, "seed": args.seed,
                  "plain_ts": plain.tolist()}  # fmt: skip
        for name in names:
            start = time.perf_counter()
            settings = EngineSettings(**{**VARIANTS[name].__dict__, "max_draws": args.max_draws})
            _, eng = simulate_runs(args.runs, args.horizon, delta, "engine", settings, seed=args.seed)
            diff = eng - plain
            print(
                f"  {name:<22} {eng.mean():>9,.0f} +- {eng.std(ddof=1) / np.sqrt(args.runs):>5,.0f}"
                f"   ratio {eng.mean() / plain.mean():.3f}"
                f"   diff vs TS {diff.mean():>+8,.0f} +- {diff.std(ddof=1) / np.sqrt(args.runs):>5,.0f}"
                f"   [{time.perf_counter() - start:.0f}s]",
                flush=True,
            )
            record[name] = eng.tolist()
            if args.out:  # after every cell, so partial runs survive
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({**record, "cell": name}) + "\n")


if __name__ == "__main__":
    main()
