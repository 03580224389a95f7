"""Send windows: parsing and release times (pure), then a period on a real database whose emails
leave only when their window opens in each customer's time zone, exactly once, with the window
learned as the factor `send_window` and shown in the report's factor effects."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import select

from campaigns import send_windows
from campaigns.db import session_scope
from campaigns.errors import InvalidInput
from campaigns.models import AllocationSnapshot, ChunkStatus, PeriodStatus, Send, SendChunk, SendPeriod, Variant
from campaigns.schemas import CampaignCreate, CustomerIn
from campaigns.services import campaigns, customers, periods, reports, sending, sweeper
from tests.factories import customers as make_customers
from tests.factories import small_campaign_payload

MONDAY = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


@pytest.mark.parametrize("text, expected", [("tue 09:00", "tue 09:00"), ("Tuesday 9:05", "tue 09:05"),
                                            ("  SAT 23:59 ", "sat 23:59")])
def test_windows_are_normalised(text, expected):
    assert send_windows.normalize_window(text, "w") == expected


@pytest.mark.parametrize("windows, field", [
    (["tue 9"], "send_windows[0]"), (["tue 09:00", "xyz 10:00"], "send_windows[1]"), (["mon 24:00"], "send_windows[0]"),
    (["mon 10:60"], "send_windows[0]"), (["mon 10:00", "monday 10:00"], "send_windows[1]"), ([7], "send_windows[0]")])
def test_bad_windows_name_the_field(windows, field):
    with pytest.raises(InvalidInput) as exc:
        send_windows.normalize(windows, {"tone": ["a"]})
    assert exc.value.field == field


def test_a_window_open_at_the_start_sends_now_else_at_its_next_opening():
    utc = ZoneInfo("UTC")
    assert send_windows.opening("mon 11:30", utc, MONDAY) == MONDAY - timedelta(minutes=30)  # open for an hour
    assert send_windows.opening("mon 10:59", utc, MONDAY) == MONDAY + timedelta(days=7, minutes=-61)  # closed
    assert send_windows.opening("mon 12:00", utc, MONDAY) == MONDAY
    assert send_windows.opening("tue 09:00", utc, MONDAY) == MONDAY + timedelta(hours=21)
    # local time: 09:00 in Tokyo (UTC+9) on Tuesday is 00:00 UTC on Tuesday
    assert send_windows.opening("tue 09:00", ZoneInfo("Asia/Tokyo"), MONDAY) == MONDAY + timedelta(hours=12)
    # New York in winter (UTC-5): Monday 09:00 local was 14:00 UTC, still ahead
    assert send_windows.opening("mon 09:00", ZoneInfo("America/New_York"), MONDAY) == MONDAY + timedelta(hours=2)


def test_release_times_fall_back_to_the_campaign_zone_and_count_it():
    at, fallbacks = send_windows.release_times(
        ["tue 09:00", "sat 11:00"], np.array([0, 0, 1, 0]), ["Asia/Tokyo", "Mars/Olympus", None, 5], "UTC", MONDAY)
    assert fallbacks == 2  # an unknown name and a number; no attribute at all is not a fallback
    expected = [MONDAY + timedelta(hours=12), MONDAY + timedelta(hours=21), MONDAY + timedelta(days=4, hours=23),
                MONDAY + timedelta(hours=21)]
    assert [datetime.fromtimestamp(t, UTC) for t in at] == expected


def _label(at: datetime) -> str:
    return f"{send_windows.DAYS[at.weekday()]} {at:%H:%M}"


def _setup(n: int, windows: list[str], zones: dict[int, object]) -> int:
    rows = make_customers(n)
    for i, tz in zones.items():
        rows[i]["attributes"]["timezone"] = tz
    with session_scope() as s:
        customers.import_customers(s, customers.json_rows([CustomerIn(**c) for c in rows]))
        cid = campaigns.create(s, CampaignCreate(**small_campaign_payload(send_windows=windows, holdout_share=0.1))).id
        campaigns.transition(s, cid, "start")
    return cid


def test_emails_leave_only_when_their_window_opens_exactly_once(database_url, redis_server, monkeypatch):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    open_now, later = _label(now - timedelta(minutes=5)), _label(now + timedelta(hours=3))
    n = 600
    # customers 0-49 live in Tokyo: the window open in UTC opened hours ago or is ahead for them
    zones = {i: "Asia/Tokyo" for i in range(50)} | {i: "Nowhere/Atlantis" for i in range(50, 60)}
    cid = _setup(n, [open_now, later], zones)
    with session_scope() as s:
        variants = list(s.execute(select(Variant).where(Variant.campaign_id == cid)).scalars())
        pid = periods.start_period(s, cid).id
    assert len(variants) == 12 and {v.params["send_window"] for v in variants} == {open_now, later}

    outcome = periods.run_period(pid)
    assert outcome == PeriodStatus.RUNNING  # planned, some windows still closed

    with session_scope() as s:
        period = s.get(SendPeriod, pid)
        chunks = list(s.execute(select(SendChunk).where(SendChunk.period_id == pid)).scalars())
        sends = list(s.execute(select(Send).where(Send.period_id == pid)).scalars())
        public = periods.public(s, period)
        window_of = {v.arm: v.params["send_window"] for v in variants} | {-1: open_now}  # baseline: first window
    assert period.timezone_fallbacks == 10 and public["timezone_fallbacks"] == 10
    assert len(sends) == n and len({x.customer_id for x in sends}) == n
    # every chunk holds the sends of one window opening, and only its own period's sends
    for chunk in chunks:
        inside = [x for x in sends if chunk.first_send_id <= x.id <= chunk.last_send_id]
        assert len(inside) == chunk.size and {window_of[x.arm] for x in inside} == {chunk.window}
        opened = chunk.release_at <= datetime.now(UTC)
        assert {x.status for x in inside} == ({"sent"} if opened else {"queued"})
    assert sum(c.size for c in chunks) == n
    waiting = [c for c in chunks if c.release_at > datetime.now(UTC)]
    assert waiting and all(c.status == ChunkStatus.PENDING and c.attempts == 0 for c in waiting)
    assert public["state"] == "waiting"
    first = min(waiting, key=lambda c: c.release_at)
    assert public["state_reason"] == f"waiting for window {first.window} at {first.release_at:%Y-%m-%d %H:%M} UTC"
    by_window = {w["window"]: w for w in public["windows"]}
    assert set(by_window) == {open_now, later}
    assert sum(w["total"] for w in by_window.values()) == n
    assert sum(w["sent"] for w in by_window.values()) == public["sent"] == sum(x.status == "sent" for x in sends)
    assert by_window[later]["state"] == "waiting" and by_window[later]["sent"] == 0

    with session_scope() as s:  # just after the window opens, before the sweeper hands it out: not stalled
        just_opened = periods.public(s, s.get(SendPeriod, pid), now=first.release_at + timedelta(seconds=5))
    assert just_opened["state"] == "sending"
    # a worker handed a chunk early leaves it alone: no lease, no attempt
    assert sending.deliver_chunk(first.id).startswith("waiting: window opens at")
    with session_scope() as s:
        assert s.get(SendChunk, first.id).attempts == 0
    # the sweeper releases nothing before its time, then each chunk once when its window opened
    # (a minute before the window: the period has been idle for hours, and yet nothing of it is lost)
    assert sweeper.sweep(now=first.release_at - timedelta(minutes=1)) == {"plans": [], "chunks": []}
    future = datetime.now(UTC) + timedelta(days=8)
    monkeypatch.setattr(sending, "utcnow", lambda: future)
    released = sweeper.sweep(now=future)["chunks"]
    assert set(released) == {c.id for c in waiting}
    assert not set(sweeper.sweep(now=future + timedelta(seconds=1))["chunks"]) & set(released)
    for chunk_id in released:
        sending.deliver_chunk(chunk_id)
        sending.deliver_chunk(chunk_id)  # handed out twice: delivered once

    with session_scope() as s:
        period = s.get(SendPeriod, pid)
        sends = list(s.execute(select(Send).where(Send.period_id == pid)).scalars())
        public = periods.public(s, period)
        report = reports.lift_report(s, cid)
    assert period.status == PeriodStatus.COMPLETED and period.sent == n
    assert Counter(x.status for x in sends) == {"sent": n}
    assert all(w["state"] == "done" for w in public["windows"])
    # propensities as logged by the draw: holdout share, else (1 - holdout) × the arm's weight
    with session_scope() as s:
        snaps = {sn.segment_id: sn for sn in s.execute(select(AllocationSnapshot)).scalars()}
    assert all(len(sn.arms) == 12 and abs(sum(sn.weights) - 1) < 1e-9 for sn in snaps.values())
    for x in sends:
        snap = snaps[x.segment_id]
        expected = 0.1 if x.arm == -1 else 0.9 * snap.weights[snap.arms.index(x.arm)]
        assert x.propensity == pytest.approx(expected)
    effects = report["segments"][0]["factor_effects"]["conversion_rate"]
    assert {r["level"] for r in effects if r["factor"] == "send_window"} == {open_now, later}
    html = reports.render_html(report)  # the analyst's page labels the factor in words
    assert f"<td>send window</td><td class=\"text\">{open_now}</td>" in html


def test_bad_window_input_is_a_422_naming_the_field(database_url):
    with session_scope() as s:
        with pytest.raises(InvalidInput) as exc:
            campaigns.create(s, CampaignCreate(**small_campaign_payload(send_windows=["tue 09:00"],
                                                                        send_window_timezone="Mars/Base")))
        assert exc.value.field == "send_window_timezone"
        with pytest.raises(InvalidInput) as exc:
            campaigns.create(s, CampaignCreate(**small_campaign_payload(send_windows=["someday 09:00"])))
        assert exc.value.field == "send_windows[0]"
        factors = {"tone": ["a", "b"], "send_window": ["x"]}
        with pytest.raises(InvalidInput) as exc:
            campaigns.create(s, CampaignCreate(**small_campaign_payload(send_windows=["tue 09:00"], factors=factors)))
        assert exc.value.field == "factors.send_window"
        with pytest.raises(InvalidInput) as exc:
            campaigns.create(s, CampaignCreate(**small_campaign_payload(send_window_timezone="UTC")))
        assert exc.value.field == "send_window_timezone"


def test_a_window_that_opens_while_paused_is_sent_on_resume(database_url, redis_server, monkeypatch):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cid = _setup(200, [_label(now - timedelta(minutes=5)), _label(now + timedelta(hours=2))], {})
    with session_scope() as s:
        pid = periods.start_period(s, cid).id
    assert periods.run_period(pid) == PeriodStatus.RUNNING
    with session_scope() as s:
        campaigns.transition(s, cid, "pause")
        waiting = [c.id for c in s.execute(select(SendChunk).where(SendChunk.status == ChunkStatus.PENDING)).scalars()]
        assert periods.public(s, s.get(SendPeriod, pid))["state"] == "paused"
    future = datetime.now(UTC) + timedelta(days=8)
    monkeypatch.setattr(sending, "utcnow", lambda: future)
    assert sweeper.sweep(now=future)["chunks"] == []  # a paused campaign's windows are not released
    assert all(sending.deliver_chunk(c) == "waiting: campaign is paused" for c in waiting)
    with session_scope() as s:
        campaigns.transition(s, cid, "resume")  # hands out the unfinished chunks after the commit
        unfinished = periods.chunk_repo.unfinished_ids(s, pid)
    assert unfinished == waiting
    for chunk_id in unfinished:
        sending.deliver_chunk(chunk_id)
    with session_scope() as s:
        period = s.get(SendPeriod, pid)
        assert period.status == PeriodStatus.COMPLETED and period.sent == 200
        statuses = Counter(x.status for x in s.execute(select(Send).where(Send.period_id == pid)).scalars())
    assert statuses == {"sent": 200}
