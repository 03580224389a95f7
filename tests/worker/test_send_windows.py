"""Send windows end to end, on real parts (HTTP API, Celery workers, beat and its sweeper, Redis,
SQLite): a campaign with a window open now and one a minute ahead. The first window's emails
leave at once; the second's wait, the period says it is waiting for that window, a worker is
killed with SIGKILL meanwhile, and when the window opens beat's sweeper releases its chunks to
the restarted worker. Every customer ends with exactly one email, none sent before its window."""

import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from campaigns import send_windows
from campaigns.db import session_scope
from campaigns.models import Send, SendChunk
from tests.factories import small_campaign_payload
from tests.worker.test_faults import child, make_stack, marketer, period, wait_for

N = 400


def _label(at: datetime) -> str:
    return f"{send_windows.DAYS[at.weekday()]} {at:%H:%M}"


def _windows() -> tuple[str, str, datetime]:
    """A window open now, and the next whole minute at least 30 s away (the wait stays short)."""
    now = datetime.now(UTC)
    later = (now + timedelta(seconds=30)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return _label(now - timedelta(minutes=5)), _label(later), later


@pytest.fixture
def fast_sweep(monkeypatch):
    """Beat's sweeper every second: a window's chunks are released within a second of its opening."""
    monkeypatch.setenv("MAB_SWEEP_INTERVAL_SECONDS", "1")


def test_each_window_is_released_when_it_opens_exactly_once_across_a_worker_kill(request, workdir, tmp_path,
                                                                                  fast_sweep):
    # One database: the test waits for a real window to open (30-90 s); the same plan, release and
    # delivery run on both databases in tests/campaigns/test_send_windows.py.
    st = make_stack(request, workdir, tmp_path / "stack", "sqlite")
    request.addfinalizer(st["stack"].stop)
    m = marketer(st)
    body = "external_id,email,segment,timezone\n" + "".join(
        f"w{i},w{i}@example.com,{'champions' if i % 2 else 'hibernating'},{'Nowhere/Atlantis' if i < 7 else ''}\n"
        for i in range(N))
    assert m.post("/customers/csv", content=body.encode(), headers={"Content-Type": "text/csv"}).status_code == 200
    bad = m.post("/campaigns", json=small_campaign_payload(send_windows=["tue 25:00"]))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == "send_windows[0]"
    open_now, later, opens_at = _windows()
    r = m.post("/campaigns", json=small_campaign_payload(send_windows=[open_now, later]))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["send_windows"] == [open_now, later] and "send_window" in r.json()["factors"]
    assert m.post(f"/campaigns/{cid}/start").status_code == 200
    assert m.post(f"/campaigns/{cid}/periods").status_code == 202

    first = wait_for(st, cid, lambda p: p["windows"] and p["windows"][0]["state"] == "done"
                     and p["state"] == "waiting", "the open window to be sent", timeout=60)
    assert datetime.now(UTC) < opens_at  # (the test's own premise: the second window is still closed)
    by_window = {w["window"]: w for w in first["windows"]}
    assert by_window[later]["sent"] == 0 and by_window[later]["state"] == "waiting"
    assert first["sent"] == by_window[open_now]["total"] > 0
    assert first["state_reason"] == f"waiting for window {later} at {opens_at:%Y-%m-%d %H:%M} UTC"
    assert first["timezone_fallbacks"] == 7

    victim = child(st, "worker")
    os.killpg(victim.proc.pid, signal.SIGKILL)  # no goodbye; a fresh worker takes over
    victim.proc.wait()
    time.sleep(1)
    st["stack"].supervise()
    assert victim.restarts == 1

    done = wait_for(st, cid, lambda p: p["status"] == "completed", "the second window to be sent", timeout=150)
    assert done["sent"] == N and all(w["state"] == "done" for w in done["windows"])
    with session_scope() as s:
        sends = list(s.execute(select(Send).where(Send.campaign_id == cid)).scalars())
        release = {c.id: c for c in s.execute(select(SendChunk)).scalars()}
    assert Counter(x.status for x in sends) == {"sent": N}
    for chunk in release.values():  # nobody before their window
        assert all(x.sent_at >= chunk.release_at for x in sends if chunk.first_send_id <= x.id <= chunk.last_send_id)
    outbox = st["home"] / "outbox" / f"campaign-{cid}" / "period-1"
    assert len(list(outbox.glob("*.eml"))) == N  # one file per send id: none twice, none missing
    assert len({x.customer_id for x in sends}) == N
    assert period(st, cid)["state"] == "completed"
