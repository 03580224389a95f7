"""POST /events/conversions.csv through real HTTP: streamed offline conversions, checked whole before
anything is queued (a bad row refuses the file with its line number), queued in batches, attributed by
customer + campaign by the real task function."""

import pytest
from sqlalchemy import select

from campaigns.db import session_scope
from campaigns.models import Customer, Event, Send, utcnow
from campaigns.services import events
from campaigns.settings import get_settings
from tests.api.test_events_api import QUEUE, queued_tasks, run_worker
from tests.api.test_tracking_api import sent_to_many

HEADER = "event_id,campaign_id,customer_external_id,revenue,occurred_at"
CSV = {"Content-Type": "text/csv"}



@pytest.fixture
def sent(api, queue):
    """(campaign id, {customer external id: send id}) of a period sent to 3 customers just now."""
    cid, _ = sent_to_many(api, 3)
    queue.delete(QUEUE)
    with session_scope() as s:
        rows = s.execute(select(Customer.external_id, Send.id).join(Send, Send.customer_id == Customer.id)).all()
    return cid, dict(rows)


def post_csv(api, text: str | bytes, role: str = "ingest"):
    return api("POST", "/events/conversions.csv", role, content=text, headers=dict(CSV))


def test_offline_conversions_are_queued_in_batches_and_attributed(api, queue, sent, monkeypatch):
    monkeypatch.setattr(events, "ENQUEUE_BATCH", 2)
    cid, sends = sent
    today = utcnow().isoformat()
    lines = [
        HEADER + ",store",  # an extra column is ignored
        f"pos-1,{cid},m0,12.50,{today},Berlin",
        f'pos-2,{cid},"m1",7.25,{today},"Paris, FR"',  # quoted fields
        f"pos-3,{cid},m0,3,{today},Berlin",
        f"pos-4,{cid},stranger,9.99,{today},Rome",  # no send to this customer: unattributed, counted
        f"pos-5,{cid},m2,0,{today},Rome",
    ]
    r = post_csv(api, "\r\n".join(lines) + "\r\n")
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 5}
    tasks = queued_tasks(queue)
    assert [[e["event_id"] for e in payload] for _, payload in tasks] == [["pos-1", "pos-2"], ["pos-3", "pos-4"],
                                                                          ["pos-5"]]
    assert tasks[0][1][0]["type"] == "conversion" and tasks[0][1][0]["revenue"] == 12.5
    run_worker(queue)
    with session_scope() as s:
        m0, m1 = s.get(Send, sends["m0"]), s.get(Send, sends["m1"])
        assert (m0.conversions, m0.revenue, m1.conversions, m1.revenue) == (2, 15.5, 1, 7.25)
        assert dict(s.execute(select(Event.event_id, Event.status)).all()) == {
            "pos-1": "applied", "pos-2": "applied", "pos-3": "applied", "pos-4": "unattributed", "pos-5": "applied"}
        assert events.feedback_counts(s, cid)["by_type"]["conversion"] == {
            "applied": 4, "unattributed": 1, "excluded": 0}
    # the same file again changes nothing: event ids count once
    assert post_csv(api, "\r\n".join(lines)).status_code == 202
    run_worker(queue)
    with session_scope() as s:
        assert s.get(Send, sends["m0"]).conversions == 2


def test_a_bad_row_refuses_the_whole_file_with_its_line_and_queues_nothing(api, queue, sent, monkeypatch):
    monkeypatch.setattr(events, "ENQUEUE_BATCH", 2)  # the bad rows come after several full batches
    cid, _ = sent
    good = [f"ok-{i},{cid},m{i % 3},1.5,2030-01-0{1 + i % 9}T10:00:00Z" for i in range(6)]  # lines 2-7

    def file(bad_row: str) -> str:
        return "\n".join([HEADER, *good, bad_row, f"after,{cid},m0,1,2030-01-01"]) + "\n"

    cases = [
        (f"b,{cid},m0,,2030-01-01T00:00:00Z", "line 8.revenue", "missing value"),
        (f",{cid},m0,1,2030-01-01T00:00:00Z", "line 8.event_id", "missing value"),
        (f"b,{cid},,1,2030-01-01T00:00:00Z", "line 8.customer_external_id", "missing value"),
        (f"b,{cid},m0,1,", "line 8.occurred_at", "missing value"),
        (f"b,{cid},m0,-3,2030-01-01T00:00:00Z", "line 8.revenue", "greater than or equal to 0"),
        (f"b,{cid},m0,NaN,2030-01-01T00:00:00Z", "line 8.revenue", ""),
        (f"b,{cid},m0,inf,2030-01-01T00:00:00Z", "line 8.revenue", "finite"),
        (f"b,{cid},m0,twelve,2030-01-01T00:00:00Z", "line 8.revenue", "number"),
        (f"b,{cid},m0,1,31/01/2030", "line 8.occurred_at", "datetime"),
        (f"b,{cid},m0,1,2030-02-30T00:00:00Z", "line 8.occurred_at", ""),
        ("b,987654,m0,1,2030-01-01T00:00:00Z", "line 8.campaign_id", "no campaign with id 987654"),
        ("b,abc,m0,1,2030-01-01T00:00:00Z", "line 8.campaign_id", "integer"),
        (f"b,{cid},m0,1,2030-01-01T00:00:00Z,extra", "line 8", "more fields than header"),
    ]
    for bad, loc, fragment in cases:
        r = post_csv(api, file(bad))
        assert r.status_code == 422, (bad, r.text)
        body = r.json()
        assert body["error"] == "invalid_input"
        assert [d["loc"] for d in body["detail"]] == [loc], (bad, body)
        assert fragment.lower() in body["detail"][0]["msg"].lower(), (bad, body)
        assert queue.llen(QUEUE) == 0, bad
    with session_scope() as s:
        assert s.execute(select(Event)).first() is None
    assert post_csv(api, file(f"fine,{cid},m0,1,2030-01-01")).status_code == 202
    assert sum(len(p) for _, p in queued_tasks(queue)) == 8


def test_bad_files_are_422(api, queue, sent):
    cid, _ = sent
    cases = [
        ("", "body", "empty"),
        ("event_id,campaign_id,customer_external_id,revenue\nx,1,m0,1\n", "line 1", "occurred_at"),
        (HEADER + "\n", "body", "no rows"),
        (b"event_id,campaign_id,customer_external_id,revenue,occurred_at\nx,1,m\xff,1,2030-01-01\n", "line 2",
         "utf-8"),
        (f"{HEADER}\nx,{cid},m0,1,2030-01-01\ny,{cid},m{'0' * 140_000},1,2030-01-01\n", "line 3", "field limit"),
        (f'{HEADER}\nx,{cid},m0,1,2030-01-01\ny,{cid},"m0,1,2030-01-01\nz,{cid},m1,1,2030-01-01\n', "line 3",
         "not closed"),
    ]
    for text, loc, fragment in cases:
        r = post_csv(api, text)
        assert r.status_code == 422, (text, r.text)
        assert r.json()["detail"][0]["loc"] == loc and fragment in r.json()["detail"][0]["msg"].lower(), r.json()
    assert queue.llen(QUEUE) == 0


def test_the_row_cap_refuses_the_file(api, queue, sent, monkeypatch):
    cid, _ = sent
    monkeypatch.setenv("MAB_MAX_CONVERSION_ROWS_PER_REQUEST", "3")
    get_settings.cache_clear()
    try:
        rows = [f"r{i},{cid},m0,1,2030-01-01" for i in range(4)]
        r = post_csv(api, "\n".join([HEADER, *rows]))
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == "line 5" and "cap 3" in r.json()["detail"][0]["msg"]
        assert queue.llen(QUEUE) == 0
        assert post_csv(api, "\n".join([HEADER, *rows[:3]])).json() == {"accepted": 3}
    finally:
        monkeypatch.delenv("MAB_MAX_CONVERSION_ROWS_PER_REQUEST")
        get_settings.cache_clear()


def test_only_ingest_and_admin_may_import(api, queue, sent):
    cid, _ = sent
    text = f"{HEADER}\nr1,{cid},m0,1,2030-01-01\n"
    for role in ("marketer", "analyst"):
        assert post_csv(api, text, role).status_code == 403
    assert api("POST", "/events/conversions.csv", None, content=text, headers=dict(CSV)).status_code == 401
    assert post_csv(api, text, "admin").status_code == 202
    assert queue.llen(QUEUE) == 1
