"""What the cross-campaign frequency cap costs a period's audience selection when last week's
period mailed everyone (the weekly case: N sends in the window). Usage:

    .venv/bin/python benchmarks/bench_frequency_cap.py --customers 1000000

PostgreSQL (started by `tests.servers`, as in bench_send_scale.py), N customers in 8 segments, one
completed period of a campaign whose N sends went out a day ago. Then, in one transaction each, the
plan's selection of every segment's audience for the next period (`capped_customers`, then per
segment `refresh_live_claims` + `eligible_customer_ids`, as the plan runs them): without a cap (the
baseline, same run), with a cap of 2 (nobody is at it: one email each) and with a cap of 1
(everybody is at it). Then another campaign's period in flight claims everybody (queued, not sent:
counted live by every claim, see docs/marketer/several-campaigns.md) while last week's mail is
moved out of the window: a cap of 1 reached only through the other period's claims, and the count
a claim then records of who went where (`capped_by_campaign`). Prints seconds and the ratio to the
baseline; nothing is claimed.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

import bench_send_scale as scale  # noqa: E402


def select_audience(segment_ids: list[int], period_id: int, cap) -> tuple[float, int]:
    from campaigns import db
    from campaigns.repositories import sends as send_repo

    with db.session_scope() as session:
        t = time.perf_counter()
        with send_repo.capped_customers(session, cap) as capped:
            total = 0
            for s in segment_ids:  # as each segment's claim does: the live claims counted again first
                if capped:
                    send_repo.refresh_live_claims(session, capped, period_id, s)
                total += len(send_repo.eligible_customer_ids(session, s, period_id, capped))
        return time.perf_counter() - t, total


def count_lost(segment_ids: list[int], period_id: int, cap) -> tuple[float, int]:
    """What a claim adds under a cap: the customers left out, by the campaign that holds them."""
    from campaigns import db
    from campaigns.repositories import sends as send_repo

    with db.session_scope() as session:
        t = time.perf_counter()
        with send_repo.capped_customers(session, cap) as capped:
            total = 0
            for s in segment_ids:
                send_repo.refresh_live_claims(session, capped, period_id, s)
                total += sum(send_repo.capped_by_campaign(session, s, period_id, capped).values())
        return time.perf_counter() - t, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (the best is kept)")
    args = parser.parse_args()
    n = args.customers
    home = Path(tempfile.mkdtemp(prefix="mab-cap-"))
    backend = scale.Backend("postgresql", home)
    try:
        scale.configure(backend.url, home / "outbox", home)
        from campaigns import db
        from campaigns.demo import SEGMENTS, demo_campaign
        from campaigns.migrate import upgrade
        from campaigns.models import SendPeriod
        from campaigns.schemas import CampaignCreate
        from campaigns.services import campaigns

        upgrade(backend.url)
        seg = dict(backend.sql("SELECT name, id FROM segment")[0])
        segment_ids = [seg[s] for s in SEGMENTS]
        backend.load_customers(0, n, segment_ids)
        with db.session_scope() as s:
            cid = campaigns.create(s, CampaignCreate(**{**demo_campaign(), "burn_in_min_sends": 0})).id
            campaigns.transition(s, cid, "start")
            yesterday = datetime.now(UTC) - timedelta(days=1)
            last_week = SendPeriod(campaign_id=cid, number=1, seed=1, status="completed", completed_at=yesterday)
            this_week = SendPeriod(campaign_id=cid, number=2, seed=2)
            s.add_all([last_week, this_week])
            s.flush()
            old_id, new_id = last_week.id, this_week.id
        backend.sql(f"""
            INSERT INTO send (campaign_id, period_id, customer_id, segment_id, arm, propensity, status, clicks,
                              conversions, revenue, sent_at, message_id)
            SELECT {cid}, {old_id}, id, segment_id, 0, 0.01, 'sent', 0, 0, 0, now() - interval '1 day', 'm'
            FROM customer""", "ANALYZE send")  # noqa: S608 (ids only)
        db.reset_engine()
        since = datetime.now(UTC) - timedelta(days=7)
        print(f"bench_frequency_cap: {n:,} customers in 8 segments, last week's period mailed all of them")
        base = None
        for label, cap in (("no cap (baseline)", None), ("cap 2 (nobody at it)", (2, since)),
                           ("cap 1 (everybody at it)", (1, since))):
            seconds, eligible = min(select_audience(segment_ids, new_id, cap) for _ in range(args.repeat))
            base = base or seconds
            print(f"  {label:26s} {seconds:6.2f} s  {seconds / base:4.2f}× the baseline  ({eligible:,} eligible)")
        with db.session_scope() as s:
            other = campaigns.create(s, CampaignCreate(**{**demo_campaign(), "name": "other"})).id
            campaigns.transition(s, other, "start")
            rival = SendPeriod(campaign_id=other, number=1, seed=3, status="running")
            s.add(rival)
            s.flush()
            rival_id = rival.id
        move_out = f"UPDATE send SET sent_at = sent_at - interval '30 days' WHERE period_id = {old_id}"  # noqa: S608
        claim_all = f"""INSERT INTO send (campaign_id, period_id, customer_id, segment_id, arm, propensity, status,
                                          clicks, conversions, revenue)
                        SELECT {other}, {rival_id}, id, segment_id, 0, 0.01, 'queued', 0, 0, 0 FROM customer"""  # noqa: S608 (ids only)
        backend.sql(move_out, claim_all, "ANALYZE send")
        db.reset_engine()
        seconds, eligible = min(select_audience(segment_ids, new_id, (1, since)) for _ in range(args.repeat))
        label = "cap 1, held by a rival"
        print(f"  {label:26s} {seconds:6.2f} s  {seconds / base:4.2f}× the baseline  ({eligible:,} eligible; "
              "another campaign's period in flight claimed everybody)")
        seconds, lost = min(count_lost(segment_ids, new_id, (1, since)) for _ in range(args.repeat))
        label = "  + who went where"
        print(f"  {label:26s} {seconds:6.2f} s  {seconds / base:4.2f}× the baseline  ({lost:,} counted as lost "
              "to the other campaign)")
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
