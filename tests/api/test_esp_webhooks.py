"""POST /webhooks/esp/mailgun through real HTTP: Mailgun's HMAC (timestamp + token) verified, a token
accepted once, a bad signature a 401 that records nothing; a permanent 5.1.1 failure suppresses the
send's customer, a complaint unsubscribes it and records a complaint event; other events change nothing."""

import hashlib
import hmac
import json
import time
import uuid

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Customer, Event, PeriodStatus, Send
from campaigns.services import periods
from campaigns.settings import get_settings
from tests.campaigns.test_periods import new_period, setup_campaign

KEY = "key-mailgun-signing-0123456789"  # noqa: S105
PATH = "/webhooks/esp/mailgun"


@pytest.fixture
def mailgun(monkeypatch):
    monkeypatch.setenv("MAB_MAILGUN_SIGNING_KEY", KEY)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def event(send: Send, email: str, kind: str = "failed", severity: str = "permanent", code: int = 550,
          enhanced: str = "5.1.1", key: str = KEY, timestamp: int | None = None, token: str | None = None) -> bytes:
    ts, token = str(timestamp or int(time.time())), token or uuid.uuid4().hex
    return json.dumps({
        "signature": {"timestamp": ts, "token": token,
                      "signature": hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()},
        "event-data": {"event": kind, "severity": severity, "recipient": email,
                       "message": {"headers": {"message-id": send.message_id.strip("<>")}},
                       "delivery-status": {"code": code, "enhanced-code": enhanced, "message": "no such user"}},
    }).encode()


def sends_with_email(n: int) -> list[tuple[Send, str]]:
    cid = setup_campaign(n)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        return list(s.execute(select(Send, Customer.email).join(Customer, Customer.id == Send.customer_id)
                              .where(Send.period_id == pid).order_by(Send.id)).all())


def statuses() -> dict[str, str]:
    with session_scope() as s:
        return dict(s.execute(select(Customer.email, Customer.status)).all())


def post(api, body: bytes):
    return api("POST", PATH, role=None, content=body, headers={"Content-Type": "application/json"})


def test_mailgun_bounces_and_complaints(api, mailgun):
    rows = sends_with_email(10)
    (s0, e0), (s1, e1), (s2, e2), (s3, e3) = rows[:4]
    r = post(api, event(s0, e0))
    assert r.status_code == 200 and r.json()["outcome"].startswith("hard bounce"), r.text
    assert post(api, event(s1, e1, kind="complained")).json()["outcome"].startswith("complaint")
    assert post(api, event(s2, e2, severity="temporary", code=452, enhanced="4.2.2")).json()["outcome"] \
        .startswith("ignored")
    assert post(api, event(s3, e3, code=550, enhanced="5.7.1")).json()["outcome"].startswith("ignored")
    assert post(api, event(s3, e3, kind="delivered")).json()["outcome"].startswith("ignored")
    assert post(api, event(s3, "someone@else.example")).json()["outcome"].startswith("unmatched")
    status = statuses()
    assert (status[e0], status[e1], status[e2], status[e3]) == ("bounced", "unsubscribed", "active", "active")
    assert sum(v == "active" for v in status.values()) == 8
    with session_scope() as s:
        assert s.execute(select(Event.send_id).where(Event.type == "complaint")).scalars().all() == [s1.id]


def test_mailgun_refuses_bad_signatures_and_replays_and_records_nothing(api, mailgun):
    rows = sends_with_email(4)
    (s0, e0) = rows[0]
    before = statuses()
    stale = int(time.time()) - 3600
    for body in (event(s0, e0, key="not-the-key"), event(s0, e0, timestamp=stale), b"not json",
                 json.dumps({"event-data": {"event": "failed"}}).encode()):
        r = post(api, body)
        assert r.status_code == 401, r.text
    assert statuses() == before
    token = uuid.uuid4().hex  # the replay store (Redis) outlives the test
    body = event(s0, e0, kind="delivered", token=token)
    assert post(api, body).status_code == 200
    replay = event(s0, e0, token=token)  # a new body, the same token: refused
    assert post(api, replay).status_code == 401
    assert statuses() == before


def test_mailgun_webhook_is_off_without_a_key(api):
    assert post(api, b"{}").status_code == 503
