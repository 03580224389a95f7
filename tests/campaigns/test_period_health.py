"""A period's health: the recent rate, the failure summary and the halt rule (pure functions), the
stall diagnosis and the sweeper (on a real database)."""

from datetime import timedelta
from types import SimpleNamespace

import pytest

from campaigns.db import session_scope
from campaigns.models import PeriodStatus, SendPeriod, utcnow
from campaigns.repositories import chunks as chunk_repo
from campaigns.repositories import sends as send_repo
from campaigns.services import period_health as health
from campaigns.services import periods, sweeper
from tests.campaigns.test_periods import new_period, setup_campaign


def rate_after(period_id: int, updates: list[tuple[float, int]]) -> SendPeriod:
    """Feed progress through the repository's UPDATE, as delivery does: (epoch, sends) in order."""
    for at, n in updates:
        with session_scope() as s:
            send_repo.add_progress(s, period_id, n, 0, at, health.RATE_TAU_SECONDS)
    with session_scope() as s:
        return s.get(SendPeriod, period_id)


def test_the_recent_rate_settles_on_a_steady_stream_and_decays_when_it_stops(database_url):
    pid = new_period(setup_campaign(2))
    period = rate_after(pid, [(1e9 + t, 100) for t in range(0, 300)])  # 100 sends a second for 5 minutes
    assert period.recent_rate == pytest.approx(100, rel=1e-3) and period.sent == 30_000
    assert period.progress_epoch == 1e9 + 299
    # 2 minutes of silence: read decayed, it says the period is hardly moving (the average would say 71/s)
    assert health.decayed_rate(period.recent_rate, period.progress_epoch, period.progress_epoch + 120) < 25
    assert health.decayed_rate(period.recent_rate, None, 10.0) == 0.0


def test_the_rate_follows_a_slowdown_and_ignores_a_late_clock(database_url):
    pid = new_period(setup_campaign(2))
    fast = [(1e9 + t, 1000) for t in range(0, 120)]
    slow = [(1e9 + t, 10) for t in range(120, 240)]
    period = rate_after(pid, [*fast, *slow, (1e9, 10)])  # the last from a worker whose clock is behind
    assert period.recent_rate < 1000 * 0.05 + 10  # the burst is forgotten
    assert period.progress_epoch == 1e9 + 239


def test_failures_are_summarized_by_reason_without_what_differs_per_customer():
    results = [{"new_status": "failed", "err": f"render failed: RenderLimitExceeded: message is {1000 + i} bytes",
                "xid": f"c{i}"} for i in range(5)]
    results += [{"new_status": "failed", "err": "550 5.1.1 <a@b.example>: user unknown", "xid": "x"},
                {"new_status": "sent", "err": None, "xid": "ok"}]
    summary = health.summarize(results)
    assert summary == {
        "render failed: RenderLimitExceeded: message is N bytes": {"count": 5, "examples": ["c0", "c1", "c2"]},
        "550 5.1.1 <address>: user unknown": {"count": 1, "examples": ["x"]},
    }


def test_the_summary_keeps_at_most_twenty_reasons_and_counts_the_rest():
    merged = None
    for i in range(30):
        merged = health.merge(merged, {f"reason {i}": {"count": 2, "examples": [f"c{i}"]}})
    reasons = merged["reasons"]
    assert len(reasons) == health.MAX_REASONS + 1 and reasons[health.OTHER]["count"] == 2 * 10
    assert sum(r["count"] for r in reasons.values()) == 60 == merged["judged"]


def test_suppressions_are_recorded_but_never_judged():
    merged = health.merge(None, {"suppressed: customer is unsubscribed": {"count": 300, "examples": []}})
    assert merged["judged"] == 0
    assert not health.judge(merged, sent=0, failed=300, max_share=0.05, min_tried=200).halt


@pytest.mark.parametrize(("sent", "failed", "halt"), [
    (190, 9, False),  # too few tried to judge
    (190, 10, False),  # 10 of 200 = 5%: not over the threshold
    (189, 11, True),  # 5.5%
    (1000, 5000, True),
])
def test_the_halt_rule(sent, failed, halt):
    summary = health.merge(None, {"render failed: UndefinedError: x": {"count": failed, "examples": ["a"]}})
    verdict = health.judge(summary, sent, failed, max_share=0.05, min_tried=200)
    assert verdict.halt is halt
    if halt:
        assert "render failed: UndefinedError: x" in verdict.reason
        assert f"{failed / (sent + failed):.0%}" in verdict.reason


def test_after_a_halt_the_period_is_judged_afresh():
    summary = health.merge(None, {"render failed: E: x": {"count": 750, "examples": []}})
    assert health.judge(summary, 250, 750, 0.05, 200).halt
    summary = health.restart_window(summary, 250, 750)
    summary = health.merge(summary, {"render failed: E: x": {"count": 2, "examples": []}})
    assert not health.judge(summary, 250 + 998, 752, 0.05, 200).halt  # 2 of 1,000 since the resume
    assert not health.judge(summary, 250, 750, 0, 1).halt  # a share of 0 turns the rule off


def test_the_eta_comes_from_the_recent_rate():
    now = utcnow()
    p = SimpleNamespace(status=PeriodStatus.RUNNING, sent=5_000, failed=0, total=20_000, planned_at=now,
                        started_at=now - timedelta(minutes=10), completed_at=None, recent_rate=100.0,
                        progress_epoch=now.timestamp())
    info = health.progress(p, now)
    assert info["rate_per_second"] == pytest.approx(100) and info["eta_seconds"] == pytest.approx(150)
    assert info["remaining"] == 15_000


def test_a_period_nobody_plans_is_stalled_then_swept(database_url, redis_server, monkeypatch):
    cid = setup_campaign(30)
    pid = new_period(cid)  # queued; its task went nowhere (no worker consumes the test broker)
    later = utcnow() + timedelta(minutes=5)
    with session_scope() as s:
        view = periods.public(s, s.get(SendPeriod, pid), now=later)
    assert view["state"] == "stalled" and "waiting for a worker" in view["state_reason"]
    assert view["stalled_since"] is not None and view["eta_seconds"] is None
    sent = []
    monkeypatch.setattr(sweeper.jobs, "run_period", sent.append)
    monkeypatch.setattr(sweeper.jobs, "deliver_chunks", lambda ids: sent.extend(ids))
    assert sweeper.sweep(later) == {"plans": [pid], "chunks": []} and sent == [pid]
    assert sweeper.sweep(later + timedelta(seconds=30)) == {"plans": [], "chunks": []}  # once per lease
    with session_scope() as s:
        assert s.get(SendPeriod, pid).redispatched_at is not None


def test_chunks_whose_lease_ran_out_are_swept_and_reported(database_url, redis_server, monkeypatch):
    cid = setup_campaign(30)
    pid = new_period(cid)
    chunk_ids: list[int] = []
    periods.coordinate(pid, chunk_ids.extend)
    now = utcnow()
    with session_scope() as s:  # one chunk taken by a worker elsewhere that then died
        assert chunk_repo.take_lease(s, chunk_ids[0], now, now + timedelta(seconds=1), "elsewhere/ns:1")
    sent = []
    monkeypatch.setattr(sweeper.jobs, "run_period", sent.append)
    monkeypatch.setattr(sweeper.jobs, "deliver_chunks", lambda ids: sent.extend(ids))
    assert sweeper.sweep(now) == {"plans": [], "chunks": []}  # moving, and the lease holds
    later = now + timedelta(minutes=5)
    with session_scope() as s:
        view = periods.public(s, s.get(SendPeriod, pid), now=later)
    assert view["state"] == "stalled" and f"chunk {1}" in view["state_reason"] and "stopped" in view["state_reason"]
    assert sweeper.sweep(later) == {"plans": [], "chunks": chunk_ids}  # the dead one and the never-taken ones
