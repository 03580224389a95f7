"""Feedback folding against a real database: dedupe by event id, attribution, arm statistics, bot
and scanner clicks excluded (also when a burst is split over two batches), unknown ids unattributed."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from campaigns.db import session_scope
from campaigns.models import Customer, Event, Send
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
    assert result == {"received": 3, "new": 3, "applied": 1, "excluded": 0, "duplicates": 0}
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


# --- bot and scanner clicks ---------------------------------------------------------------------


def test_burst_members_pure():
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def at(sec):
        return t0 + timedelta(seconds=sec)

    # three distinct links within 5 s: all three, and a repeat of a link inside the span too
    assert events.burst_members([("a", at(0), 0), ("b", at(2), 1), ("b2", at(3), 1), ("c", at(5), 2)], 3, 5) == {
        "a", "b", "b2", "c"}
    # the same spread over 5.5 s is no burst; two links are never a burst of three
    assert events.burst_members([("a", at(0), 0), ("b", at(2), 1), ("c", at(5.5), 2)], 3, 5) == set()
    assert events.burst_members([("a", at(0), 0), ("b", at(1), 1), ("c", at(1), 1), ("d", at(2), 0)], 3, 5) == set()
    # a person's click a minute later stays out of the burst before it; order of input does not matter
    clicks = [("late", at(60), 0), ("c", at(4), 2), ("a", at(0), 0), ("b", at(1), 1)]
    assert events.burst_members(clicks, 3, 5) == {"a", "b", "c"}
    assert events.burst_members(clicks, 0, 5) == set()  # the rule switched off


def sent_at(send_id: int) -> datetime:
    with session_scope() as s:
        return s.get(Send, send_id).sent_at


def click(eid: str, send: Send, after: float | None, **kw) -> dict:
    at = None if after is None else (sent_at(send.id) + timedelta(seconds=after)).isoformat()
    return {"event_id": eid, "type": "click", "send_id": send.id, "occurred_at": at, **kw}


def stored(*ids: str) -> dict[str, tuple[str, str | None]]:
    with session_scope() as s:
        rows = s.execute(select(Event.event_id, Event.status, Event.reason).where(Event.event_id.in_(ids))).all()
    return {r.event_id: (r.status, r.reason) for r in rows}


def ledger(send_id: int) -> tuple[int, datetime | None]:
    with session_scope() as s:
        row = s.get(Send, send_id)
        return row.clicks, row.first_click_at


BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def test_bot_clicks_are_stored_excluded_with_their_reason_and_never_rewarded(database_url, redis_server):
    cid, sends = run_one_period(20)
    a, b, c, d, e = sends[:5]
    result = fold([
        click("ua", a, 60, user_agent="Mozilla/5.0 (compatible; Barracuda Sentinel)", link=0),
        click("curl", a, 61, user_agent="curl/8.5.0", link=0),
        click("fast", b, 3, user_agent=BROWSER, link=0),
        click("early", b, -30, user_agent=BROWSER, link=0),  # before delivery: a clock off, or a scanner
        click("b1", c, 100, user_agent=BROWSER, link=0),
        click("b2", c, 101, user_agent=BROWSER, link=1),
        click("b3", c, 103, user_agent=BROWSER, link=2),
        click("person", d, 40, user_agent=BROWSER, link=1),
        click("person-again", d, 45, user_agent=BROWSER, link=0),  # two links of one mail is a person
        click("no-time", e, None),  # no occurred_at: its time is unknown, so it is never judged fast
    ])
    assert result == {"received": 10, "new": 10, "applied": 3, "excluded": 7, "duplicates": 0}
    assert stored("ua", "curl", "fast", "early", "b1", "b2", "b3", "person", "person-again", "no-time") == {
        "ua": ("excluded", "bot:user_agent"), "curl": ("excluded", "bot:user_agent"),
        "fast": ("excluded", "bot:fast"), "early": ("excluded", "bot:fast"),
        "b1": ("excluded", "bot:burst"), "b2": ("excluded", "bot:burst"), "b3": ("excluded", "bot:burst"),
        "person": ("applied", None), "person-again": ("applied", None), "no-time": ("applied", None),
    }
    assert ledger(a.id) == (0, None) and ledger(b.id) == (0, None) and ledger(c.id) == (0, None)
    clicks, first = ledger(d.id)
    assert ledger(e.id)[0] == 1
    assert clicks == 2 and first == sent_at(d.id) + timedelta(seconds=40)
    with session_scope() as s:
        row = s.execute(select(Event).where(Event.event_id == "ua")).scalar_one()
        assert (row.user_agent, row.link, row.send_id, row.campaign_id) == (
            "Mozilla/5.0 (compatible; Barracuda Sentinel)", 0, a.id, cid)
        counts = events.feedback_counts(s, cid)
    assert counts["excluded_by_reason"] == {"bot:fast": 2, "bot:user_agent": 2, "bot:burst": 3}
    assert counts["by_type"]["click"] == {"applied": 3, "unattributed": 0, "excluded": 7}
    assert counts["by_type"]["conversion"] == {"applied": 0, "unattributed": 0, "excluded": 0}
    assert (counts["applied"], counts["excluded"], counts["unattributed"]) == (3, 7, 0)


def test_a_burst_split_over_two_batches_takes_back_the_click_already_counted(database_url, redis_server):
    cid, sends = run_one_period(10, holdout_share=0.0)
    send = sends[0]
    assert fold([click("k1", send, 20, link=0)])["applied"] == 1
    assert ledger(send.id) == (1, sent_at(send.id) + timedelta(seconds=20))  # a reward, for now
    # the scanner's next two links arrive in another batch: with the first they make a burst
    result = fold([click("k2", send, 21, link=1), click("k3", send, 23, link=2)])
    assert result["applied"] == 0 and result["excluded"] == 2
    assert stored("k1", "k2", "k3") == {k: ("excluded", "bot:burst") for k in ("k1", "k2", "k3")}
    assert ledger(send.id) == (0, None)
    # redelivering the batches changes nothing; a person's click later is a reward again
    fold([click("k1", send, 20, link=0)])
    fold([click("k2", send, 21, link=1), click("k3", send, 23, link=2)])
    assert ledger(send.id) == (0, None)
    fold([click("k4", send, 600, link=0)])
    assert ledger(send.id) == (1, sent_at(send.id) + timedelta(seconds=600))
    assert stored("k4") == {"k4": ("applied", None)}
    # the arm statistics the engine reads see one click
    with session_scope() as s:
        stats = _arm_stats(s, campaign_service.get(s, cid), send.segment_id, list(range(6)))
    assert stats.clicks.sum() == 1


def test_two_workers_splitting_a_burst_at_the_same_time_still_see_one_burst(database_url, redis_server):
    """The second worker waits for the first one's lock on the send (PostgreSQL: the row lock; SQLite:
    the writer lock), then reads the click the first one committed."""
    import threading

    from sqlmodel import Session

    from campaigns.db import get_engine

    _, sends = run_one_period(10)
    send = sends[0]
    first, second = [click("w1", send, 20, link=0)], [click("w2", send, 21, link=1), click("w3", send, 22, link=2)]
    outcome = {}

    def other_worker():
        outcome.update(fold(second))

    with Session(get_engine()) as s1:
        assert events.process_events(s1, first)["applied"] == 1  # not committed yet
        t = threading.Thread(target=other_worker)
        t.start()
        t.join(timeout=1.5)
        assert t.is_alive()  # blocked behind the first worker
        s1.commit()
    t.join(timeout=30)
    assert not t.is_alive() and outcome["excluded"] == 2
    assert stored("w1", "w2", "w3") == {k: ("excluded", "bot:burst") for k in ("w1", "w2", "w3")}
    assert ledger(send.id) == (0, None)


def test_a_burst_that_only_adds_to_an_applied_click_of_another_link_keeps_the_rest(database_url, redis_server):
    """Only the clicks inside the burst window go: an earlier person's click of the same send stays."""
    _, sends = run_one_period(10)
    send = sends[0]
    fold([click("p", send, 30, link=0)])
    fold([click("s1", send, 300, link=0), click("s2", send, 301, link=1), click("s3", send, 302, link=2)])
    assert stored("p")["p"] == ("applied", None)
    assert ledger(send.id) == (1, sent_at(send.id) + timedelta(seconds=30))


@pytest.fixture
def bot_rules_off(monkeypatch):
    from campaigns.settings import get_settings

    monkeypatch.setenv("MAB_BOT_MIN_SECONDS_AFTER_SEND", "0")
    monkeypatch.setenv("MAB_BOT_USER_AGENTS", "")
    monkeypatch.setenv("MAB_BOT_BURST_LINKS", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_each_bot_rule_can_be_switched_off(database_url, redis_server, bot_rules_off):
    _, sends = run_one_period(10)
    send = sends[0]
    fold([click("x1", send, 1, user_agent="curl/8", link=0), click("x2", send, 2, link=1),
          click("x3", send, 3, link=2)])
    assert stored("x1", "x2", "x3") == {k: ("applied", None) for k in ("x1", "x2", "x3")}
    assert ledger(send.id)[0] == 3


# --- unknown ids, complaints, counts --------------------------------------------------------------


def test_events_for_unknown_sends_or_campaigns_are_stored_unattributed_and_counted(database_url, redis_server):
    cid, sends = run_one_period(10)
    result = fold([
        {"event_id": "u1", "type": "click", "send_id": 987654, "occurred_at": None},
        {"event_id": "u2", "type": "conversion", "send_id": 987655, "campaign_id": cid, "revenue": 4.0,
         "occurred_at": None},
        {"event_id": "u3", "type": "conversion", "campaign_id": 987654, "customer_external_id": "c1",
         "revenue": 7.0, "occurred_at": None},
        {"event_id": "u4", "type": "complaint", "send_id": 987654, "occurred_at": None},
    ])
    assert result == {"received": 4, "new": 4, "applied": 0, "excluded": 0, "duplicates": 0}
    with session_scope() as s:
        rows = {r.event_id: r for r in s.execute(select(Event)).scalars()}
        assert {k: (r.status, r.send_id, r.campaign_id) for k, r in rows.items()} == {
            "u1": ("unattributed", None, None),
            "u2": ("unattributed", None, cid),  # the campaign exists: the event stays the campaign's
            "u3": ("unattributed", None, None),  # the campaign does not: NULL (a foreign key)
            "u4": ("unattributed", None, None),
        }
        assert rows["u3"].revenue == 7.0 and rows["u3"].customer_external_id == "c1"
        assert s.execute(select(func.sum(Send.clicks) + func.sum(Send.conversions))).scalar_one() == 0
        mine, orphans = events.feedback_counts(s, cid), events.feedback_counts(s, None)
    assert mine["unattributed"] == 1 and mine["by_type"]["conversion"]["unattributed"] == 1
    assert orphans["unattributed"] == 3
    assert orphans["by_type"]["click"]["unattributed"] == 1 and orphans["by_type"]["complaint"]["unattributed"] == 1


def test_a_complaint_is_stored_applied_and_changes_no_ledger_count(database_url, redis_server):
    cid, sends = run_one_period(10)
    send = sends[0]
    assert fold([{"event_id": "cmp-1", "type": "complaint", "send_id": send.id, "occurred_at": None}])["applied"] == 1
    with session_scope() as s:
        row = s.get(Send, send.id)
        assert (row.clicks, row.conversions, row.revenue) == (0, 0, 0.0)
        ev = s.execute(select(Event).where(Event.event_id == "cmp-1")).scalar_one()
        assert (ev.type, ev.status, ev.campaign_id, ev.send_id) == ("complaint", "applied", cid, send.id)
        assert events.feedback_counts(s, cid)["by_type"]["complaint"]["applied"] == 1


def test_an_id_repeated_inside_one_batch_counts_once(database_url, redis_server):
    _, sends = run_one_period(10)
    send = sends[0]
    conv = {"event_id": "dup", "type": "conversion", "send_id": send.id, "revenue": 5.0, "occurred_at": None}
    assert fold([conv, dict(conv), dict(conv)])["new"] == 1
    with session_scope() as s:
        assert (s.get(Send, send.id).conversions, s.get(Send, send.id).revenue) == (1, 5.0)


def test_the_click_time_decides_fast_not_the_worker_clock(database_url, redis_server):
    """A click processed long after it happened is still judged by when it happened."""
    _, sends = run_one_period(10)
    send = sends[0]
    with session_scope() as s:  # the send went out an hour ago, the click came 2 s after it
        s.execute(update(Send).where(Send.id == send.id).values(sent_at=datetime.now(UTC) - timedelta(hours=1)))
    fold([click("late-fold", send, 2, link=0)])
    assert stored("late-fold")["late-fold"] == ("excluded", "bot:fast")


def test_two_workers_folding_overlapping_batches_in_opposite_orders_never_deadlock(database_url, redis_server):
    """Each batch updates the same 150 sends, one in ascending and one in descending order. Without
    the id-ordered lock taken first, PostgreSQL aborts one of them ("deadlock detected")."""
    import threading

    _, sends = run_one_period(150)
    ids = [s.id for s in sends]
    errors: list[BaseException] = []

    def worker(name: str, order: list[int], round_: int) -> None:
        try:
            fold([{"event_id": f"{name}-{round_}-{sid}", "type": "conversion", "send_id": sid, "revenue": 1.0,
                   "occurred_at": None}
                  for sid in order])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    for round_ in range(4):
        threads = [threading.Thread(target=worker, args=("up", ids, round_)),
                   threading.Thread(target=worker, args=("down", ids[::-1], round_))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    with session_scope() as s:
        totals = s.execute(select(Send.conversions).where(Send.id.in_(ids))).scalars().all()
    assert set(totals) == {8}  # 2 workers × 4 rounds, every conversion counted once
