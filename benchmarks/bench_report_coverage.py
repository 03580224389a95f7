"""Coverage of the lift report's 95% intervals, with many more replications than the CI test.

The same simulation as tests/campaigns/test_report_coverage.py (known true click and conversion
probabilities per segment and variant and for the holdout's email; every replication a real
campaign run through the service: allocation, assignment, delivery to the outbox, feedback through
events.process_events, then the report), on a throwaway SQLite database with a private
redis-server. Prints, per quantity, the share of replications whose interval covered the truth,
its exact binomial 95% interval, and the mean and sd of the standardized errors (N(0, 1) if the
standard errors are right). Usage:

    nice .venv/bin/python benchmarks/bench_report_coverage.py --reps 200
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--customers", type=int, default=1_200)
    parser.add_argument("--periods", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mab-coverage-"))
    os.environ.update(MAB_DATABASE_URL=f"sqlite:///{home / 'mab.db'}", MAB_OUTBOX_DIR=str(home / "outbox"))

    from campaigns.migrate import upgrade
    from tests.servers import RedisServer

    redis = RedisServer(home / "redis").start()  # start_period hands the period to a (here absent) worker
    os.environ["MAB_REDIS_URL"] = redis.url
    try:
        from campaigns.settings import get_settings
        from tests.campaigns import test_report_coverage as sim
        from worker.app import celery_app

        get_settings.cache_clear()
        celery_app.conf.broker_url = redis.url
        upgrade(get_settings().resolved_database_url())
        sim.load_customers(args.customers)
        t = time.perf_counter()
        runs = []
        for rep in range(args.reps):
            runs.append(sim.one_campaign(rep, seed=args.seed, n_periods=args.periods))
            if (rep + 1) % 25 == 0:
                print(f"  {rep + 1} replications, {time.perf_counter() - t:.0f} s", file=sys.stderr)
        elapsed = time.perf_counter() - t
    finally:
        redis.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(f"{args.reps} replications x {args.periods} periods x {args.customers} customers "
          f"(2 segments, 6 variants, holdout 30%), {elapsed:.0f} s")
    print(f"{'quantity':28} {'coverage':>9} {'binomial 95% CI':>17} {'z mean':>7} {'z sd':>6}  asserted in CI")
    for quantity in [*sim.CHECKED, "lift_revenue", "snips_uniform_conversion", "ips_leader_conversion",
                     "dr_leader_conversion"]:
        s = sim.summarize(runs, quantity)
        lo, hi = s["coverage_ci95"]
        print(f"{quantity:28} {s['coverage']:9.3f} {f'[{lo:.3f}, {hi:.3f}]':>17} {s['z_mean']:7.2f} "
              f"{s['z_sd']:6.2f}  {'yes' if quantity in sim.CHECKED else 'no'}")
    gaps = [r["support_gap"] for r in runs]
    print(f"uniform policy support gap: max {max(gaps):.3f} (0 = every variant had a positive propensity)")


if __name__ == "__main__":
    main()
