"""Several campaigns at once under the frequency cap (SQLite and PostgreSQL): a customer at the cap
goes to the campaign ranked first by (priority, expected value of its best arm in the segment,
campaign id), whatever order the plans run in, even when two coordinators plan at the same time;
the holdout is drawn among the customers the campaign got; each period counts what it lost, by
campaign."""

import threading
import time
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import select

import bandit
from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Campaign, Send, SendPeriod, utcnow
from campaigns.schemas import CampaignCreate
from campaigns.services import campaigns, contention, periods, reports
from campaigns.settings import get_settings
from tests.campaigns.test_periods import new_period, sends_of, setup_campaign
from tests.factories import small_campaign_payload

N = 40  # customers, shared by every campaign of a test (two segments)


@pytest.fixture
def cap(monkeypatch):
    """A frequency cap of `cap(n)` emails per 7 days; plans are driven by hand (no tasks sent)."""
    monkeypatch.setattr(periods, "enqueue_run", lambda period_id: None)

    def set_cap(n: int) -> None:
        monkeypatch.setenv("MAB_FREQUENCY_CAP", str(n))
        monkeypatch.setenv("MAB_FREQUENCY_WINDOW_DAYS", "7")
        get_settings.cache_clear()

    yield set_cap
    get_settings.cache_clear()


def add_campaign(name: str, priority: int = 0) -> int:
    with session_scope() as s:
        cid = campaigns.create(s, CampaignCreate(**small_campaign_payload(name=name, priority=priority))).id
        campaigns.transition(s, cid, "start")
    return cid


def plan_until_done(pid: int, tries: int = 1000) -> str:
    """Run the period in this thread, again while it waits for a higher-ranked campaign."""
    for _ in range(tries):
        outcome = periods.run_period(pid)
        if not outcome.startswith("waiting: segment"):
            return outcome
        time.sleep(0.05)
    return outcome


def plan_all(pids: list[int], rounds: int = 20) -> list[str]:
    """Run the periods in turn, in this order, until none waits: a sequential schedule of plans."""
    outcomes = ["waiting: segment"] * len(pids)
    for _ in range(rounds):
        outcomes = [o if not o.startswith("waiting: segment") else periods.run_period(pid)
                    for pid, o in zip(pids, outcomes, strict=True)]
        if not any(o.startswith("waiting: segment") for o in outcomes):
            break
    return outcomes


def customers_of(pid: int) -> set[int]:
    return {s.customer_id for s in sends_of(pid)}


def lost_to(pid: int) -> dict:
    with session_scope() as s:
        return s.get(SendPeriod, pid).lost_to or {}


def assert_cap_holds(limit: int, pids: list[int]) -> None:
    per_customer = Counter(c for pid in pids for c in customers_of(pid))
    assert per_customer and max(per_customer.values()) <= limit
    assert len(per_customer) == N  # nobody left out that a slot was free for


def test_expected_value_is_the_best_arms_posterior_mean():
    snap = SimpleNamespace(arms=[0, 1, 2], p_best=[0.1, 0.7, 0.2],
                           counts={"sends": [10, 10, 10], "clicks": [5, 1, 0], "conversions": [0, 8, 2],
                                   "revenue": [0.0, 99.0, 1.0]})
    assert contention.expected_value("conversion", snap) == pytest.approx(9 / 12)
    assert contention.expected_value("click", snap) == pytest.approx(2 / 12)  # arm 1, not the most clicked
    assert contention.expected_value("revenue", snap) == pytest.approx(9.0)
    assert contention.expected_value("conversion", None) == 0.0
    ranked = sorted([(0, 0.9, 1), (1, 0.1, 3), (0, 0.9, 2), (0, 0.95, 4)], key=lambda k: contention.rank_key(*k))
    assert ranked == [(1, 0.1, 3), (0, 0.95, 4), (0, 0.9, 1), (0, 0.9, 2)]


@pytest.mark.parametrize("order", ["high_first", "low_first"])
def test_priority_decides_whatever_order_the_plans_run_in(database_url, redis_server, cap, order):
    """Cap of one: both periods are in flight; the higher priority gets every customer, whichever
    coordinator runs first; the lower counts them as lost to it."""
    cap(1)
    low = setup_campaign(N)  # the older campaign: the id alone would rank it first
    high = add_campaign("high", priority=5)
    p_low, p_high = new_period(low), new_period(high)
    if order == "low_first":
        waited = periods.run_period(p_low)
        assert waited.startswith("waiting: segment") and f"campaign {high}" in waited
        assert sends_of(p_low) == [] and lost_to(p_low) == {}  # the wait claimed and counted nothing
    assert plan_all([p_high, p_low]) == ["completed", "completed"]
    assert len(customers_of(p_high)) == N and customers_of(p_low) == set()
    assert lost_to(p_low) == {str(high): N} and lost_to(p_high) == {}
    assert_cap_holds(1, [p_low, p_high])


def test_equal_priority_goes_to_the_better_expected_value(database_url, redis_server, cap):
    """Same priority: per segment, the campaign whose best arm is expected to convert better gets
    it — the newer campaign where its arms converted, the older (untried arms: 1/2 a priori) where
    the newer's never did."""
    older = setup_campaign(N)
    newer = add_campaign("newer")
    # last period of the newer campaign: every send in "champions" converted, long enough ago to be
    # outside the cap's window (and the attribution window's pending sends)
    first = new_period(newer)
    assert periods.run_period(first) == "completed"
    with session_scope() as s:
        for send in s.execute(select(Send).where(Send.period_id == first)).scalars():
            send.sent_at = send.sent_at - timedelta(days=8)
        champions = s.execute(select(AllocationSnapshot.segment_id).where(
            AllocationSnapshot.period_id == first).order_by(AllocationSnapshot.segment_id)).scalars().first()
    with session_scope() as s:
        for send in s.execute(select(Send).where(Send.period_id == first, Send.segment_id == champions,
                                                 Send.arm >= 0)).scalars():
            send.clicks = send.conversions = 1
            send.first_click_at = send.first_conversion_at = send.sent_at
    cap(1)
    p_older, p_newer = new_period(older), new_period(newer)
    assert plan_all([p_older, p_newer]) == ["completed", "completed"]
    by_segment = {pid: Counter(s.segment_id for s in sends_of(pid)) for pid in (p_older, p_newer)}
    assert by_segment[p_newer][champions] == N // 2 and by_segment[p_older][champions] == 0
    other = next(seg for seg in by_segment[p_older])
    assert by_segment[p_older][other] == N // 2 and by_segment[p_newer][other] == 0
    assert lost_to(p_older) == {str(newer): N // 2} and lost_to(p_newer) == {str(older): N // 2}
    assert_cap_holds(1, [p_older, p_newer])


def test_the_holdout_is_drawn_among_the_customers_the_campaign_got(database_url, redis_server, cap):
    """Cap of two, three campaigns: the two ranked first get everyone, the third nobody; each
    claimed segment's arms are exactly the seeded draw over the customers the campaign got."""
    cap(2)
    first = setup_campaign(N)
    second, third = add_campaign("second", priority=1), add_campaign("third", priority=-1)
    pids = [new_period(c) for c in (first, second, third)]
    assert plan_all(pids[::-1]) == ["completed"] * 3
    assert customers_of(pids[0]) == customers_of(pids[1]) and len(customers_of(pids[0])) == N
    assert customers_of(pids[2]) == set() and lost_to(pids[2]) == {str(first): N, str(second): N}
    assert_cap_holds(2, pids)
    with session_scope() as s:
        for pid in pids[:2]:
            period = s.get(SendPeriod, pid)
            for snap in s.execute(select(AllocationSnapshot).where(AllocationSnapshot.period_id == pid)).scalars():
                rows = sorted((r for r in sends_of(pid) if r.segment_id == snap.segment_id),
                              key=lambda r: r.customer_id)
                drawn = bandit.assign(len(rows), np.asarray(snap.weights), snap.holdout_share,
                                      periods.segment_seed(period.seed, snap.segment_id, 1))
                arms = np.where(drawn.arm == bandit.HOLDOUT, bandit.HOLDOUT,
                                np.asarray(snap.arms)[np.maximum(drawn.arm, 0)])
                assert [r.arm for r in rows] == arms.tolist()
                assert [r.propensity for r in rows] == pytest.approx(drawn.propensity.tolist())


def test_equal_priority_and_value_go_to_the_older_campaign(database_url, redis_server, cap):
    cap(1)
    older = setup_campaign(N)
    newer = add_campaign("newer")
    p_older, p_newer = new_period(older), new_period(newer)
    assert plan_all([p_newer, p_older]) == ["completed", "completed"]
    assert len(customers_of(p_older)) == N and lost_to(p_newer) == {str(older): N}
    with session_scope() as s:
        shared = reports.lift_report(s, newer)["shared_customers"]
        assert reports.lift_report(s, older)["shared_customers"] == {"lost": 0, "by_campaign": []}
    assert shared == {"lost": N, "by_campaign": [{
        "campaign_id": older, "name": "Spring offer", "customers": N, "periods": [1],
        "text": f"{N} of your targeted customers went to campaign {older} (Spring offer)"}]}


def test_beat_starts_the_periods_of_a_tick_together(database_url, redis_server, cap, monkeypatch):
    """The due periods of one beat tick are all committed (a refused one apart) before any plan of the
    tick is handed out: the lower-ranked one, though older and started first, waits."""
    cap(1)
    low = setup_campaign(N)
    high = add_campaign("high", priority=1)
    busy = add_campaign("busy")
    busy_period = new_period(busy)  # still in flight: its due period is refused
    with session_scope() as s:
        for cid in (low, high, busy):
            campaign = s.get(Campaign, cid)
            campaign.cadence, campaign.next_period_at = "daily", utcnow() - timedelta(minutes=1)
    seen = []  # when each plan is handed out: the periods that exist then

    def hand_out(period_id):
        with session_scope() as s:
            seen.append(len(s.execute(select(SendPeriod.id)).all()))

    monkeypatch.setattr(periods, "enqueue_run", hand_out)
    started = periods.start_due_periods()
    assert seen == [3, 3]  # both of the tick's periods (and busy's) exist before any plan is handed out
    with session_scope() as s:
        numbers = {s.get(SendPeriod, pid).campaign_id: s.get(SendPeriod, pid).number for pid in started}
    assert numbers == {low: 1, high: 1}
    p_low, p_high = sorted(started)
    assert periods.run_period(p_low).startswith("waiting: segment")
    assert plan_all([p_high, p_low, busy_period]) == ["completed"] * 3
    assert len(customers_of(p_high)) == N and customers_of(p_low) == set() == customers_of(busy_period)


def test_a_campaign_planned_earlier_keeps_what_it_claimed(database_url, redis_server, cap):
    """A lower-ranked campaign whose period was planned when no rival was in flight keeps its
    customers (its emails may have left); the higher-ranked one counts them as lost to it."""
    cap(1)
    low = setup_campaign(N)
    assert periods.run_period(new_period(low)) == "completed"
    high = add_campaign("high", priority=9)
    p_high = new_period(high)
    assert plan_until_done(p_high) == "completed"
    assert customers_of(p_high) == set() and lost_to(p_high) == {str(low): N}


def test_two_coordinators_at_once_never_exceed_the_cap(database_url, redis_server, cap):
    """Both plans run in threads at the same time, each rerun while it waits: every customer is
    claimed once, by the higher-ranked campaign."""
    cap(1)
    low = setup_campaign(N)
    high = add_campaign("high", priority=1)
    p_low, p_high = new_period(low), new_period(high)
    outcomes: dict[int, str] = {}
    start = threading.Barrier(2)

    def plan(pid: int) -> None:
        start.wait()
        outcomes[pid] = plan_until_done(pid)

    threads = [threading.Thread(target=plan, args=(pid,)) for pid in (p_low, p_high)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert outcomes == {p_low: "completed", p_high: "completed"}
    assert len(customers_of(p_high)) == N and customers_of(p_low) == set()
    assert_cap_holds(1, [p_low, p_high])


def test_a_claim_in_progress_holds_off_a_campaign_started_meanwhile(database_url, redis_server, cap, monkeypatch):
    """The lock itself: while the low-ranked period claims its first segment (read, not committed),
    a high-ranked campaign's period starts and plans in another thread. Neither saw the other in
    flight before, so only the serialised claims keep the cap: the high one's claim waits for the
    low one's commit and then finds its customers taken."""
    from campaigns.repositories import sends as send_repo

    cap(1)
    low = setup_campaign(N)
    high = add_campaign("high", priority=3)
    p_low = new_period(low)
    claim, other = send_repo.claim_sends, {}

    def plan_high() -> None:
        other["pid"] = new_period(high)
        other["outcome"] = plan_until_done(other["pid"])

    def claim_while_the_other_plans(session, campaign_id, period_id, *args, **kwargs):
        if campaign_id == low and "thread" not in other:
            other["thread"] = threading.Thread(target=plan_high)
            other["thread"].start()
            other["thread"].join(timeout=1.0)  # gives it the time to claim, were it not held off
        return claim(session, campaign_id, period_id, *args, **kwargs)

    monkeypatch.setattr(send_repo, "claim_sends", claim_while_the_other_plans)
    periods.run_period(p_low)
    other["thread"].join(timeout=300)
    assert plan_all([p_low]) == ["completed"] and other["outcome"] == "completed"
    assert_cap_holds(1, [p_low, other["pid"]])
    got_low, got_high = customers_of(p_low), customers_of(other["pid"])
    # the low one keeps at least the segment it was claiming (on SQLite the high one cannot even
    # start its period before that commits, and may come after the low one's whole plan)
    assert got_low and not got_low & got_high
    assert lost_to(other["pid"]) == {str(low): len(got_low)}
    assert lost_to(p_low) == ({str(high): len(got_high)} if got_high else {})


def test_the_plan_a_period_waits_for_hands_it_out_again_when_it_has_claimed(database_url, redis_server, cap,
                                                                           monkeypatch):
    cap(1)
    low = setup_campaign(N)
    high = add_campaign("high", priority=1)
    p_low, p_high = new_period(low), new_period(high)
    handed: list[int] = []
    monkeypatch.setattr(periods, "enqueue_run", handed.append)
    assert periods.run_period(p_low).startswith("waiting: segment")
    assert handed == []  # it claimed nothing: nobody to let go on
    assert periods.run_period(p_high) == "completed"
    assert handed == [p_low]
    assert periods.run_period(p_low) == "completed" and handed == [p_low]  # nothing left to wake


def test_two_equal_plans_that_wait_for_each_other_are_woken_not_left_to_the_sweeper(database_url, redis_server,
                                                                                     cap, monkeypatch):
    """Equal priority, no data: the older campaign ranks first. Its plan runs while the newer's has
    not opened (no rank yet): it waits. The newer's first run then ranks below it and waits too, but
    hands the older's plan out again; that one claims and hands the newer's out in turn."""
    cap(1)
    older = setup_campaign(N)
    newer = add_campaign("newer")
    p_older, p_newer = new_period(older), new_period(newer)
    handed: list[int] = []
    monkeypatch.setattr(periods, "enqueue_run", handed.append)
    assert periods.run_period(p_older).startswith("waiting: segment")
    assert handed == []  # the newer period is not running yet: its own task is still to come
    assert periods.run_period(p_newer).startswith("waiting: segment")
    assert handed == [p_older]
    assert periods.run_period(p_older) == "completed" and handed == [p_older, p_newer]
    assert periods.run_period(p_newer) == "completed" and handed == [p_older, p_newer]
    assert len(customers_of(p_older)) == N and lost_to(p_newer) == {str(older): N}


def test_a_cap_of_two_adds_the_window_mail_to_the_live_claims(database_url, redis_server, cap):
    """Everybody had one email this week; two more campaigns plan at once under a cap of two: the
    higher-ranked gets everybody, the other nobody (one sent + one claimed = the cap)."""
    cap(2)
    sent = setup_campaign(N)
    assert periods.run_period(new_period(sent)) == "completed"
    high, low = add_campaign("high", priority=1), add_campaign("low")
    p_high, p_low = new_period(high), new_period(low)
    assert plan_all([p_low, p_high]) == ["completed", "completed"]
    assert len(customers_of(p_high)) == N and customers_of(p_low) == set()
    assert lost_to(p_low) == {str(sent): N, str(high): N}


def test_a_period_in_waves_counts_its_lost_customers_once(database_url, redis_server, cap):
    """Cap of one, the higher priority took every customer first; the lower one plans in two waves:
    the customers held by the other campaign are counted once, not once per wave."""
    cap(1)
    low = setup_campaign(N, waves={"first_share": 0.25, "wait_hours": 2})
    high = add_campaign("high", priority=5)
    p_high = new_period(high)
    assert plan_until_done(p_high) == "completed"
    p_low = new_period(low)
    periods.run_period(p_low)  # wave 1
    with session_scope() as s:
        s.get(SendPeriod, p_low).next_wave_at = utcnow()
    assert periods.run_period(p_low) == "completed"  # wave 2
    assert lost_to(p_low) == {str(high): N}  # every customer, counted once
    assert customers_of(p_low) == set()
