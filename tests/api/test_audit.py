"""The audit log over real HTTP (SQLite and PostgreSQL): every successful mutating call with its key,
role, action, object, status and request id, in the transaction of the work; refusals of known keys as
security events; never a body; queried by admins with filters and keyset pages."""

import json
import re
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from campaigns import signing
from campaigns.db import session_scope
from campaigns.models import ApiKey, AuditLog, Campaign, utcnow
from campaigns.repositories import audit as audit_repo
from campaigns.services import keys, webhooks
from tests.campaigns.test_periods import new_period, sends_of, setup_campaign
from tests.factories import small_campaign_payload

BODY_MARKER = "Quarterly-Whisper-Campaign-7731"  # appears in bodies, must never reach the audit log


def entries(api, **params) -> list[dict]:
    r = api("GET", "/audit", "admin", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def key_id(role: str) -> int:
    with session_scope() as s:
        return s.execute(select(ApiKey.id).where(ApiKey.name == f"test {role}")).scalar_one()


def audit_rows() -> list[AuditLog]:
    with session_scope() as s:
        return list(s.execute(select(AuditLog).order_by(AuditLog.id)).scalars())


def test_mutating_calls_are_recorded_with_key_action_object_and_request_id(api):
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(name=BODY_MARKER),
            headers={"X-Request-ID": "client-req-0001"})
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-ID"] == "client-req-0001"
    cid = r.json()["id"]
    # an id that is not a short plain token (it goes into logs) is replaced by a fresh one
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"name": BODY_MARKER + "-2"},
            headers={"X-Request-ID": "two words\" injected=1" + "x" * 80})
    assert r.status_code == 200
    patch_request_id = r.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", patch_request_id)
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    r = api("POST", "/segments", "admin", json={"name": "vip", "description": BODY_MARKER})
    assert r.status_code == 201
    sid = r.json()["id"]
    r = api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": "p1", "email": "p1@example.com", "segment": "vip", "attributes": {"n": BODY_MARKER}}]})
    assert r.status_code == 200
    # reads are not recorded
    assert api("GET", "/campaigns", "analyst").status_code == 200
    assert api("GET", f"/campaigns/{cid}", "marketer").status_code == 200

    got = entries(api)
    assert [e["action"] for e in got] == [  # newest first
        "POST /customers", "POST /segments", "POST /campaigns/{campaign_id}/start",
        "PATCH /campaigns/{campaign_id}", "POST /campaigns",
    ]
    customers_, segment, start, patch, create = got
    marketer = key_id("marketer")
    assert {k: create[k] for k in ("key_id", "key_name", "key_role", "object_type", "object_id", "status_code",
                                   "outcome", "request_id")} == {
        "key_id": marketer, "key_name": "test marketer", "key_role": "marketer", "object_type": "campaign",
        "object_id": cid, "status_code": 201, "outcome": "success", "request_id": "client-req-0001"}
    assert create["detail"]["created"]["campaign"] == [cid]
    assert len(create["detail"]["created"]["variant"]) == 6  # the 2 x 3 grid
    assert (patch["object_type"], patch["object_id"], patch["status_code"], patch["request_id"]) == (
        "campaign", cid, 200, patch_request_id)
    assert (start["object_type"], start["object_id"], start["key_role"]) == ("campaign", cid, "marketer")
    assert (segment["object_type"], segment["object_id"], segment["key_role"], segment["status_code"]) == (
        "segment", sid, "admin", 201)
    # a bulk import names no single object
    assert (customers_["object_type"], customers_["object_id"]) == ("customer", None)
    # never a body: the name, description, email and attribute sent above appear nowhere in the log
    stored = json.dumps([e.model_dump(mode="json") for e in audit_rows()])
    assert BODY_MARKER not in stored and "p1@example.com" not in stored
    assert all(abs((utcnow() - e.created_at).total_seconds()) < 120 for e in audit_rows())


def test_a_request_that_fails_or_rolls_back_leaves_no_success_entry(api):
    before = len(audit_rows())
    assert api("POST", "/campaigns/999/start", "marketer").status_code == 404
    assert api("PATCH", "/campaigns/999", "marketer", json={"name": "x"}).status_code == 404
    assert api("POST", "/campaigns", "marketer", json={"name": "x"}).status_code == 422
    # the import writes its first rows, then meets a bad one: everything rolls back, the entry too
    rows = [{"external_id": f"r{i}", "email": f"r{i}@example.com"} for i in range(5)]
    rows.append({"external_id": "r0", "email": "again@example.com"})
    assert api("POST", "/customers", "marketer", json={"customers": rows}).status_code == 422
    assert len(audit_rows()) == before


def test_the_entry_is_written_in_the_transaction_of_the_work(api, monkeypatch):
    """When the audit write fails, the work is rolled back with it: there is never work without its entry."""
    def broken(session, row):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit_repo, "insert", broken)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        r = client.post("/campaigns", json=small_campaign_payload(name=BODY_MARKER),
                        headers={"X-API-Key": api.keys["marketer"]})
    assert r.status_code == 500
    with session_scope() as s:
        assert s.execute(select(func.count()).select_from(Campaign)).scalar_one() == 0
    monkeypatch.undo()
    assert api("POST", "/campaigns", "marketer", json=small_campaign_payload()).status_code == 201
    with session_scope() as s:
        assert s.execute(select(func.count()).select_from(Campaign)).scalar_one() == 1
    assert [e["action"] for e in entries(api)] == ["POST /campaigns"]


def test_refusals_of_known_keys_are_security_events(api):
    r = api("POST", "/campaigns", "analyst", json=small_campaign_payload(name=BODY_MARKER),
            headers={"X-Request-ID": "probe-1"})
    assert r.status_code == 403
    assert r.headers["X-Request-ID"] == "probe-1"
    assert api("GET", "/audit", "marketer").status_code == 403  # a read refused is recorded too
    assert api("POST", "/customers/someone/erase", "marketer").status_code == 403
    # a revoked key still in use
    with session_scope() as s:
        row, revoked = keys.create_key(s, "old ingest", "ingest")
        row.revoked_at = utcnow()
        revoked_id = row.id
    assert api("POST", "/events", None, headers={"X-API-Key": revoked}, json={"events": []}).status_code == 401
    # no key, or an unknown one: not recorded (anyone can send those at no cost)
    assert api("POST", "/campaigns", None).status_code == 401
    assert api("POST", "/campaigns", None, headers={"X-API-Key": "mab_unknown"}).status_code == 401

    got = entries(api, outcome="refused")
    assert [(e["action"], e["status_code"], e["key_role"]) for e in got] == [
        ("POST /events", 401, "ingest"),
        ("POST /customers/{external_id}/erase", 403, "marketer"),
        ("GET /audit", 403, "marketer"),
        ("POST /campaigns", 403, "analyst"),
    ]
    events_, erase, read, create = got
    assert events_["key_id"] == revoked_id and events_["detail"]["reason"] == "invalid or revoked API key"
    assert create["key_id"] == key_id("analyst") and create["request_id"] == "probe-1"
    assert create["detail"]["reason"] == "role 'analyst' may not do this (allowed: admin, marketer)"
    assert (erase["object_type"], erase["object_id"]) == ("customer", None)  # no such customer; never its id
    assert "someone" not in json.dumps(erase)
    assert all(e["outcome"] == "refused" for e in got)
    assert entries(api, outcome="success") == []
    with session_scope() as s:
        assert s.execute(select(func.count()).select_from(Campaign)).scalar_one() == 0


def test_filters_and_keyset_pages(api):
    cids = []
    for i in range(3):
        r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(name=f"c{i}"))
        cids.append(r.json()["id"])
    for cid in cids:
        assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    assert api("PATCH", f"/campaigns/{cids[0]}", "admin", json={"name": "renamed"}).status_code == 409  # active
    assert api("POST", f"/campaigns/{cids[0]}/pause", "admin").status_code == 200
    assert api("POST", "/campaigns", "ingest", json={}).status_code == 403

    everything = entries(api)
    assert len(everything) == 8  # 3 creations, 3 starts, 1 pause, 1 refusal (the 409 is not a success)
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)

    assert {e["action"] for e in entries(api, key_id=key_id("admin"))} == {"POST /campaigns/{campaign_id}/pause"}
    starts = entries(api, action="POST /campaigns/{campaign_id}/start")
    assert sorted(e["object_id"] for e in starts) == cids
    first = entries(api, object_type="campaign", object_id=cids[0])
    assert [e["action"] for e in first] == [
        "POST /campaigns/{campaign_id}/pause", "POST /campaigns/{campaign_id}/start", "POST /campaigns"]
    assert [e["status_code"] for e in entries(api, outcome="refused")] == [403]
    assert entries(api, object_type="campaign", object_id=999) == []

    # time window: since inclusive, until exclusive
    oldest = everything[-1]["at"]
    assert len(entries(api, since=oldest)) == 8
    assert entries(api, until=oldest) == []
    later = (utcnow() + timedelta(minutes=5)).isoformat()
    assert entries(api, since=later) == []

    # pages of 3, newest first, following X-Next-Cursor to the end: every entry exactly once
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = api("GET", "/audit", "admin", params=params)
        assert r.status_code == 200
        seen += [e["id"] for e in r.json()]
        pages += 1
        cursor = r.headers.get("X-Next-Cursor")
        if cursor is None:
            break
    assert seen == ids and pages == 3

    for params, loc in (({"limit": 10**6}, "limit"), ({"cursor": "abc"}, "cursor"), ({"cursor": "²"}, "cursor"),
                        ({"since": later, "until": oldest}, "until"), ({"object_id": 0}, "query.object_id"),
                        ({"outcome": "maybe"}, "query.outcome")):
        r = api("GET", "/audit", "admin", params=params)
        assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == [loc], (params, r.text)


def test_public_routes_and_the_signed_webhook_are_not_recorded(api, monkeypatch):
    """Clicks, unsubscribes and webhook conversions are the customers' and the shop's own actions,
    stored as events; no API key made them."""
    cid = setup_campaign(4)
    pid = new_period(cid)
    from campaigns.services import periods

    periods.run_period(pid)
    send = sends_of(pid)[0]
    monkeypatch.setenv("MAB_WEBHOOK_SECRETS", "whsec-audit-test")
    from campaigns.settings import get_settings

    get_settings.cache_clear()
    assert api("GET", f"/t/{signing.sign('click', send.id)}", None, follow_redirects=False).status_code == 307
    assert api("POST", f"/u/{signing.sign('unsub', send.id)}", None).status_code == 200
    # a unique body: the replay store (Redis) outlives this test's database
    body = json.dumps({"events": [{"event_id": f"shop-{uuid.uuid4().hex}", "type": "conversion", "send_id": send.id,
                                   "revenue": 3.0}]}).encode()
    r = api("POST", "/webhooks/conversions", None, content=body,
            headers={**webhooks.sign(body), "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert audit_rows() == []


def test_other_path_parameters_are_kept_and_junk_in_a_refused_path_is_not(api):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    r = api("POST", f"/campaigns/{cid}/segments/champions/promote", "marketer", json={"arm": 1, "reason": "x"})
    assert r.status_code == 201, r.text
    # refused before the path is validated: the unknown action is not spelled into the log
    junk = "<script>" + "a" * 5000
    assert api("POST", f"/campaigns/{cid}/{junk}", "analyst").status_code == 403
    refused, promote = entries(api)[:2]
    assert (promote["action"], promote["object_id"], promote["detail"]["path"]) == (
        "POST /campaigns/{campaign_id}/segments/{segment}/promote", cid, {"segment": "champions"})
    assert promote["detail"]["created"]["model_action"]
    assert refused["action"] == "POST /campaigns/{campaign_id}/{action}" and "aaaa" not in json.dumps(refused)
