"""A send period against a real database (SQLite and PostgreSQL): every eligible customer is
assigned exactly once, propensities are logged, snapshots are stored, reruns change nothing."""

import email
import email.policy
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Customer, CustomerStatus, PeriodStatus, Send, SendChunk, SendPeriod
from campaigns.repositories import customers as customer_repo
from campaigns.schemas import CampaignCreate, CustomerIn
from campaigns.services import campaigns, customers, periods
from campaigns.settings import get_settings
from tests.factories import customers as make_customers
from tests.factories import small_campaign_payload


def setup_campaign(n_customers: int, **overrides) -> int:
    with session_scope() as s:
        rows = [CustomerIn(**c) for c in make_customers(n_customers)]
        customers.import_customers(s, customers.json_rows(rows))
        cid = campaigns.create(s, CampaignCreate(**small_campaign_payload(**overrides))).id
        campaigns.transition(s, cid, "start")
    return cid


def new_period(cid: int) -> int:
    with session_scope() as s:
        return periods.start_period(s, cid).id


def sends_of(period_id: int) -> list[Send]:
    with session_scope() as s:
        return list(s.execute(select(Send).where(Send.period_id == period_id)).scalars())


def outbox_files(cid: int, number: int):
    return sorted((get_settings().outbox_dir / f"campaign-{cid}" / f"period-{number}").glob("*.eml"))


def test_period_assigns_every_eligible_customer_exactly_once(database_url, redis_server):
    cid = setup_campaign(2_000, holdout_share=0.2)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED

    sends = sends_of(pid)
    assert len(sends) == 2_000
    assert len({s.customer_id for s in sends}) == 2_000
    assert all(s.status == "sent" and s.message_id for s in sends)
    holdout = sum(s.arm == -1 for s in sends)
    # Binomial(2000, 0.2): 400 ± 18 (sd); 5 sd either side
    assert 310 < holdout < 490
    # burn-in (min sends 0 → Thompson from the start, on an empty posterior): propensities are logged
    # and equal (1 - holdout) × weight of the arm in the stored snapshot
    with session_scope() as s:
        snaps = {sn.segment_id: sn for sn in s.execute(select(AllocationSnapshot)).scalars()}
        period = s.get(SendPeriod, pid)
        assert (period.total, period.sent, period.failed) == (2_000, 2_000, 0)
    assert len(snaps) == 2
    for snap in snaps.values():
        assert abs(sum(snap.weights) - 1) < 1e-9
        assert len(snap.weights) == len(snap.arms) == 6
    for send in sends[:200]:
        snap = snaps[send.segment_id]
        expected = 0.2 if send.arm == -1 else 0.8 * snap.weights[snap.arms.index(send.arm)]
        assert send.propensity == pytest.approx(expected)

    files = outbox_files(cid, 1)
    assert len(files) == 2_000  # the outbox side agrees with the ledger
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].strip().startswith("<http")  # folded: leading space
    assert {p.get_content_type() for p in msg.walk()} >= {"text/plain", "text/html"}


def test_rerun_of_a_finished_period_changes_nothing(database_url, redis_server):
    cid = setup_campaign(300)
    pid = new_period(cid)
    periods.run_period(pid)
    before = [(s.id, s.arm, s.status) for s in sends_of(pid)]
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    # A crash between planning and delivery: put the period back to running and rerun it.
    with session_scope() as s:
        s.get(SendPeriod, pid).status = PeriodStatus.RUNNING
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    assert [(s.id, s.arm, s.status) for s in sends_of(pid)] == before
    assert len(outbox_files(cid, 1)) == 300


def test_same_seed_same_assignment(database_url, redis_server):
    """The plan is a pure function of the stored seed: replanning gives the same arms."""
    cid = setup_campaign(500)
    pid = new_period(cid)
    periods.run_period(pid)
    first = {s.customer_id: s.arm for s in sends_of(pid)}
    with session_scope() as s:  # undo the claims, keep the stored snapshots (and seed)
        s.execute(Send.__table__.delete().where(Send.__table__.c.period_id == pid))
        s.execute(SendChunk.__table__.delete().where(SendChunk.__table__.c.period_id == pid))
        s.execute(AllocationSnapshot.__table__.update().where(AllocationSnapshot.__table__.c.period_id == pid)
                  .values(claimed_at=None))
        period = s.get(SendPeriod, pid)
        period.status, period.planned_at, period.total, period.chunks = PeriodStatus.RUNNING, None, 0, 0
    periods.run_period(pid)
    assert {s.customer_id: s.arm for s in sends_of(pid)} == first


def test_suppressed_customers_get_nothing(database_url, redis_server):
    cid = setup_campaign(100)
    with session_scope() as s:
        for ext in ("c0", "c1"):
            customer_repo.set_status(s, customer_repo.get_customer(s, ext).id, CustomerStatus.UNSUBSCRIBED)
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        ids = {customer_repo.get_customer(s, e).id for e in ("c0", "c1")}
    sends = sends_of(pid)
    assert len(sends) == 98 and not ids & {s.customer_id for s in sends}


def test_unsubscribe_after_planning_is_honoured_at_send_time(database_url, redis_server):
    cid = setup_campaign(50)
    pid = new_period(cid)
    periods.coordinate(pid, enqueue=lambda chunk_ids: None)  # planned, nothing delivered yet
    with session_scope() as s:
        customer_repo.set_status(s, customer_repo.get_customer(s, "c3").id, CustomerStatus.UNSUBSCRIBED)
    periods.run_period(pid)
    statuses = Counter(s.status for s in sends_of(pid))
    assert statuses == {"sent": 49, "failed": 1}
    assert [s.error for s in sends_of(pid) if s.status == "failed"] == ["suppressed: customer is unsubscribed"]
    assert len(outbox_files(cid, 1)) == 49


def test_a_customer_whose_attributes_break_the_template_fails_alone(database_url, redis_server):
    payload = small_campaign_payload()
    payload["template"]["text"] = "{{ offer }} {{ customer.visits + 1 }} {{ landing_url }}"
    with session_scope() as s:
        rows = [CustomerIn(external_id=f"v{i}", email=f"v{i}@example.com", segment="champions",
                           attributes={"visits": i}) for i in range(20)]
        rows.append(CustomerIn(external_id="broken", email="b@example.com", segment="champions",
                               attributes={"visits": "many"}))
        customers.import_customers(s, customers.json_rows(rows))
        cid = campaigns.create(s, CampaignCreate(**payload)).id
        campaigns.transition(s, cid, "start")
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    failed = [s for s in sends_of(pid) if s.status == "failed"]
    assert len(failed) == 1 and failed[0].error.startswith("render failed: TypeError")
    assert sum(s.status == "sent" for s in sends_of(pid)) == 20


def test_second_concurrent_period_is_refused(database_url, redis_server):
    cid = setup_campaign(10)
    new_period(cid)
    with pytest.raises(Exception) as exc:
        new_period(cid)
    assert exc.value.status_code == 409 and "still queued" in exc.value.detail


def test_pause_stops_delivery_and_resume_finishes_it(database_url, redis_server, monkeypatch):
    cid = setup_campaign(30)
    pid = new_period(cid)
    with session_scope() as s:
        campaigns.transition(s, cid, "pause")
    assert periods.run_period(pid).startswith("waiting")
    assert sends_of(pid) == []
    with session_scope() as s:
        campaigns.transition(s, cid, "resume")  # re-enqueues the period after the commit
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    assert len(sends_of(pid)) == 30


def test_weights_follow_feedback_into_the_next_period(database_url, redis_server):
    """Fold outcomes into the ledger, then the next snapshot's counts and weights reflect them."""
    cid = setup_campaign(3_000, objective="click", holdout_share=0.0)
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        # arm 0 gets a click on every send, the others never
        s.execute(Send.__table__.update().where(Send.__table__.c.arm == 0).values(
            clicks=1, first_click_at=Send.__table__.c.sent_at))
        # ... and the attribution window has closed: the others' silence is final, not pending
        s.execute(Send.__table__.update().values(sent_at=Send.__table__.c.sent_at - timedelta(days=8)))
    pid2 = new_period(cid)
    periods.run_period(pid2)
    with session_scope() as s:
        snaps = list(s.execute(select(AllocationSnapshot).where(AllocationSnapshot.period_id == pid2)).scalars())
    for snap in snaps:
        assert snap.counts["clicks"][0] == snap.counts["sends"][0] > 0
        assert sum(snap.counts["clicks"][1:]) == 0
        assert int(np.argmax(snap.weights)) == 0 and snap.weights[0] > 0.9
        assert snap.p_best[0] > 0.99
    second = sends_of(pid2)
    assert sum(s.arm == 0 for s in second) > 0.9 * len(second)


@pytest.mark.parametrize("model", ["independent", "hierarchical", "structured"])
def test_the_campaign_chooses_the_engine_model(sqlite_url, redis_server, model):
    cid = setup_campaign(200, model=model)
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        snaps = list(s.execute(select(AllocationSnapshot).where(AllocationSnapshot.period_id == pid)).scalars())
    assert {sn.diagnostics["model"] for sn in snaps} == {model}
    assert {sn.diagnostics["requested_model"] for sn in snaps} == {model}


def test_per_segment_exclusions_hold_in_weights_and_sends(database_url, redis_server):
    rule = {"when": {"offer": "two_for_one"}, "segments": ["champions"]}
    cid = setup_campaign(600, exclusions=[rule], holdout_share=0.0)
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        snaps = {sn.segment_id: sn for sn in s.execute(select(AllocationSnapshot)).scalars()}
        champions = customer_repo.segments_by_name(s)["champions"]
    excluded = {2, 5}  # arms with offer two_for_one (tone × offer grid, offer varies fastest)
    assert set(snaps[champions].arms) == {0, 1, 3, 4}
    assert abs(sum(snaps[champions].weights) - 1) < 1e-9
    other = next(sn for sid, sn in snaps.items() if sid != champions)
    assert other.arms == list(range(6))
    sent_to_champions = {x.arm for x in sends_of(pid) if x.segment_id == champions}
    assert sent_to_champions and not sent_to_champions & excluded


def test_completing_a_campaign_stops_its_period_in_flight_and_says_so(database_url, redis_server):
    cid = setup_campaign(20)
    pid = new_period(cid)
    with session_scope() as s:
        campaigns.transition(s, cid, "complete")
    assert periods.run_period(pid) == PeriodStatus.FAILED
    with session_scope() as s:
        period = s.get(SendPeriod, pid)
        assert "campaign was completed" in period.error
    assert sends_of(pid) == []


def test_a_plan_that_fails_under_a_frequency_cap_leaves_nothing_behind(database_url, redis_server, monkeypatch):
    """The capped customers are counted once per plan into a temporary table. A plan that fails
    after counting them rolls everything back, table included, and the rerun counts them again and
    claims every customer once."""
    from campaigns.repositories import sends as send_repo

    monkeypatch.setenv("MAB_FREQUENCY_CAP", "2")
    get_settings.cache_clear()
    try:
        cid = setup_campaign(60)
        pid = new_period(cid)
        claim = send_repo.claim_sends

        def disk_full(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(send_repo, "claim_sends", disk_full)
        with pytest.raises(OSError, match="disk full"):
            periods.run_period(pid)
        assert sends_of(pid) == []
        monkeypatch.setattr(send_repo, "claim_sends", claim)
        assert periods.run_period(pid) == PeriodStatus.COMPLETED
        assert sorted(Counter(s.customer_id for s in sends_of(pid)).values()) == [1] * 60
    finally:
        get_settings.cache_clear()


def test_frequency_cap_and_consent_are_honoured_at_selection(database_url, redis_server, monkeypatch):
    """With a cap of 1 email per 7 days across campaigns, customers mailed by campaign A are left
    out of campaign B's period; a send older than the window no longer counts; customers without
    marketing consent are never selected."""
    monkeypatch.setenv("MAB_FREQUENCY_CAP", "1")
    monkeypatch.setenv("MAB_FREQUENCY_WINDOW_DAYS", "7")
    get_settings.cache_clear()
    try:
        a = setup_campaign(300)
        pid_a = new_period(a)
        assert periods.run_period(pid_a) == PeriodStatus.COMPLETED
        mailed = sorted(s.customer_id for s in sends_of(pid_a))
        assert len(mailed) == 300
        with session_scope() as s:
            # 100 of A's sends happened 8 days ago (outside the window); 20 customers withdrew consent
            old = mailed[:100]
            for send in s.execute(select(Send).where(Send.period_id == pid_a, Send.customer_id.in_(old))).scalars():
                send.sent_at = send.sent_at - timedelta(days=8)
            no_consent = mailed[100:120]
            for cust_id in no_consent:
                s.get(Customer, cust_id).consent = False
            # 50 new customers nobody has mailed
            customers.import_customers(s, customers.json_rows(
                [CustomerIn(**c) for c in make_customers(50, prefix="new")]))
            b = campaigns.create(s, CampaignCreate(**small_campaign_payload(name="second"))).id
            campaigns.transition(s, b, "start")
        pid_b = new_period(b)
        assert periods.run_period(pid_b) == PeriodStatus.COMPLETED
        with session_scope() as s:
            new_ids = set(s.execute(select(Customer.id).where(Customer.external_id.like("new%"))).scalars())
        got = {s.customer_id for s in sends_of(pid_b)}
        assert got == set(old) | new_ids  # capped: mailed[100:] (and the 20 without consent)
        assert not got & set(no_consent)
    finally:
        get_settings.cache_clear()
