"""GDPR export and erasure over real HTTP, on SQLite and PostgreSQL: the export holds everything stored
about the customer; erasure leaves nothing personal anywhere in the database, stops all mail, and keeps
every campaign's statistics and reports exactly as they were. No path logs an email address."""

import io
import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select, text, update

from campaigns.db import get_engine, session_scope
from campaigns.logging_config import configure_logging
from campaigns.models import Customer, Send, SendStatus
from campaigns.services import periods
from tests.campaigns.test_periods import new_period, outbox_files
from tests.campaigns.test_report import all_sends, feedback, fold
from tests.factories import customers as make_customers
from tests.factories import small_campaign_payload

VICTIM = {"external_id": "victim-7f3a9", "email": "Victim.Person+news@Example.org", "segment": "champions",
          "attributes": {"first_name": "Zebulon", "city": "Quixotown", "tier": 3}}
BYSTANDER = {"external_id": "bystander-2b", "email": "by.stander@example.net", "segment": "champions",
             "attributes": {"first_name": "Ottoline"}}
USER_AGENT = "Mozilla/5.0 (Linux; Android 14; Pixel-of-Zebulon)"
# What must be gone after erasure, wherever it was (matched case-insensitively).
PERSONAL = [VICTIM["email"], VICTIM["external_id"], "Zebulon", "Quixotown", "Pixel-of-Zebulon", "victim-order"]


def customer_id(external_id: str) -> int:
    with session_scope() as s:
        return s.execute(select(Customer.id).where(Customer.external_id == external_id)).scalar_one()


def sends_of_customer(cid: int) -> list[Send]:
    with session_scope() as s:
        return list(s.execute(select(Send).where(Send.customer_id == cid).order_by(Send.id)).scalars())


@pytest.fixture
def shop(api):
    """40 customers, the victim and a bystander; orders; a campaign with two delivered periods;
    clicks (with a user agent), conversions by send and by customer id, one unattributed; a delivery
    error quoting the victim's address, as an SMTP server words it."""
    people = [*make_customers(40), VICTIM, BYSTANDER]
    assert api("POST", "/customers", "marketer", json={"customers": people}).status_code == 200
    orders = [{"order_id": f"victim-order-{i}", "customer_external_id": VICTIM["external_id"], "amount": 40.0 + i,
               "ordered_at": f"2030-01-0{i + 1}T12:00:00Z"} for i in range(2)]
    orders.append({"order_id": "by-order-1", "customer_external_id": BYSTANDER["external_id"], "amount": 9.5,
                   "ordered_at": "2030-01-03T12:00:00Z"})
    assert api("POST", "/orders", "marketer", json={"orders": orders}).status_code == 200
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload(name="Winter")).json()["id"]
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    for _ in range(2):
        periods.run_period(new_period(cid))
    victim = customer_id(VICTIM["external_id"])
    first, second = sends_of_customer(victim)
    with session_scope() as s:
        s.execute(update(Send).where(Send.id == second.id).values(
            status=SendStatus.FAILED, error=f"550 5.1.1 <{VICTIM['email'].lower()}>: Recipient address rejected"))
    feedback([s for s in all_sends(cid) if s.customer_id != victim], seed=3)
    fold([
        {"event_id": "ev-click-1", "type": "click", "send_id": first.id, "user_agent": USER_AGENT, "link": 0,
         "occurred_at": (first.sent_at + timedelta(minutes=1)).isoformat()},
        {"event_id": "ev-conv-1", "type": "conversion", "campaign_id": cid,
         "customer_external_id": VICTIM["external_id"], "revenue": 31.5,
         "occurred_at": (first.sent_at + timedelta(minutes=3)).isoformat()},
        {"event_id": "ev-conv-2", "type": "conversion", "campaign_id": 999, "customer_external_id":
         VICTIM["external_id"], "revenue": 5.0, "occurred_at": None},
    ])
    return {"campaign": cid, "victim": victim, "sends": [first.id, second.id]}


def report(api, cid: int) -> tuple[dict, str]:
    """The report and its CSV, computed now (an erasure makes the stored one behind its data)."""
    r = api("GET", f"/campaigns/{cid}/report?fresh=true", "analyst")
    assert r.status_code == 200
    body = r.json()
    body.pop("generated_at")
    body.pop("freshness")
    csv = api("GET", f"/campaigns/{cid}/report.csv?fresh=true", "analyst")
    assert csv.status_code == 200
    return body, csv.text


def database_dump() -> list[tuple[str, str, str]]:
    """(table, column, value as text) of every value of every column of every table."""
    engine = get_engine()
    out = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            cols = [c["name"] for c in inspect(engine).get_columns(table)]
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):  # noqa: S608 (names from the schema)
                out += [(table, col, str(v)) for col, v in zip(cols, row, strict=True) if v is not None]
    return out


def test_export_holds_everything_stored_about_the_customer(api, shop):
    r = api("GET", f"/customers/{VICTIM['external_id']}/export", "admin")
    assert r.status_code == 200, r.text
    x = r.json()
    c = x["customer"]
    assert (c["id"], c["external_id"], c["email"], c["segment"], c["status"], c["consent"]) == (
        shop["victim"], VICTIM["external_id"], VICTIM["email"], "champions", "active", True)
    assert c["attributes"] == VICTIM["attributes"]
    assert [(o["order_id"], o["amount"]) for o in x["orders"]] == [("victim-order-0", 40.0), ("victim-order-1", 41.0)]
    assert [s["send_id"] for s in x["sends"]] == shop["sends"]
    first, second = x["sends"]
    assert (first["campaign_id"], first["campaign"], first["period"], first["segment"]) == (
        shop["campaign"], "Winter", 1, "champions")
    assert (first["status"], first["clicks"], first["conversions"], first["revenue"]) == ("sent", 1, 1, 31.5)
    assert first["sent_at"] and first["first_click_at"] and first["first_conversion_at"]
    for s in x["sends"]:  # the variant it got, or the control group's baseline
        assert (s["group"] == "control") == (s["arm"] < 0) == (s["variant"] is None)
        assert s["arm"] < 0 or set(s["params"]) == {"tone", "offer"}
    assert second["period"] == 2 and second["status"] == "failed" and VICTIM["email"].lower() in second["error"]
    events = {e["event_id"]: e for e in x["events"]}
    assert set(events) == {"ev-click-1", "ev-conv-1", "ev-conv-2"}
    assert events["ev-click-1"]["user_agent"] == USER_AGENT and events["ev-click-1"]["status"] == "applied"
    assert (events["ev-conv-1"]["send_id"], events["ev-conv-1"]["revenue"]) == (first["send_id"], 31.5)
    assert (events["ev-conv-2"]["status"], events["ev-conv-2"]["send_id"]) == ("unattributed", None)
    # nothing of anyone else
    assert "bystander" not in r.text.lower() and "by-order" not in r.text and "c1@example.com" not in r.text
    # audited: who exported whom (by internal id)
    entry = api("GET", "/audit", "admin", params={"action": "GET /customers/{external_id}/export"}).json()
    assert [(e["object_type"], e["object_id"], e["key_role"]) for e in entry] == [
        ("customer", shop["victim"], "admin")]
    assert api("GET", "/customers/nobody/export", "admin").status_code == 404
    assert api("GET", f"/customers/{VICTIM['external_id']}/export", "marketer").status_code == 403


def test_erasure_removes_every_trace_stops_mail_and_keeps_the_statistics(api, shop):
    cid = shop["campaign"]
    before = report(api, cid)
    ledger_before = [(s.id, s.arm, s.segment_id, s.propensity, s.status, s.clicks, s.conversions, s.revenue)
                     for s in all_sends(cid)]
    assert outbox_files(cid, 1) and any(f.name == f"{shop['sends'][0]}.eml" for f in outbox_files(cid, 1))
    hits = [d for d in database_dump() if any(p.lower() in d[2].lower() for p in PERSONAL)]
    assert {t for t, _, _ in hits} >= {"customer", "order", "event", "send"}  # the scan sees them before

    r = api("POST", f"/customers/{VICTIM['external_id']}/erase", "admin")
    assert r.status_code == 200, r.text
    result = r.json()
    placeholder = result["external_id"]
    assert placeholder.startswith("erased-") and len(placeholder) > 20
    assert (result["customer_id"], result["status"], result["orders_deleted"], result["events_scrubbed"],
            result["sends_kept"]) == (shop["victim"], "erased", 2, 3, 2)

    # not one value of any column of any table still holds the email, the ids or the attributes
    hits = [d for d in database_dump() if any(p.lower() in d[2].lower() for p in PERSONAL)]
    assert hits == []
    # the statistics are exactly those of before: the report, its CSV, the ledger row by row
    assert report(api, cid) == before
    assert [(s.id, s.arm, s.segment_id, s.propensity, s.status, s.clicks, s.conversions, s.revenue)
            for s in all_sends(cid)] == ledger_before
    # the outbox's copies of the emails are gone; everyone else's stay
    names = {f.name for n in (1, 2) for f in outbox_files(cid, n)}
    assert not names & {f"{sid}.eml" for sid in shop["sends"]} and len(names) >= 40

    # the old id is unknown now; the placeholder's export holds nothing personal
    assert api("GET", f"/customers/{VICTIM['external_id']}", "marketer").status_code == 404
    assert api("GET", f"/customers/{VICTIM['external_id']}/export", "admin").status_code == 404
    r = api("GET", f"/customers/{placeholder}/export", "admin")
    assert r.status_code == 200
    assert not [p for p in PERSONAL if p.lower() in r.text.lower()]
    x = r.json()
    c = x["customer"]
    assert (c["email"], c["attributes"], c["segment"], c["status"], c["consent"]) == (
        f"{placeholder}@erased.invalid", {}, None, "erased", False)
    assert x["orders"] == []
    assert [s["send_id"] for s in x["sends"]] == shop["sends"]  # anonymous now, kept for the statistics
    assert all(e["user_agent"] is None and e["customer_external_id"] is None for e in x["events"])
    # the events of its sends; the unattributed conversion named the customer only by external id,
    # and now names no one: it stays (counted as unattributed) but is nobody's any more
    assert sorted(e["event_id"] for e in x["events"]) == ["ev-click-1", "ev-conv-1"]

    # the next period mails everyone else in the segment, and not the erased customer
    third = new_period(cid)
    periods.run_period(third)
    with session_scope() as s:
        claimed = set(s.execute(select(Send.customer_id).where(Send.period_id == third)).scalars())
    assert shop["victim"] not in claimed and customer_id(BYSTANDER["external_id"]) in claimed
    assert len(claimed) == 41  # 40 + the bystander

    # the bystander is untouched
    other = api("GET", f"/customers/{BYSTANDER['external_id']}/export", "admin").json()
    assert other["customer"]["email"] == BYSTANDER["email"] and len(other["orders"]) == 1

    # audited by internal id; the external id never reaches the log
    entry = api("GET", "/audit", "admin", params={"object_type": "customer", "object_id": shop["victim"]}).json()
    assert [e["action"] for e in entry] == [
        "GET /customers/{external_id}/export", "POST /customers/{external_id}/erase"]

    # erasing again (by the placeholder) is harmless; an unknown id is a 404 that changes nothing
    again = api("POST", f"/customers/{placeholder}/erase", "admin").json()
    assert (again["customer_id"], again["orders_deleted"], again["events_scrubbed"]) == (shop["victim"], 0, 0)
    assert api("POST", "/customers/nobody/erase", "admin").status_code == 404
    assert report(api, cid)[0] != {}  # still readable


def test_export_erase_and_audit_paths_log_no_personal_data(api, shop):
    raw: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            raw.append(record.getMessage() + " " + repr(record.__dict__))

    buf = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buf)
    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        ext = VICTIM["external_id"]
        assert api("GET", f"/customers/{ext}", "marketer").status_code == 200
        assert api("GET", f"/customers/{ext}/export", "marketer").status_code == 403
        assert api("GET", f"/customers/{ext}/export", "admin").status_code == 200
        assert api("POST", f"/customers/{ext}/erase", "marketer").status_code == 403
        assert api("POST", f"/customers/{ext}/erase", "admin").status_code == 200
        assert api("GET", "/audit", "admin").status_code == 200
        assert api("POST", "/customers", "marketer", json={"customers": [BYSTANDER]}).status_code == 200
    finally:
        logging.getLogger().removeHandler(keep)
        configure_logging()
    assert any("erased" in line for line in raw)  # the erasure is logged, by internal id
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) >= 7
    for p in (VICTIM["email"], BYSTANDER["email"], ext, "Zebulon"):
        assert p.lower() not in buf.getvalue().lower()
        assert not [r for r in raw if p.lower() in r.lower()]  # not even before the formatter's masking
