"""The auto-pause guard against real databases (SQLite and PostgreSQL): a period whose unsubscribe or
complaint rate passes its threshold pauses the campaign with the reason recorded and logged; under
the threshold, under the minimum sends, or outside the look-back window nothing changes; a period
trips the guard once, so a resume by an operator holds; a running period stops handing out chunks."""

import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest

from campaigns import metrics, signing
from campaigns.db import session_scope
from campaigns.models import CampaignStatus, PeriodStatus, SendPeriod, utcnow
from campaigns.repositories import guard as guard_repo
from campaigns.services import campaigns as campaign_service
from campaigns.services import events, guard, periods, sending, tracking
from campaigns.settings import get_settings
from tests.campaigns.test_periods import new_period, sends_of, setup_campaign


@pytest.fixture
def guard_settings(monkeypatch):
    """The documented defaults, written out so the tests do not drift with them."""
    for key, value in {"MAB_GUARD_UNSUBSCRIBE_RATE": "0.01", "MAB_GUARD_COMPLAINT_RATE": "0.001",
                       "MAB_GUARD_MIN_SENDS": "500", "MAB_GUARD_LOOKBACK_DAYS": "7"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def sent_period(n: int = 600) -> tuple[int, int, list]:
    cid = setup_campaign(n)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    sends = sends_of(pid)
    assert sum(s.status == "sent" for s in sends) == n
    return cid, pid, sends


def unsubscribe(sends) -> None:
    """Through the real one-click path: signed token, customer unsubscribed, event stored."""
    for send in sends:
        with session_scope() as s:
            tracking.unsubscribe_send(s, signing.sign("unsub", send.id), apply=True)


def state(cid: int, pid: int) -> tuple[str, str | None, object]:
    with session_scope() as s:
        status = campaign_service.get(s, cid).status
        return status, guard_repo.status_reason(s, cid), guard_repo.tripped_at(s, pid)


def test_unsubscribe_rate_over_the_threshold_pauses_with_the_reason(database_url, redis_server, guard_settings,
                                                                     caplog):
    cid, pid, sends = sent_period(600)
    unsubscribe(sends[:7])  # 7 / 600 = 1.17% > 1.0%
    before = metrics.GUARD_PAUSES.labels("unsubscribe")._value.get()

    # Seen from 8 days later the period is outside the look-back window: nothing happens.
    assert guard.run_guard(utcnow() + timedelta(days=8)) == {}
    assert state(cid, pid)[0] == CampaignStatus.ACTIVE

    with caplog.at_level(logging.WARNING, logger="campaigns.services.guard"):
        paused = guard.run_guard()
    reason = "auto-paused: unsubscribe rate 1.2% (7 of 600 sends) in period 1 exceeds 1.0%"
    assert paused == {cid: reason}
    status, stored_reason, tripped = state(cid, pid)
    assert (status, stored_reason) == (CampaignStatus.PAUSED, reason)
    assert tripped is not None
    [record] = [r for r in caplog.records if r.name == "campaigns.services.guard"]
    assert record.levelno == logging.WARNING and record.getMessage() == reason
    assert (record.campaign_id, record.period_id, record.rule) == (cid, pid, "unsubscribe")
    assert metrics.GUARD_PAUSES.labels("unsubscribe")._value.get() == before + 1

    # An operator looks and resumes: the same period does not trip the guard again.
    with session_scope() as s:
        campaign_service.transition(s, cid, "resume")
    assert guard.run_guard() == {}
    assert state(cid, pid)[0] == CampaignStatus.ACTIVE


def test_unsubscribe_rate_at_or_under_the_threshold_leaves_the_campaign_alone(database_url, redis_server,
                                                                              guard_settings):
    cid, pid, sends = sent_period(600)
    unsubscribe(sends[:6])  # 6 / 600 = 1.0%: at the threshold, not past it
    assert guard.run_guard() == {}
    assert state(cid, pid) == (CampaignStatus.ACTIVE, None, None)
    unsubscribe(sends[6:7])  # one more and it passes
    assert cid in guard.run_guard()


def test_a_period_under_the_minimum_sends_is_not_judged(database_url, redis_server, guard_settings):
    guard_settings.setenv("MAB_GUARD_MIN_SENDS", "1000")
    get_settings.cache_clear()
    cid, pid, sends = sent_period(600)
    unsubscribe(sends[:60])  # 10%, but only 600 sends
    assert guard.run_guard() == {}
    assert state(cid, pid) == (CampaignStatus.ACTIVE, None, None)


def test_complaints_count_once_per_send_and_pause_on_their_own_threshold(database_url, redis_server,
                                                                         guard_settings):
    cid, pid, sends = sent_period(600)
    with session_scope() as s:
        events.process_events(s, [{"event_id": f"fbl-{i}", "type": "complaint", "send_id": sends[0].id,
                                   "occurred_at": None} for i in range(3)])  # one recipient, three reports
    # 1 / 600 = 0.17% > 0.10%; the three reports are one complaint
    reason = "auto-paused: complaint rate 0.17% (1 of 600 sends) in period 1 exceeds 0.10%"
    assert guard.run_guard() == {cid: reason}
    assert state(cid, pid)[:2] == (CampaignStatus.PAUSED, reason)


def test_a_rule_at_zero_is_off(database_url, redis_server, guard_settings):
    guard_settings.setenv("MAB_GUARD_UNSUBSCRIBE_RATE", "0")
    get_settings.cache_clear()
    cid, pid, sends = sent_period(600)
    unsubscribe(sends[:60])
    assert guard.run_guard() == {}
    assert state(cid, pid)[0] == CampaignStatus.ACTIVE


def test_a_running_period_stops_handing_out_chunks_once_paused(database_url, redis_server, guard_settings):
    guard_settings.setenv("MAB_SEND_CHUNK_SIZE", "300")
    get_settings.cache_clear()
    cid = setup_campaign(1_200)
    pid = new_period(cid)
    chunk_ids: list[int] = []  # the coordinator's plan, without handing chunks to a broker
    assert periods.coordinate(pid, chunk_ids.extend) == "fanned out 4 chunks"
    for chunk_id in chunk_ids[:2]:
        assert sending.deliver_chunk(chunk_id).startswith("done")
    sends = [s for s in sends_of(pid) if s.status == "sent"]
    assert len(sends) == 600
    unsubscribe(sends[:7])

    assert cid in guard.run_guard()
    assert sending.deliver_chunk(chunk_ids[2]) == "waiting: campaign is paused"
    with session_scope() as s:
        period = s.get(SendPeriod, pid)
        assert (period.status, period.sent) == (PeriodStatus.RUNNING, 600)
        assert "600 sends) in period 1" in guard_repo.status_reason(s, cid)


# --- the pure part ------------------------------------------------------------------------------------


def test_evaluate_and_reason_pure():
    rows = [SimpleNamespace(id=10, campaign_id=1, number=2, sent=1_000),
            SimpleNamespace(id=11, campaign_id=1, number=3, sent=2_000),
            SimpleNamespace(id=12, campaign_id=2, number=1, sent=800)]
    feedback = {(10, "unsubscribe"): 20, (11, "unsubscribe"): 30, (11, "complaint"): 3, (12, "unsubscribe"): 8}
    trips = guard.evaluate(rows, feedback, {"unsubscribe": 0.01, "complaint": 0.001})
    assert [(t.period_id, t.rule) for t in trips] == [(10, "unsubscribe"), (11, "unsubscribe"), (11, "complaint")]
    assert guard.reason_for([t for t in trips if t.campaign_id == 1]) == (
        "auto-paused: complaint rate 0.15% (3 of 2,000 sends) in period 3 exceeds 0.10%; "
        "unsubscribe rate 1.5% (30 of 2,000 sends) in period 3 exceeds 1.0%")
    assert guard.evaluate(rows, feedback, {}) == []
    assert guard.percent(0.014) == "1.4%" and guard.percent(0.0015) == "0.15%"
