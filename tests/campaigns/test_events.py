"""Feedback folding against a real database: dedupe by event id, attribution, arm statistics."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import Event, Send
from campaigns.services import campaigns as campaign_service
from campaigns.services import events, periods
from campaigns.services.periods import _arm_stats
from tests.campaigns.test_periods import new_period, sends_of, setup_campaign


def run_one_period(n: int = 200, **kw) -> tuple[int, list[Send]]:
    cid = setup_campaign(n, **kw)
    pid = new_period(cid)
    periods.run_period(pid)
    return cid, sends_of(pid)


def fold(batch: list[dict]) -> dict:
    with session_scope() as s:
        return events.process_events(s, [dict(e) for e in batch])


def test_the_same_event_fifty_times_counts_once(database_url, redis_server):
    cid, sends = run_one_period()
    send = sends[0]
    conversion = {"event_id": "order-1", "type": "conversion", "send_id": send.id, "revenue": 42.5,
                  "occurred_at": None}
    click = {"event_id": "click-1", "type": "click", "send_id": send.id, "occurred_at": None}
    results = [fold([click, conversion]) for _ in range(50)]
    assert results[0]["new"] == 2 and all(r["new"] == 0 and r["duplicates"] == 2 for r in results[1:])
    with session_scope() as s:
        row = s.get(Send, send.id)
        assert (row.clicks, row.conversions, row.revenue) == (1, 1, 42.5)
        assert s.execute(select(func.count()).select_from(Event)).scalar_one() == 2


def test_conversion_by_customer_goes_to_the_latest_send_within_the_window(database_url, redis_server):
    cid, sends = run_one_period(20)
    with session_scope() as s:
        ext = s.execute(select(Send.customer_id).where(Send.id == sends[5].id)).scalar_one()
        from campaigns.models import Customer

        external_id = s.get(Customer, ext).external_id
    now = datetime.now(UTC)
    result = fold([
        {"event_id": "pos-1", "type": "conversion", "campaign_id": cid, "customer_external_id": external_id,
         "revenue": 10.0, "occurred_at": now.isoformat()},
        # outside the 7-day attribution window: stored, counted, not attributed
        {"event_id": "pos-2", "type": "conversion", "campaign_id": cid, "customer_external_id": external_id,
         "revenue": 99.0, "occurred_at": (now + timedelta(days=8)).isoformat()},
        # a customer who never got this campaign
        {"event_id": "pos-3", "type": "conversion", "campaign_id": cid, "customer_external_id": "stranger",
         "revenue": 5.0, "occurred_at": now.isoformat()},
    ])
    assert result == {"received": 3, "new": 3, "applied": 1, "duplicates": 0}
    with session_scope() as s:
        assert s.get(Send, sends[5].id).revenue == 10.0
        statuses = dict(s.execute(select(Event.event_id, Event.status)).all())
    assert statuses == {"pos-1": "applied", "pos-2": "unattributed", "pos-3": "unattributed"}


def test_folded_events_are_the_arm_statistics_the_next_period_uses(database_url, redis_server):
    cid, sends = run_one_period(400, holdout_share=0.0)
    clicked = [s for s in sends if s.arm == 2][:7]
    fold([{"event_id": f"k{s.id}", "type": "click", "send_id": s.id, "occurred_at": None} for s in clicked])
    fold([{"event_id": f"v{clicked[0].id}", "type": "conversion", "send_id": clicked[0].id, "revenue": 3.0,
           "occurred_at": None}])
    seg = clicked[0].segment_id
    with session_scope() as s:
        stats = _arm_stats(s, campaign_service.get(s, cid), seg, list(range(6)))
    in_seg = [s for s in clicked if s.segment_id == seg]
    assert stats.clicks[2] == len(in_seg) and stats.clicks.sum() == len(in_seg)
    assert stats.conversions[2] == 1 and stats.revenue[2] == 3.0
    assert stats.sends.sum() == sum(1 for s in sends if s.segment_id == seg)
