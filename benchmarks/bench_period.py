"""One send period end to end on SQLite, in process: N customers × 8 segments × 200 variants.

Prints the time of each stage (plan = allocation + assignment + ledger claim; deliver = render +
build the email + outbox write + record), customers per second, and two baselines measured in the
same run on the same machine: a bare multi-row INSERT of the same ledger rows into an empty table,
and a bare Jinja2 render of the same templates. Usage:

    .venv/bin/python benchmarks/bench_period.py --customers 100000
"""

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    n = args.customers
    home = Path(tempfile.mkdtemp(prefix="mab-bench-"))
    os.environ.update(MAB_VAR_DIR=str(home), MAB_DATABASE_URL=f"sqlite:///{home / 'mab.db'}",
                      MAB_OUTBOX_DIR=str(home / "outbox"), MAB_REDIS_URL="redis://127.0.0.1:1/0")

    from campaigns import db
    from campaigns.demo import SEGMENTS, demo_campaign
    from campaigns.migrate import upgrade
    from campaigns.models import SendPeriod
    from campaigns.rendering import CompiledCampaign
    from campaigns.schemas import CampaignCreate, CustomerIn
    from campaigns.services import campaigns, customers, periods
    from campaigns.settings import get_settings

    upgrade(get_settings().resolved_database_url())
    t = time.perf_counter()
    with db.session_scope() as s:
        rows = (CustomerIn(external_id=f"b{i}", email=f"b{i}@example.com", segment=SEGMENTS[i % 8],
                           attributes={"first_name": "Ana"}) for i in range(n))
        customers.import_customers(s, customers.json_rows(rows))
        payload = {**demo_campaign(), "burn_in_min_sends": 0}
        cid = campaigns.create(s, CampaignCreate(**payload)).id
        campaigns.transition(s, cid, "start")
        period = SendPeriod(campaign_id=cid, number=1, seed=1)
        s.add(period)
        s.flush()
        pid = period.id
    load = time.perf_counter() - t

    t = time.perf_counter()
    periods.coordinate(pid, enqueue=lambda chunk_ids: None)  # the plan alone; run_period delivers
    plan = time.perf_counter() - t
    t = time.perf_counter()
    status = periods.run_period(pid)
    deliver = time.perf_counter() - t
    assert status == "completed", status

    # Baseline 1: the same number of ledger-shaped rows, bare sqlite3 executemany into an empty table.
    conn = sqlite3.connect(home / "bare.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE send (id INTEGER PRIMARY KEY, campaign_id INT, period_id INT, customer_id INT,"
                 " segment_id INT, arm INT, propensity REAL, status TEXT, UNIQUE(period_id, customer_id))")
    t = time.perf_counter()
    conn.executemany("INSERT INTO send (campaign_id, period_id, customer_id, segment_id, arm, propensity, status)"
                     " VALUES (1, 1, ?, ?, ?, 0.005, 'queued')", ((i, i % 8, i % 200) for i in range(n)))
    conn.commit()
    bare_insert = time.perf_counter() - t

    # Baseline 2: bare Jinja2 render of the same three templates for N customers.
    tpl = demo_campaign()["template"]
    compiled = CompiledCampaign.compile("bench", tpl)
    params = {"tone": "urgent", "offer": "two_for_one", "discount": "20%"}
    t = time.perf_counter()
    for i in range(n):
        compiled.render(params, {"first_name": "Ana", "email": f"b{i}@example.com"}, "https://l/t/x", "https://l/u/x")
    bare_render = time.perf_counter() - t

    print(f"customers: {n:,} (8 segments, 200 variants, SQLite)")
    print(f"  load customers + create campaign: {load:7.2f} s")
    print(f"  plan (allocate, assign, claim):   {plan:7.2f} s   {n / plan:10,.0f} customers/s")
    print(f"  deliver (render, build, outbox):  {deliver:7.2f} s   {n / deliver:10,.0f} customers/s")
    print(f"  period total:                     {plan + deliver:7.2f} s   {n / (plan + deliver):10,.0f} customers/s")
    print(f"  baseline bare INSERT of the rows: {bare_insert:7.2f} s   {n / bare_insert:10,.0f} rows/s"
          f"   plan/bare-insert speed ratio {bare_insert / plan:.2f}")
    print(f"  baseline bare Jinja2 render:      {bare_render:7.2f} s   {n / bare_render:10,.0f} renders/s"
          f"   deliver/bare-render speed ratio {bare_render / deliver:.2f}")
    print(f"  extrapolated to 12M at this rate: {(plan + deliver) * 12_000_000 / n / 60:7.1f} min (one process)")


if __name__ == "__main__":
    main()
