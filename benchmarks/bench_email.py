"""The email case: 200 variants (4 x 5 x 10) x 8 segments, mailed weekly for 10 weeks.

Click rates 2-5 %, conversion|click 5-15 %, factor main effects + segment x factor
interactions (+ a small variant residual the structured model's main effects do
not capture); outcomes are binomial per (segment, arm, week).  Objective:
conversions per send.  Policies share the environment and seed.

MABWiser's Thompson sampling (non-contextual, one MAB per segment, binary reward
= converted) is included when `mabwiser` is importable; it is used as a batch
policy: its predict() is called for 2,000 simulated customers per segment and
week, and the week's audience is split in those proportions (the same
distribution as calling it per customer, which would take hours in MABWiser).

Run:  python benchmarks/bench_email.py            # 12M and 200k customers, 3 seeds
      python benchmarks/bench_email.py --quick    # 1 seed, small audience only
      python benchmarks/bench_email.py --waves --seeds 0,1,2,3,4 --customers 200000
          # each model (default AllocationConfig) with and without waves inside every week,
          # paired over the same worlds: a first wave of --wave-share of each segment, the
          # rest --wait-hours later, allocated after the first wave's early clicks and
          # conversions (clicks: exponential delay, mean 4 h; conversions: a further
          # exponential delay after the click, mean 48 h); --pending window,expected
(MABWiser: pip install -r benchmarks/requirements.txt in a separate venv and run
the script with that venv's python.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataclasses import replace  # noqa: E402

from bandit import AllocationConfig, Model  # noqa: E402
from bandit.simulate import (  # noqa: E402
    Waves,
    default_policies,
    factorial_environment,
    oracle_policy,
    simulate,
    thompson_policy,
)

MABWISER_DRAWS = 2000

# allocation levers measured against the default config (see the Chapelle-Li benchmark)
LEVERS = {
    "sharpen2": {"sharpen": 2.0},
    "sharpen4": {"sharpen": 4.0},
    "optimistic": {"optimistic": True},
    "sharpen2_optimistic": {"sharpen": 2.0, "optimistic": True},
    "top_two": {"top_two": 0.5},
    "sharpen1": {"sharpen": 1.0, "optimistic": False, "top_two": None},
    "move50": {"max_move": 0.5},
    "move30": {"max_move": 0.3},
    "move15": {"max_move": 0.15},
    "nomove": {"max_move": 1.0},
}
MODELS = {"independent": Model.INDEPENDENT, "hierarchical": Model.HIERARCHICAL, "structured": Model.STRUCTURED}


def mabwiser_policy(env, seed: int):
    """Batch policy backed by MABWiser ThompsonSampling, or None if not installed."""
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError:
        return None
    arms = list(range(env.n_arms))
    bandits = [MAB(arms, LearningPolicy.ThompsonSampling(), seed=seed + s) for s in range(env.n_segments)]
    fitted = [False] * env.n_segments
    seen = [0] * env.n_segments

    def policy(t, history, rng):
        w = np.zeros((env.n_segments, env.n_arms))
        for s, periods in enumerate(history):
            # feed MABWiser the new period's per-customer decisions and rewards
            for stats in periods[seen[s]:]:
                sends = stats.sends.astype(np.int64)
                decisions = np.repeat(arms, sends)
                rewards = np.zeros(decisions.size)
                starts = np.r_[0, np.cumsum(sends)[:-1]]
                for a in np.flatnonzero(stats.conversions):
                    rewards[starts[a] : starts[a] + int(stats.conversions[a])] = 1.0
                if fitted[s]:
                    bandits[s].partial_fit(decisions, rewards)
                else:
                    bandits[s].fit(decisions, rewards)
                    fitted[s] = True
            seen[s] = len(periods)
            if not fitted[s]:
                w[s] = 1.0 / env.n_arms
                continue
            picks = bandits[s].predict(np.zeros((MABWISER_DRAWS, 1)))
            w[s] = np.bincount(np.asarray(picks, dtype=np.int64), minlength=env.n_arms) / MABWISER_DRAWS
        return w

    return policy


def run(customers: int, seeds: list[int], n_draws: int, levers=(), lever_models=("structured",), keep=None) -> None:
    print(f"\n=== {customers:,} customers: 8 segments x 200 variants, 10 weekly sends ===")
    totals: dict[str, list[dict]] = {}
    for seed in seeds:
        env = factorial_environment(customers=customers, periods=10, seed=seed)
        config = AllocationConfig(n_draws=n_draws)
        policies = default_policies(env, config)
        oracle = policies.pop("oracle")
        if keep:
            policies = {k: v for k, v in policies.items() if k in keep}
        for lever in levers:
            for model in lever_models:
                cfg = replace(config, model=MODELS[model], **LEVERS[lever])
                policies[f"{model[:5]}_{lever}"] = thompson_policy(env, cfg)
        policies["oracle"] = oracle
        mw = mabwiser_policy(env, seed)
        if mw is not None:
            oracle = policies.pop("oracle")
            policies = {**policies, "mabwiser_ts": mw, "oracle": oracle}
        start = time.perf_counter()
        result = simulate(env, policies, periods=10, seed=seed)
        shares = ", ".join(f"{r['policy']} {r['share_of_oracle']:.1%}" for r in result.summary())
        print(f"seed {seed}: {time.perf_counter() - start:.0f}s; {shares}", flush=True)
        oracle_per_period = np.diff(result.expected_conversions["oracle"], prepend=0.0)
        for name in result.expected_conversions:
            per = np.diff(result.expected_conversions[name], prepend=0.0) / oracle_per_period
            print(f"  {name:<24} " + " ".join(f"{x:5.1%}" for x in per), flush=True)
        for row in result.summary():
            per_period = np.diff(result.expected_conversions[row["policy"]], prepend=0.0) / oracle_per_period
            totals.setdefault(row["policy"], []).append({**row, "per_period": per_period})
    print(f"{'policy':<26} {'share of oracle':>16} {'regret (conv. lost)':>20} {'+- SE':>7} {'conversions':>12}")
    means = {}
    for name, rows in totals.items():
        share = np.mean([r["share_of_oracle"] for r in rows])
        regrets = np.array([r["regret"] for r in rows])
        regret = regrets.mean()
        se = regrets.std(ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else float("nan")
        conv = np.mean([r["conversions"] for r in rows])
        means[name] = regret
        print(f"{name:<26} {share:>15.1%} {regret:>20,.0f} {se:>7,.0f} {conv:>12,.0f}")
    print("share of the oracle's expected conversions in each period (mean over seeds):")
    for name, rows in totals.items():
        if name == "oracle":
            continue
        per = np.mean([r["per_period"] for r in rows], axis=0)
        print(f"  {name:<24} " + " ".join(f"{x:5.1%}" for x in per))
    base = {"indep": "independent_ts", "hiera": "hierarchical_ts", "struc": "structured_ts"}
    for name, rows in totals.items():
        if name[:5] in base and name != base[name[:5]] and base[name[:5]] in totals:
            diff = np.array([r["regret"] for r in rows]) - np.array([r["regret"] for r in totals[base[name[:5]]]])
            se = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else float("nan")
            print(f"  {name} - {base[name[:5]]}: regret {diff.mean():+,.0f} +- {se:,.0f} (paired over seeds)")
    if "structured_ts" in means and "independent_ts" in means:
        print(f"structured regret / independent TS regret = {means['structured_ts'] / means['independent_ts']:.2f}")
        if "mabwiser_ts" in means:
            print(f"structured regret / MABWiser TS regret    = {means['structured_ts'] / means['mabwiser_ts']:.2f}")
        else:
            print("MABWiser not installed: see benchmarks/README.md")


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(se)


def run_waves(
    customers: int, seeds: list[int], n_draws: int, waves: list[Waves], models: list[str], out: str = ""
) -> None:
    """Each model with and without waves on the same worlds (paired over seeds)."""
    names = ["no waves"] + [f"waves, pending={w.pending}" for w in waves]
    print(
        f"\n=== {customers:,} customers, 10 weekly sends, waves: share {waves[0].share:.0%} then the rest "
        f"{waves[0].wait_hours:g} h later (P(click due) {waves[0].click_due:.3f}, "
        f"P(conversion due) {waves[0].conversion_due:.3f}) ==="
    )
    shares: dict[tuple[str, str], list[float]] = {}
    per_week: dict[tuple[str, str], list[np.ndarray]] = {}
    for seed in seeds:
        env = factorial_environment(customers=customers, periods=10, seed=seed)
        start = time.perf_counter()
        for name, wave in zip(names, [None, *waves], strict=True):
            policies = {m: thompson_policy(env, AllocationConfig(n_draws=n_draws, model=MODELS[m])) for m in models}
            policies["oracle"] = oracle_policy(env)
            result = simulate(env, policies, periods=10, seed=seed, waves=wave)
            oracle = np.diff(result.expected_conversions["oracle"], prepend=0.0)
            for m in models:
                shares.setdefault((m, name), []).append(result.share_of_oracle(m))
                per_week.setdefault((m, name), []).append(np.diff(result.expected_conversions[m], prepend=0.0) / oracle)
        if out:
            with open(out, "a") as fh:
                for (m, n), rows in per_week.items():
                    record = {"customers": customers, "seed": seed, "model": m, "variant": n}
                    fh.write(json.dumps({**record, "share": shares[(m, n)][-1], "per_week": rows[-1].tolist()}) + "\n")
        row = "; ".join(f"{m} {' / '.join(f'{shares[(m, n)][-1]:.1%}' for n in names)}" for m in models)
        print(f"seed {seed}: {time.perf_counter() - start:.0f}s; ({' / '.join(names)}) {row}", flush=True)
    print(
        f"{'model':<14} {'variant':<26} {'share of oracle':>16} {'+- SE':>6} {'- no waves (paired)':>20} {'+- SE':>6}"
    )
    for m in models:
        base = np.array(shares[(m, "no waves")])
        for n in names:
            mean, se = _mean_se(shares[(m, n)])
            diff, dse = _mean_se(np.array(shares[(m, n)]) - base)
            extra = f"{diff:>+19.1%} {dse:>6.1%}" if n != "no waves" else ""
            print(f"{m:<14} {n:<26} {mean:>15.1%} {se:>6.1%} {extra}")
    print("share of the oracle's expected conversions per week (mean over seeds):")
    for (m, n), rows in per_week.items():
        print(f"  {m:<13} {n:<26} " + " ".join(f"{x:5.1%}" for x in np.mean(rows, axis=0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n-draws", type=int, default=10_000)
    parser.add_argument("--customers", default="12000000,200000", help="comma-separated audience sizes")
    parser.add_argument("--levers", default="", help="extra TS policies with a lever: " + ", ".join(LEVERS))
    parser.add_argument("--lever-models", default="structured", help="models the levers are applied to")
    parser.add_argument("--keep", default="", help="comma-separated default policies to run (default: all)")
    parser.add_argument("--waves", action="store_true", help="each model with and without waves (paired)")
    parser.add_argument("--models", default="independent,hierarchical,structured", help="models for --waves")
    parser.add_argument("--wave-share", type=float, default=0.15, help="first wave's share of each segment")
    parser.add_argument("--wait-hours", type=float, default=24.0, help="hours before the rest of the period")
    parser.add_argument("--out", default="", help="with --waves: append one JSON line per seed, model, variant")
    parser.add_argument("--pending", default="window", help="first-wave pending rules: window, expected (or both)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    levers = [v for v in args.levers.split(",") if v]
    models = [m for m in args.lever_models.split(",") if m]
    bad = [v for v in levers if v not in LEVERS] + [m for m in models if m not in MODELS]
    if bad:
        parser.error(f"unknown levers/models {bad}")
    if args.waves:
        models = [m for m in args.models.split(",") if m]
        if any(m not in MODELS for m in models):
            parser.error(f"unknown models {models}")
        try:
            waves = [Waves(args.wave_share, args.wait_hours, pending=p) for p in args.pending.split(",")]
        except ValueError as exc:
            parser.error(str(exc))
        sizes = [200_000] if args.quick else [int(c) for c in args.customers.split(",")]
        for customers in sizes:
            draws = 2000 if args.quick else args.n_draws
            run_waves(customers, seeds[:1] if args.quick else seeds, draws, waves, models, args.out)
        return
    if args.quick:
        run(200_000, seeds[:1], 2000, levers, models)
        return
    for customers in (int(c) for c in args.customers.split(",")):
        run(customers, seeds, args.n_draws, levers, models, [k for k in args.keep.split(",") if k])


if __name__ == "__main__":
    main()
