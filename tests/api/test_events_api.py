"""POST /events: validation at the edge, and the accepted batches really queued in Redis for the
worker (no worker runs here, so the Celery messages stay in the `mab` list; `run_worker` hands them
to the real task function, as a Celery worker would)."""

import base64
import json

import pytest

from tests.api.conftest import QUEUE  # noqa: F401 (re-exported for the other API tests)
from tests.factories import small_campaign_payload


@pytest.fixture
def campaign_id(api) -> int:
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload())
    assert r.status_code == 201, r.text
    return r.json()["id"]


def conversion(event_id: str, campaign_id: int, customer: str = "c1", **extra) -> dict:
    return {"event_id": event_id, "type": "conversion", "campaign_id": campaign_id,
            "customer_external_id": customer, **extra}


def queued_tasks(queue) -> list[tuple[str, list | None]]:
    """(task name, first argument or None) of every queued Celery message, oldest first."""
    out = []
    for raw in reversed(queue.lrange(QUEUE, 0, -1)):  # kombu LPUSHes: newest first
        msg = json.loads(raw)
        body = msg["body"]
        if msg["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        out.append((msg["headers"]["task"], args[0] if args else None))
    return out


def run_worker(queue) -> list[dict]:
    """Take every queued message off the list and run its task (worker.tasks.process_events, or
    fold_clicks for the click stream) in this process, oldest first: what a Celery worker does, minus
    the process boundary."""
    from worker.tasks import fold_clicks, process_events

    tasks = queued_tasks(queue)
    queue.delete(QUEUE)
    assert all(name in ("worker.tasks.process_events", "worker.tasks.fold_clicks") for name, _ in tasks)
    return [fold_clicks.apply().get() if payload is None else process_events.apply(args=(payload,)).get()
            for _, payload in tasks]


def test_valid_batch_is_accepted_and_queued_once_per_request(api, queue, campaign_id):
    assert queue.llen(QUEUE) == 0
    batch = [
        conversion("e1", campaign_id, revenue=12.5, occurred_at="2030-01-02T03:04:05+00:00"),
        conversion("e2", campaign_id, customer="c2"),
        {"event_id": "e3", "type": "click", "campaign_id": campaign_id, "customer_external_id": "c3"},
    ]
    r = api("POST", "/events", "ingest", json={"events": batch})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 3}
    assert queue.llen(QUEUE) == 1

    r = api("POST", "/events", "ingest", json={"events": [conversion("e4", campaign_id)]})
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    assert queue.llen(QUEUE) == 2

    tasks = queued_tasks(queue)
    assert [name for name, _ in tasks] == ["worker.tasks.process_events"] * 2
    first, second = tasks[0][1], tasks[1][1]
    assert [e["event_id"] for e in first] == ["e1", "e2", "e3"]
    assert first[0] == {"event_id": "e1", "type": "conversion", "send_id": None, "campaign_id": campaign_id,
                        "customer_external_id": "c1", "revenue": 12.5, "occurred_at": "2030-01-02T03:04:05Z",
                        "user_agent": None, "link": None}
    assert first[2]["type"] == "click" and first[2]["revenue"] == 0.0
    assert [e["event_id"] for e in second] == ["e4"]


def bad_batches(cid: int) -> list[tuple[list[dict], str, str]]:
    """(events, loc, message fragment): each refuses the whole batch."""
    ok = conversion("ok", cid)
    return [
        ([ok, {"event_id": "x", "type": "conversion"}], "events[1]", "campaign_id and customer_external_id"),
        ([ok, {"event_id": "x", "type": "conversion", "campaign_id": cid}], "events[1]", "customer_external_id"),
        ([{"event_id": "x", "type": "click", "customer_external_id": "c1"}], "events[0]", "send_id"),
        ([ok, {"event_id": "x", "type": "complaint", "campaign_id": cid, "customer_external_id": "c1"}],
         "events[1].send_id", "complaint names the send_id"),
        ([{"event_id": "x", "type": "complaint", "send_id": 1, "revenue": 2.0}], "events[0].revenue", "no revenue"),
        ([{"event_id": "x", "type": "click", "send_id": 1, "user_agent": "x" * 513}], "events[0].user_agent",
         "at most 512"),
        ([{"event_id": "x", "type": "click", "send_id": 1, "link": -1}], "events[0].link", "greater than or equal"),
        ([{"event_id": "x", "type": "unsubscribe", "send_id": 1}], "events[0].type", "complaint"),
        ([ok, conversion("x", cid, revenue=-1.0)], "events[1].revenue", "greater than or equal to 0"),
        ([{"event_id": "x", "type": "click", "campaign_id": cid, "customer_external_id": "c1", "revenue": 3.0}],
         "events[0].revenue", "no revenue"),
        ([ok, conversion("x", cid), conversion("ok", cid, customer="c9")], "events[2].event_id", "appears twice"),
        ([], "events", "at least 1"),
        ([{**ok, "type": "open"}], "events[0].type", "click"),
        ([{**ok, "event_id": ""}], "events[0].event_id", "at least 1"),
        ([{**ok, "colour": "red"}], "events[0].colour", "Extra inputs"),
        ([{**ok, "occurred_at": "yesterday"}], "events[0].occurred_at", "datetime"),
    ]


def test_bad_events_are_422_naming_the_event_and_nothing_is_queued(api, queue, campaign_id):
    # One database for all the cases: each must be refused whole and queue nothing.
    for events, loc, msg in bad_batches(campaign_id):
        r = api("POST", "/events", "ingest", json={"events": events})
        assert r.status_code == 422, (loc, r.text)
        body = r.json()
        assert body["error"] == "invalid_input", body
        assert any(d["loc"] == loc and msg.lower() in d["msg"].lower() for d in body["detail"]), (loc, body)
        assert queue.llen(QUEUE) == 0, loc
    assert api("POST", "/events", "ingest", json={"events": [conversion("ok", campaign_id)]}).status_code == 202
    assert queue.llen(QUEUE) == 1


def test_non_finite_revenue_is_422(api, queue, campaign_id):
    """Python's JSON parser accepts NaN and Infinity (and 1e999 overflows to inf): all refused."""
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = ('{"events": [{"event_id": "e1", "type": "conversion", '
               f'"campaign_id": {campaign_id}, "customer_external_id": "c1", "revenue": {literal}}}]}}')
        r = api("POST", "/events", "ingest", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (literal, r.text)
        assert [d["loc"] for d in r.json()["detail"]] == ["events[0].revenue"], literal
    assert queue.llen(QUEUE) == 0
    raw = raw.replace("1e999", "1e300")  # huge but finite is fine
    r = api("POST", "/events", "ingest", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 202 and queue.llen(QUEUE) == 1


def test_more_events_than_the_cap_is_422(api, queue, campaign_id):
    events = [conversion(f"e{i}", campaign_id) for i in range(10_001)]  # default cap: 10,000
    r = api("POST", "/events", "ingest", json={"events": events})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": "events", "msg": "10001 events exceed the cap of 10000 per request"}]
    assert queue.llen(QUEUE) == 0
    r = api("POST", "/events", "ingest", json={"events": events[:10_000]})
    assert r.status_code == 202 and r.json() == {"accepted": 10_000}
    assert queue.llen(QUEUE) == 1


def test_events_for_unknown_sends_or_campaigns_are_accepted_stored_unattributed_and_counted(api, queue, campaign_id):
    """The issue's bad-input rule: not a 422, but stored as unattributed (campaign NULL when it does not
    exist: the column is a foreign key) and counted."""
    from sqlalchemy import select

    from campaigns.db import session_scope
    from campaigns.models import Event
    from campaigns.services import events

    batch = [
        {"event_id": "x1", "type": "click", "send_id": 987654},
        conversion("x2", 987654, revenue=3.0),
        conversion("x3", campaign_id, customer="nobody", revenue=1.0),
        {"event_id": "x4", "type": "complaint", "send_id": 987654},
    ]
    r = api("POST", "/events", "ingest", json={"events": batch})
    assert r.status_code == 202 and r.json() == {"accepted": 4}
    assert run_worker(queue) == [{"received": 4, "new": 4, "applied": 0, "excluded": 0, "duplicates": 0}]
    with session_scope() as s:
        rows = {e.event_id: (e.status, e.campaign_id, e.send_id) for e in s.execute(select(Event)).scalars()}
        assert events.feedback_counts(s, campaign_id)["unattributed"] == 1
        assert events.feedback_counts(s, None)["unattributed"] == 3
    assert rows == {"x1": ("unattributed", None, None), "x2": ("unattributed", None, None),
                    "x3": ("unattributed", campaign_id, None), "x4": ("unattributed", None, None)}
