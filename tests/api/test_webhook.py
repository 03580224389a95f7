"""POST /webhooks/conversions through real HTTP: HMAC-SHA256 over timestamp + raw body, 5-minute
tolerance, replays refused (seen signatures in the real Redis), secret rotation, then the same checks
as POST /events; accepted conversions are folded in by the real task function."""

import json
import time

import pytest
import redis
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Customer, Event, Send
from campaigns.services import webhooks
from campaigns.settings import get_settings
from tests.api.test_events_api import QUEUE, run_worker
from tests.api.test_tracking_api import sent_to_many

NEW, OLD, FOREIGN = "whsec-new-0123456789abcdef", "whsec-old-fedcba9876543210", "whsec-not-one-of-ours"  # noqa: S105
PATH = "/webhooks/conversions"


@pytest.fixture
def settings_env(monkeypatch):
    """Set MAB_ variables for this test; settings are re-read at once and again after the test."""

    def set_(**env: str) -> None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    set_(MAB_WEBHOOK_SECRETS=f"{NEW},{OLD}")
    yield set_
    get_settings.cache_clear()


@pytest.fixture
def queue(redis_server):
    r = redis.Redis.from_url(redis_server.url)
    r.delete(QUEUE)
    for key in r.scan_iter(webhooks.REPLAY_PREFIX + "*"):
        r.delete(key)
    yield r
    r.delete(QUEUE)
    r.close()


def body_of(*events: dict) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def post(api, body: bytes, headers: dict):
    return api("POST", PATH, None, content=body, headers={"Content-Type": "application/json", **headers})


@pytest.fixture
def sent(api, queue, settings_env):
    """(campaign id, {send id: customer external id}) of a period sent to 3 customers."""
    cid, tokens = sent_to_many(api, 3)
    queue.delete(QUEUE)
    with session_scope() as s:
        rows = s.execute(select(Send.id, Customer.external_id).join(Customer, Customer.id == Send.customer_id)).all()
    return cid, dict(rows)


def test_signed_conversions_are_accepted_and_folded_in_by_the_worker(api, queue, sent):
    cid, customers = sent
    (send_a, _), (send_b, customer_b) = sorted(customers.items())[:2]
    body = body_of(
        {"event_id": "shop-1", "type": "conversion", "send_id": send_a, "revenue": 19.9},
        {"event_id": "shop-2", "type": "conversion", "campaign_id": cid, "customer_external_id": customer_b,
         "revenue": 5.0},
    )
    r = post(api, body, webhooks.sign(body))  # no API key: the signature is the authentication
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2}
    assert run_worker(queue) == [{"received": 2, "new": 2, "applied": 2, "excluded": 0, "duplicates": 0}]
    with session_scope() as s:
        a, b = s.get(Send, send_a), s.get(Send, send_b)
        assert (a.conversions, a.revenue, b.conversions, b.revenue) == (1, 19.9, 1, 5.0)
        assert set(s.execute(select(Event.status)).scalars()) == {"applied"}


def test_missing_stale_tampered_or_foreign_signatures_are_401_and_queue_nothing(api, queue, sent):
    cid, customers = sent
    send_id = next(iter(customers))
    body = body_of({"event_id": "shop-9", "type": "conversion", "send_id": send_id, "revenue": 1.0})
    now = int(time.time())
    good = webhooks.sign(body, now)
    cases = [
        ({}, "missing"),
        ({"X-MAB-Timestamp": str(now)}, "missing"),
        ({"X-MAB-Signature": good["X-MAB-Signature"]}, "missing"),
        ({**good, "X-MAB-Timestamp": "yesterday"}, "unix seconds"),
        (webhooks.sign(body, now - 360), "stale"),  # margins: the machine may take seconds per case
        (webhooks.sign(body, now + 360), "stale"),
        ({**good, "X-MAB-Timestamp": str(now - 1)}, "bad signature"),  # the timestamp is signed too
        (webhooks.sign(body, now, secret=FOREIGN), "bad signature"),
        ({**good, "X-MAB-Signature": good["X-MAB-Signature"].removeprefix("sha256=")}, "bad signature"),
        ({**good, "X-MAB-Signature": "sha256=" + "0" * 64}, "bad signature"),
        ({**good, "X-API-Key": api.keys["admin"]}, None),  # tampered body below: a key is no substitute
    ]
    tampered = body.replace(b"1.0", b"1000.0")
    for headers, fragment in cases:
        r = post(api, tampered if fragment is None else body, headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"
        assert (fragment or "bad signature") in r.json()["detail"], (headers, r.json())
    assert queue.llen(QUEUE) == 0
    # inside the tolerance, either way, is fine
    assert post(api, body, webhooks.sign(body, now - 290)).status_code == 202
    assert post(api, body, webhooks.sign(body, now + 290)).status_code == 202


def test_a_replayed_request_is_401_and_a_resigned_retry_counts_once(api, queue, sent):
    _, customers = sent
    send_id = next(iter(customers))
    body = body_of({"event_id": "shop-7", "type": "conversion", "send_id": send_id, "revenue": 3.0})
    headers = webhooks.sign(body)
    assert post(api, body, headers).status_code == 202
    r = post(api, body, headers)
    assert r.status_code == 401 and "replayed" in r.json()["detail"]
    assert queue.llen(QUEUE) == 1
    # the replay mark expires after the signature can no longer pass the timestamp check
    [key] = list(queue.scan_iter(webhooks.REPLAY_PREFIX + "*"))
    assert 600 < queue.ttl(key) <= 660
    # a sender's genuine retry is signed again (a new timestamp): accepted, and the event counts once
    time.sleep(1.01)
    assert post(api, body, webhooks.sign(body)).status_code == 202
    run_worker(queue)
    with session_scope() as s:
        assert (s.get(Send, send_id).conversions, s.get(Send, send_id).revenue) == (1, 3.0)


def test_rotation_the_old_secret_verifies_while_listed(api, queue, sent, settings_env):
    _, customers = sent
    send_id = next(iter(customers))

    def body(n):
        return body_of({"event_id": f"rot-{n}", "type": "conversion", "send_id": send_id, "revenue": 1.0})

    assert post(api, body(1), webhooks.sign(body(1), secret=OLD)).status_code == 202  # listed second
    assert post(api, body(2), webhooks.sign(body(2))).status_code == 202  # the first one signs
    assert webhooks.sign(body(2))["X-MAB-Signature"] == webhooks.signature(NEW, webhooks.sign(body(2))[
        "X-MAB-Timestamp"], body(2))
    settings_env(MAB_WEBHOOK_SECRETS=NEW)  # rotation finished: the old secret is removed
    r = post(api, body(3), webhooks.sign(body(3), secret=OLD))
    assert r.status_code == 401 and "bad signature" in r.json()["detail"]
    assert post(api, body(4), webhooks.sign(body(4), secret=NEW)).status_code == 202
    assert queue.llen(QUEUE) == 3


def test_a_signed_but_bad_body_is_422_and_queues_nothing(api, queue, sent):
    cid, customers = sent
    send_id = next(iter(customers))
    ok = {"event_id": "ok", "type": "conversion", "send_id": send_id, "revenue": 1.0}
    cases = [
        (body_of(ok, {"event_id": "c", "type": "click", "send_id": send_id}), "events[1].type", "conversions only"),
        (body_of({**ok, "revenue": -5}), "events[0].revenue", "greater than or equal to 0"),
        (b'{"events": [{"event_id": "n", "type": "conversion", "send_id": 1, "revenue": NaN}]}',
         "events[0].revenue", ""),
        (body_of({"event_id": "x", "type": "conversion", "campaign_id": cid}), "events[0]", "customer_external_id"),
        (body_of(ok, dict(ok)), "events[1].event_id", "appears twice"),
        (b"not json", "body", "json"),
        (body_of(), "events", "at least 1"),
    ]
    for raw, loc, fragment in cases:
        r = post(api, raw, webhooks.sign(raw))
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"] == "invalid_input"
        assert any(d["loc"] == loc and fragment.lower() in d["msg"].lower() for d in r.json()["detail"]), r.json()
    assert queue.llen(QUEUE) == 0
    # unknown sends and campaigns are not bad input: accepted, stored unattributed by the worker
    raw = body_of({"event_id": "lost", "type": "conversion", "campaign_id": 987654, "customer_external_id": "z",
                   "revenue": 2.0})
    assert post(api, raw, webhooks.sign(raw)).status_code == 202
    run_worker(queue)
    with session_scope() as s:
        assert s.execute(select(Event.status, Event.campaign_id)).one() == ("unattributed", None)


def test_unconfigured_webhook_is_503_and_oversized_body_413(api, queue, settings_env):
    body = body_of({"event_id": "e", "type": "conversion", "send_id": 1})
    settings_env(MAB_WEBHOOK_SECRETS="")
    r = post(api, body, webhooks.sign(body, secret=FOREIGN))
    assert r.status_code == 503 and "MAB_WEBHOOK_SECRETS" in r.json()["detail"]
    assert post(api, body, {}).status_code == 401  # unsigned: refused alike, on or off
    settings_env(MAB_WEBHOOK_SECRETS=NEW, MAB_WEBHOOK_MAX_BODY_BYTES="1000")
    big = body_of(*({"event_id": f"e{i}", "type": "conversion", "send_id": 1} for i in range(40)))
    assert len(big) > 1000
    r = post(api, big, webhooks.sign(big))
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    # without a Content-Length (chunked) the read stops at the cap as well
    r = post(api, iter([big[:600], big[600:]]), webhooks.sign(big))
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "content-length" not in r.request.headers
    assert queue.llen(QUEUE) == 0
