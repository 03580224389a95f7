"""Waves at the service level, against a real database: a period in waves mails a seeded share of
each segment first, waits (beat does not plan the rest early), then mails every other eligible
customer from a posterior that has the first wave's clicks — each customer once, the holdout drawn
in each wave, propensities logged from each wave's own snapshot."""

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from campaigns.db import session_scope
from campaigns.models import AllocationSnapshot, Campaign, PeriodStatus, Send, SendPeriod, utcnow
from campaigns.repositories import campaigns as campaign_repo
from campaigns.services import campaigns, periods, reports, sweeper
from tests.campaigns.test_periods import new_period, sends_of, setup_campaign

WAVES = {"first_share": 0.2, "wait_hours": 2}


def _copy(snap: AllocationSnapshot, wave: int) -> AllocationSnapshot:
    data = snap.model_dump(exclude={"id"})
    return AllocationSnapshot(**{**data, "wave": wave})


def _snapshots(pid: int) -> dict[tuple[int, int], AllocationSnapshot]:
    with session_scope() as s:
        rows = s.execute(select(AllocationSnapshot).where(AllocationSnapshot.period_id == pid)).scalars()
        return {(sn.segment_id, sn.wave): sn for sn in rows}


def _public(pid: int) -> dict:
    with session_scope() as s:
        return periods.public(s, campaign_repo.get_period(s, pid))


def test_snapshots_are_unique_per_period_segment_and_wave(database_url, redis_server):
    cid = setup_campaign(30, waves=WAVES)
    with session_scope() as s:
        assert s.get(Campaign, cid).waves == {"first_share": 0.2, "wait_hours": 2.0}
    periods.run_period(new_period(cid))
    with session_scope() as s:
        snaps = list(s.execute(select(AllocationSnapshot).where(AllocationSnapshot.campaign_id == cid)).scalars())
        assert snaps and {snap.wave for snap in snaps} == {1}
        first = snaps[0]
        s.add(_copy(first, 2))  # a second wave's snapshot beside the first: allowed
        s.flush()
        with pytest.raises(IntegrityError), s.begin_nested():
            s.add(_copy(first, 2))  # the same wave twice: refused by the database
            s.flush()
        s.rollback()


def test_a_period_in_waves_tests_then_sends_from_the_first_waves_clicks(database_url, redis_server):
    n, holdout = 3_000, 0.1
    cid = setup_campaign(n, objective="click", holdout_share=holdout, waves=WAVES)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.RUNNING  # wave 1 sent, the rest waits

    first = sends_of(pid)
    by_segment = {}
    for send in first:
        by_segment.setdefault(send.segment_id, []).append(send)
    snaps = _snapshots(pid)
    for seg, sends in by_segment.items():
        # the first wave is 20% of the segment (1,500 customers each), rounded
        assert len(sends) == round(0.2 * 1_500) == snaps[(seg, 1)].assigned
    state = _public(pid)
    assert state["state"] == "waiting" and state["wave"] == 1 and state["eta_seconds"] is None
    assert "wave 2 (the other 80% of the audience)" in state["state_reason"]
    assert state["next_wave_at"] > utcnow() + timedelta(hours=1.9)

    # before the wait is over: beat does not plan it, the sweeper does not hand it out, a rerun claims nothing
    assert periods.start_due_periods() == []
    assert sweeper.sweep(utcnow() + timedelta(hours=1))["plans"] == []
    periods.run_period(pid)
    assert len(sends_of(pid)) == len(first)

    # the first wave's feedback: arm 0 was clicked every time, the others never; 3 hours have passed
    with session_scope() as s:
        t = Send.__table__
        s.execute(t.update().where(t.c.period_id == pid, t.c.arm == 0).values(clicks=1, first_click_at=t.c.sent_at))
        s.execute(t.update().where(t.c.period_id == pid).values(sent_at=utcnow() - timedelta(hours=3)))
        s.get(SendPeriod, pid).next_wave_at = utcnow() - timedelta(seconds=1)
    with session_scope() as s:
        assert campaign_repo.due_waves(s, utcnow()) == [pid]
    assert periods.run_period(pid) == PeriodStatus.COMPLETED

    sends = sends_of(pid)
    assert len(sends) == n and len({s.customer_id for s in sends}) == n  # everyone once, over both waves
    first_ids = {s.id for s in first}
    second = [s for s in sends if s.id not in first_ids]
    snaps = _snapshots(pid)
    assert {w for (_, w) in snaps} == {1, 2}
    for seg in by_segment:
        wave2 = snaps[(seg, 2)]
        assert wave2.counts["clicks"][0] == wave2.counts["sends"][0] > 0  # it saw the first wave's clicks
        assert int(np.argmax(wave2.weights)) == 0 and wave2.weights[0] > 0.5
        seg_second = [s for s in second if s.segment_id == seg]
        assert len(seg_second) == wave2.assigned == 1_500 - len(by_segment[seg])
        for send in seg_second:  # each wave's propensities come from its own snapshot
            expected = holdout if send.arm == -1 else (1 - holdout) * wave2.weights[wave2.arms.index(send.arm)]
            assert send.propensity == pytest.approx(expected)
        for send in by_segment[seg]:
            wave1 = snaps[(seg, 1)]
            expected = holdout if send.arm == -1 else (1 - holdout) * wave1.weights[wave1.arms.index(send.arm)]
            assert send.propensity == pytest.approx(expected)
        # the holdout is drawn in each wave at its share: Binomial(1200, 0.1) = 120 ± 10.4 (sd)
        assert 120 - 52 < sum(s.arm == -1 for s in seg_second) < 120 + 52
    assert sum(s.arm == 0 for s in second) > 0.5 * len(second)  # the second wave went to what worked
    done = _public(pid)
    assert done["state"] == "completed" and done["next_wave_at"] is None and done["wave"] == 2

    # the report shows both waves' allocations and logs the period's sends from their mixture
    with session_scope() as s:
        report = reports.lift_report(s, cid)
        data = reports.load(s, cid)
    for seg in report["segments"]:
        rows = seg["allocation_over_time"]["periods"]
        assert [(r["period"], r["wave"]) for r in rows] == [(1, 1), (1, 2)]
        assert (seg["allocation"]["period"], seg["allocation"]["wave"]) == (1, 2)  # the latest: wave 2's
    html = reports.render_html(report)
    assert "1·w2" in html and "(wave 2)" in html
    for seg in by_segment:
        mixed = reports._logging_distribution(data.waves[(1, seg)], len(data.variants))
        w1, w2 = snaps[(seg, 1)], snaps[(seg, 2)]
        share1 = w1.assigned / (w1.assigned + w2.assigned)
        assert mixed.sum() == pytest.approx(1.0)
        assert mixed[0] == pytest.approx(share1 * w1.weights[w1.arms.index(0)] + (1 - share1) * w2.weights[0])


def test_the_setting_is_fixed_when_the_period_starts(database_url, redis_server):
    cid = setup_campaign(400, waves=WAVES)
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        s.get(Campaign, cid).waves = None  # turned off mid-period: this period still ends in two waves
        s.get(SendPeriod, pid).next_wave_at = utcnow()
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    assert len(sends_of(pid)) == 400
    assert {w for (_, w) in _snapshots(pid)} == {1, 2}
    pid2 = new_period(cid)  # the next period runs in one wave
    assert periods.run_period(pid2) == PeriodStatus.COMPLETED
    assert {w for (_, w) in _snapshots(pid2)} == {1}


def test_a_pause_between_the_waves_holds_the_second_until_resumed(database_url, redis_server):
    cid = setup_campaign(200, waves=WAVES)
    pid = new_period(cid)
    periods.run_period(pid)
    first = len(sends_of(pid))
    with session_scope() as s:
        campaigns.transition(s, cid, "pause")
        s.get(SendPeriod, pid).next_wave_at = utcnow() - timedelta(minutes=1)  # due, but paused
    with session_scope() as s:
        assert campaign_repo.due_waves(s, utcnow()) == []  # beat does not plan a paused campaign's wave
    assert _public(pid)["state"] == "paused"
    assert periods.run_period(pid).startswith("waiting: campaign is paused")
    assert len(sends_of(pid)) == first
    with session_scope() as s:
        campaigns.transition(s, cid, "resume")
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    assert len(sends_of(pid)) == 200 and len({s.customer_id for s in sends_of(pid)}) == 200


def test_a_plan_that_dies_in_the_second_wave_is_finished_by_a_rerun_once(database_url, redis_server, monkeypatch):
    cid = setup_campaign(600, waves=WAVES)  # two segments
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        s.get(SendPeriod, pid).next_wave_at = utcnow()
    claim = periods._claim_segment
    calls = []

    def dies_on_the_second_segment(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("worker killed")  # like a kill -9: nothing after the first segment's commit
        return claim(*args, **kwargs)

    monkeypatch.setattr(periods, "_claim_segment", dies_on_the_second_segment)
    with pytest.raises(SystemExit):
        periods.run_period(pid)
    monkeypatch.setattr(periods, "_claim_segment", claim)
    assert _public(pid)["wave"] == 2 and _public(pid)["next_wave_at"] is None
    assert periods.run_period(pid) == PeriodStatus.COMPLETED  # what the sweeper's rerun does
    sends = sends_of(pid)
    assert len(sends) == 600 and len({s.customer_id for s in sends}) == 600
    snaps = _snapshots(pid)
    assert sorted(snaps) == sorted((seg, w) for seg in {k[0] for k in snaps} for w in (1, 2))
    assert sum(snap.assigned for snap in snaps.values()) == 600


def test_a_due_wave_waits_for_beat_then_stalls_with_a_reason(database_url, redis_server):
    cid = setup_campaign(100, waves=WAVES)
    pid = new_period(cid)
    periods.run_period(pid)
    with session_scope() as s:
        due = utcnow() - timedelta(seconds=5)
        s.get(SendPeriod, pid).next_wave_at = due
        period = campaign_repo.get_period(s, pid)
        soon = periods.public(s, period)
        lease = periods.get_settings().chunk_lease_seconds
        late = periods.public(s, period, now=due + timedelta(seconds=lease + 60))
    assert soon["state"] == "waiting" and "wave 2 is due since" in soon["state_reason"]
    assert late["state"] == "stalled" and "waiting for a worker to plan wave 2" in late["state_reason"]
