"""Profit per send of the conversion objective vs the profit objective.

World: four discount levels (0%, 10%, 25%, 40% off).  Deeper discounts convert
more (4.0%, 4.4%, 5.0%, 5.8% of sends) but earn less: gross margin 50% on a
mean order of 60, the discount is paid out of it, and every arm loses 0.2% of
its recipients to unsubscribes worth 10 each.  True profit per send:
1.18, 1.036, 0.73, 0.328 -- the deepest discount is the worst.

Each policy allocates 20 periods of 2,000 sends with the real engine
(bandit.allocate); the baseline is an even split, measured in the same run.
Prints realised profit per send and the share of sends on the deepest discount.

    nice -n 10 .venv/bin/python benchmarks/bench_profit.py [--seeds 5]
"""

from __future__ import annotations

import argparse

import numpy as np

from bandit import AllocationConfig, ArmStats, allocate
from bandit.profit import ArmEconomics

DISCOUNT = np.array([0.0, 0.10, 0.25, 0.40])
CONVERSION = np.array([0.040, 0.044, 0.050, 0.058])
CLICK = 0.2
ORDER = 60.0
MARGIN = 0.5
UNSUB_RATE = 0.002
UNSUB_COST = 10.0
PERIODS = 20
SENDS = 2000
ECONOMICS = ArmEconomics(MARGIN, DISCOUNT, np.zeros(4), UNSUB_COST)
TRUE_PROFIT = CONVERSION * ORDER * (MARGIN - DISCOUNT) - UNSUB_RATE * UNSUB_COST


def run(policy: str, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    k = len(DISCOUNT)
    tot = np.zeros((5, k))  # sends, clicks, conversions, revenue, unsubscribes
    profit = 0.0
    for period in range(PERIODS):
        if policy == "even":
            w = np.full(k, 1.0 / k)
        else:
            stats = ArmStats(*tot[:4], unsubscribes=tot[4])
            cfg = (
                AllocationConfig(objective="profit", economics=ECONOMICS, n_draws=2000)
                if policy == "profit"
                else AllocationConfig(objective="conversion", n_draws=2000)
            )
            w = allocate(stats, cfg, seed=seed * 1000 + period).weights
        sends = rng.multinomial(SENDS, w).astype(float)
        clicks = rng.binomial(sends.astype(int), CLICK).astype(float)
        conv = rng.binomial(clicks.astype(int), CONVERSION / CLICK).astype(float)
        revenue = np.array([rng.exponential(ORDER, int(c)).sum() for c in conv])
        unsubs = rng.binomial(sends.astype(int), UNSUB_RATE).astype(float)
        profit += float((revenue * (MARGIN - DISCOUNT)).sum() - unsubs.sum() * UNSUB_COST)
        tot += np.stack([sends, clicks, conv, revenue, unsubs])
    total_sends = tot[0].sum()
    return profit / total_sends, float(tot[0, -1] / total_sends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"true profit per send by discount {DISCOUNT.tolist()}: {np.round(TRUE_PROFIT, 3).tolist()}")
    print(f"{PERIODS} periods x {SENDS} sends, {args.seeds} seeds (mean over seeds)")
    print(f"{'policy':<12}{'profit/send':>12}{'share on 40% off':>18}")
    for policy in ("even", "conversion", "profit"):
        results = np.array([run(policy, seed) for seed in range(args.seeds)])
        print(f"{policy:<12}{results[:, 0].mean():>12.3f}{results[:, 1].mean():>18.1%}")


if __name__ == "__main__":
    main()
