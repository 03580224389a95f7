"""Idempotency-Key on campaign creation, period triggers and bulk imports, through real HTTP requests
(TestClient for the sequential cases; a real uvicorn server and concurrent clients for the races), on
SQLite and PostgreSQL."""

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy import func, select, update

from api.app import create_app
from campaigns.db import session_scope
from campaigns.models import Campaign, Customer, IdempotencyKey, Order, SendPeriod, utcnow
from campaigns.stack import free_port
from tests.api.test_events_api import QUEUE
from tests.factories import api_keys, customers, small_campaign_payload

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def count(model) -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def with_key(key: str, **kw) -> dict:
    return {**kw, "headers": {KEY: key, **kw.get("headers", {})}}



def test_same_key_and_body_replay_the_first_response_and_create_once(api):
    body = small_campaign_payload(name="once")
    first = api("POST", "/campaigns", "marketer", **with_key("create-1", json=body))
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    again = api("POST", "/campaigns", "marketer", **with_key("create-1", json=body))
    assert again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    assert count(Campaign) == 1
    with session_scope() as s:  # the response was committed with the campaign it describes
        row = s.execute(select(IdempotencyKey)).scalar_one()
        assert (row.key, row.status, row.response_status) == ("create-1", "completed", 201)
        assert row.response_body.encode() == first.content


def test_same_key_with_another_body_is_refused_and_writes_nothing(api):
    assert api("POST", "/campaigns", "marketer", **with_key("k", json=small_campaign_payload())).status_code == 201
    r = api("POST", "/campaigns", "marketer", **with_key("k", json=small_campaign_payload(name="other")))
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_input"
    [detail] = r.json()["detail"]
    assert detail["loc"] == "header.Idempotency-Key"
    assert "different request" in detail["msg"]
    assert count(Campaign) == 1
    # Another path with the same key and body is another request too.
    r = api("POST", "/customers", "marketer", **with_key("k", json={"customers": customers(1)}))
    assert r.status_code == 422
    assert count(Customer) == 0


def test_keys_belong_to_one_api_key_and_no_key_means_no_replay(api):
    body = small_campaign_payload()
    assert api("POST", "/campaigns", "marketer", **with_key("shared", json=body)).status_code == 201
    other = api("POST", "/campaigns", "admin", **with_key("shared", json=body))
    assert other.status_code == 201 and REPLAYED not in other.headers
    assert count(Campaign) == 2
    assert api("POST", "/campaigns", "marketer", json=body).status_code == 201
    assert api("POST", "/campaigns", "marketer", json=body).status_code == 201
    assert count(Campaign) == 4


@pytest.mark.parametrize(("key", "ok"), [("", False), ("x" * 256, False), ("x" * 255, True),
                                         ("a b~!", True), ("tab\there", False)])
def test_key_must_be_1_to_255_printable_characters(api, key, ok):
    r = api("POST", "/campaigns", "marketer", **with_key(key, json=small_campaign_payload()))
    if ok:
        assert r.status_code == 201, r.text
        return
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "header.Idempotency-Key"
    assert count(Campaign) == 0


def test_period_trigger_is_replayed_and_an_error_records_nothing(api):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    # A refused request (409: the campaign is a draft) stores nothing: the same key runs again later.
    r = api("POST", f"/campaigns/{cid}/periods", "marketer", **with_key("p1"))
    assert r.status_code == 409
    assert count(IdempotencyKey) == 0
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    first = api("POST", f"/campaigns/{cid}/periods", "marketer", **with_key("p1"))
    assert first.status_code == 202, first.text
    again = api("POST", f"/campaigns/{cid}/periods", "marketer", **with_key("p1"))
    assert (again.status_code, again.headers.get(REPLAYED)) == (202, "true")
    assert again.json()["id"] == first.json()["id"]
    assert count(SendPeriod) == 1
    # Without the key the same call is a new request (refused: the period is still in flight).
    assert api("POST", f"/campaigns/{cid}/periods", "marketer").status_code == 409


def test_an_expired_key_is_forgotten(api):
    body = small_campaign_payload()
    first = api("POST", "/campaigns", "marketer", **with_key("old", json=body)).json()
    with session_scope() as s:
        s.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, minutes=1)))
    again = api("POST", "/campaigns", "marketer", **with_key("old", json=body))
    assert again.status_code == 201 and REPLAYED not in again.headers
    assert again.json()["id"] != first["id"]
    assert count(Campaign) == 2
    assert count(IdempotencyKey) == 1  # the old row made room for the new one


def test_json_imports_replay_the_first_result(api):
    body = {"customers": customers(5)}
    first = api("POST", "/customers", "marketer", **with_key("cust", json=body))
    assert first.json() == {"received": 5, "inserted": 5, "updated": 0}
    again = api("POST", "/customers", "marketer", **with_key("cust", json=body))
    assert again.json() == first.json() and again.headers[REPLAYED] == "true"
    # Done again without the key, the same import reports updates, not inserts.
    assert api("POST", "/customers", "marketer", json=body).json()["updated"] == 5

    orders = {"orders": [{"order_id": "o1", "customer_external_id": "c0", "ordered_at": "2030-01-01T00:00:00Z",
                          "amount": 10}]}
    first = api("POST", "/orders", "marketer", **with_key("ord", json=orders))
    assert first.status_code == 200, first.text
    again = api("POST", "/orders", "marketer", **with_key("ord", json=orders))
    assert again.content == first.content and again.headers[REPLAYED] == "true"
    assert count(Order) == 1


def test_csv_import_is_hashed_while_spooled(api):
    csv = "external_id,email,segment,first_name\n" + "".join(f"x{i},x{i}@example.com,champions,N{i}\n"
                                                             for i in range(50))
    headers = {"Content-Type": "text/csv", KEY: "csv-1"}
    first = api("POST", "/customers/csv", "marketer", content=csv, headers=dict(headers))
    assert first.json() == {"received": 50, "inserted": 50, "updated": 0}
    again = api("POST", "/customers/csv", "marketer", content=csv, headers=dict(headers))
    assert again.json() == first.json() and again.headers[REPLAYED] == "true"
    # Streamed in chunks (no Content-Length), the same bytes are the same request.
    chunks = (csv[i:i + 100].encode() for i in range(0, len(csv), 100))
    streamed = api("POST", "/customers/csv", "marketer", content=chunks, headers=dict(headers))
    assert streamed.json() == first.json() and streamed.headers[REPLAYED] == "true"
    changed = api("POST", "/customers/csv", "marketer", content=csv + "x99,x99@example.com,champions,Z\n",
                  headers=dict(headers))
    assert changed.status_code == 422
    assert count(Customer) == 50


def test_event_batches_and_offline_conversions_are_queued_once(api, queue):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload()).json()["id"]
    batch = {"events": [{"event_id": "e1", "type": "conversion", "campaign_id": cid,
                         "customer_external_id": "c1", "revenue": 5}]}
    first = api("POST", "/events", "ingest", **with_key("ev", json=batch))
    assert (first.status_code, first.json()) == (202, {"accepted": 1})
    assert queue.llen(QUEUE) == 1
    again = api("POST", "/events", "ingest", **with_key("ev", json=batch))
    assert (again.status_code, again.json(), again.headers[REPLAYED]) == (202, {"accepted": 1}, "true")
    assert queue.llen(QUEUE) == 1  # nothing queued the second time

    csv = f"event_id,campaign_id,customer_external_id,revenue,occurred_at\npos-1,{cid},c1,3.5,2030-01-01T00:00:00Z\n"
    headers = {"Content-Type": "text/csv", KEY: "pos"}
    first = api("POST", "/events/conversions.csv", "ingest", content=csv, headers=dict(headers))
    assert (first.status_code, first.json()) == (202, {"accepted": 1})
    again = api("POST", "/events/conversions.csv", "ingest", content=csv, headers=dict(headers))
    assert again.status_code == 202 and again.headers[REPLAYED] == "true"
    assert queue.llen(QUEUE) == 2


# --- Concurrency, against a real uvicorn server -------------------------------------------------

@pytest.fixture
def live_server(database_url, redis_server):
    """The app under a real uvicorn (its own event loop and thread pool) in a thread of this process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "keys": api_keys(), "database_url": database_url}
    server.should_exit = True
    thread.join(20)


def post_campaign(live, key: str, body: dict) -> httpx.Response:
    headers = {"X-API-Key": live["keys"]["marketer"], KEY: key}
    return httpx.post(live["url"] + "/campaigns", json=body, headers=headers, timeout=60)


def test_concurrent_requests_with_one_key_execute_once(live_server):
    body = small_campaign_payload(name="raced")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post_campaign(live_server, "race", body), range(8)))
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert sum(REPLAYED not in r.headers for r in responses) == 1  # one executed, seven replayed
    assert count(Campaign) == 1


class WriteBlocker:
    """Holds the database still so a request stays in flight: on PostgreSQL a lock that stops
    inserts into `campaign` (the work), on SQLite the writer lock (the key's claim and the work)."""

    def __init__(self, database_url: str):
        self.url = database_url

    def __enter__(self):
        if self.url.startswith("sqlite"):
            self.conn = sqlite3.connect(Path(self.url.removeprefix("sqlite:///")), isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            url = self.url.replace("postgresql+psycopg", "postgresql")
            self.conn = psycopg.connect(url)
            self.conn.execute("LOCK TABLE campaign IN SHARE ROW EXCLUSIVE MODE")
            # pg_stat_activity is read once per transaction: poll it from a connection of its own.
            self.probe = psycopg.connect(url, autocommit=True)
        return self

    def waiting(self) -> int:
        """PostgreSQL: backends waiting on a lock (SQLite cannot tell)."""
        row = self.probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        return row[0]

    def wait_for(self, n: int) -> None:
        if self.url.startswith("sqlite"):
            time.sleep(1.0)
            return
        deadline = time.monotonic() + 20
        while self.waiting() < n:
            assert time.monotonic() < deadline, f"fewer than {n} requests reached the lock"
            time.sleep(0.05)

    def __exit__(self, *exc):
        if self.url.startswith("sqlite"):
            self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()
            self.probe.close()
        self.conn.close()


def test_a_second_request_waits_for_the_first_and_replays_its_response(live_server):
    """The first request is held inside its transaction (key claimed, work not done); the second,
    with the same key, arrives meanwhile: it waits, then answers with the first one's response."""
    body = small_campaign_payload(name="held")
    with ThreadPoolExecutor(2) as pool, WriteBlocker(live_server["database_url"]) as blocker:
        first = pool.submit(post_campaign, live_server, "held", body)
        blocker.wait_for(1)  # the first one waits inside its transaction
        second = pool.submit(post_campaign, live_server, "held", body)
        blocker.wait_for(2)  # the second one waits on the first one's key
        assert not first.done() and not second.done()
    a, b = first.result(), second.result()
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    assert a.content == b.content
    assert sorted(REPLAYED in r.headers for r in (a, b)) == [False, True]
    assert count(Campaign) == 1


def test_purge_forgets_only_expired_keys(api):
    from campaigns.services import idempotency

    body = small_campaign_payload()
    for key in ("fresh", "stale-1", "stale-2"):
        assert api("POST", "/campaigns", "marketer", **with_key(key, json=body)).status_code == 201
    with session_scope() as s:
        s.execute(update(IdempotencyKey).where(IdempotencyKey.key.like("stale-%"))
                  .values(created_at=utcnow() - timedelta(hours=25)))
    with session_scope() as s:
        assert idempotency.purge_expired(s) == 2
    with session_scope() as s:
        assert list(s.execute(select(IdempotencyKey.key)).scalars()) == ["fresh"]
