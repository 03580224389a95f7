"""Chapelle & Li (2011), Table 1: regret with feedback delayed by delta steps.

10 items, click rates ~ Beta(4, 4); at each step with probability 1e-3 a random
item retires and is replaced by a fresh one (prior Beta(1, 1)); feedback is
applied every delta steps; regret = sum over steps of (best rate - chosen rate).

Run:  python benchmarks/bench_chapelle_li.py                 # T = 10^6, 100 runs (slow)
      python benchmarks/bench_chapelle_li.py --runs 20       # what benchmarks/README.md reports
      python benchmarks/bench_chapelle_li.py --quick         # T = 10^5, 10 runs, smoke test
"""

from __future__ import annotations

import argparse
import time

from _runs import EngineSettings, check_engine_parity, simulate_runs

PAPER_TS = {1: 9105, 3: 9199, 10: 9049, 32: 9451, 100: 11550, 316: 21594, 1000: 59256}

VARIANTS = [
    EngineSettings(),
    EngineSettings(sharpen=2.0),
    EngineSettings(sharpen=4.0),
    EngineSettings(optimistic=True),
    EngineSettings(top_two=0.5),
    EngineSettings(floor=0.02),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=1_000_000)
    parser.add_argument("--deltas", default="1,3,10,32,100,316,1000")
    parser.add_argument("--variants", default="all", help="'all' or 'default'")
    parser.add_argument("--quick", action="store_true", help="T=10^5, 10 runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.horizon = 10, 100_000
    deltas = [int(d) for d in args.deltas.split(",")]
    variants = VARIANTS if args.variants == "all" else VARIANTS[:1]
    print(f"engine batched-vs-allocate() parity: max |w diff| = {check_engine_parity():.4f} (MC error only)")
    print(f"T = {args.horizon:,}, runs = {args.runs}, seed = {args.seed}; regret averaged over runs")
    scale = 1_000_000 / args.horizon
    header = f"{'delta':>6} {'paper TS':>9} {'plain TS':>9}" + "".join(f" {v.label():>26}" for v in variants)
    print(header)
    for delta in deltas:
        start = time.perf_counter()
        plain, _ = simulate_runs(args.runs, args.horizon, delta, "plain_ts", seed=args.seed)
        row = f"{delta:>6} {PAPER_TS[delta] / scale if delta in PAPER_TS else float('nan'):>9.0f} {plain[0]:>9.0f}"
        for v in variants:
            eng, _ = simulate_runs(args.runs, args.horizon, delta, "engine", v, seed=args.seed)
            row += f" {eng[0]:>14.0f} ({eng[0] / plain[0]:>5.2f}x TS)"
        print(row + f"   [{time.perf_counter() - start:.0f}s]", flush=True)
    if scale != 1:
        print(f"(paper column scaled by T/10^6 = {1 / scale:g} for reference only; regret is not linear in T)")


if __name__ == "__main__":
    main()
