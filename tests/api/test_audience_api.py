"""Customers, CSV uploads, segments, orders and RFM derivation through real HTTP requests
(SQLite and PostgreSQL)."""

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import Customer, CustomerStatus, Order, Segment
from campaigns.repositories import customers as customer_repo
from tests.factories import customers

RFM = [
    "champions", "loyal_regulars", "big_spenders", "new_or_occasional",
    "cant_lose_them", "at_risk_regulars", "lapsed_big_spenders", "hibernating",
]
CSV = {"Content-Type": "text/csv"}


def count(model) -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def snapshot() -> list[tuple]:
    """Every customer row as (external_id, email, segment_id, attributes, status)."""
    with session_scope() as s:
        rows = s.execute(select(Customer).order_by(Customer.external_id)).scalars().all()
        return [(c.external_id, c.email, c.segment_id, c.attributes, c.status) for c in rows]


def set_status(external_id: str, status: CustomerStatus) -> None:
    with session_scope() as s:
        customer_repo.set_status(s, customer_repo.get_customer(s, external_id).id, status)


def csv_body(rows: list[list], header=("external_id", "email", "segment", "first_name", "city")) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def loc_and_msg(r) -> tuple[str, str]:
    body = r.json()
    assert body["error"] == "invalid_input", body
    assert len(body["detail"]) >= 1
    return body["detail"][0]["loc"], body["detail"][0]["msg"]


# --- JSON import -----------------------------------------------------------------------------------


def test_json_import_then_get_customer(api):
    r = api("POST", "/customers", "marketer", json={"customers": customers(3)})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 3, "inserted": 3, "updated": 0}
    assert count(Customer) == 3
    r = api("GET", "/customers/c1", "marketer")
    assert r.status_code == 200
    assert r.json() == {"external_id": "c1", "email": "c1@example.com", "segment": "hibernating",
                        "status": "active", "attributes": {"first_name": "Name1"}}

    r = api("GET", "/customers/nobody", "marketer")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "no customer with external_id 'nobody'"}


def test_reimport_updates_and_never_duplicates(api):
    api("POST", "/customers", "marketer", json={"customers": customers(4)})
    again = customers(4) + customers(1, prefix="new")
    for c in again[:4]:
        c["email"] = c["email"].replace("@example.com", "@changed.example")
        c["attributes"] = {"first_name": "Renamed", "tier": 2}
    r = api("POST", "/customers", "marketer", json={"customers": again})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 5, "inserted": 1, "updated": 4}
    assert count(Customer) == 5
    body = api("GET", "/customers/c2", "marketer").json()
    assert body["email"] == "c2@changed.example"
    assert body["attributes"] == {"first_name": "Renamed", "tier": 2}
    assert body["segment"] == "champions"
    # A third identical import changes nothing but counts every row as updated.
    r = api("POST", "/customers", "marketer", json={"customers": again})
    assert r.json() == {"received": 5, "inserted": 0, "updated": 5}
    assert count(Customer) == 5


def test_unsubscribed_and_bounced_stay_so_after_reimport(api):
    api("POST", "/customers", "marketer", json={"customers": customers(3)})
    set_status("c0", CustomerStatus.UNSUBSCRIBED)
    set_status("c1", CustomerStatus.BOUNCED)
    assert api("POST", "/customers", "marketer", json={"customers": customers(3)}).status_code == 200
    r = api("POST", "/customers/csv", "marketer", headers=CSV,
            content=csv_body([["c0", "c0@example.com", "champions", "A", "Oslo"]]))
    assert r.status_code == 200, r.text
    statuses = {c: api("GET", f"/customers/{c}", "marketer").json()["status"] for c in ("c0", "c1", "c2")}
    assert statuses == {"c0": "unsubscribed", "c1": "bounced", "c2": "active"}


def test_import_without_segment_keeps_the_existing_one(api):
    api("POST", "/customers", "marketer", json={"customers": customers(2)})  # c0 champions, c1 hibernating
    r = api("POST", "/customers", "marketer",
            json={"customers": [{"external_id": "c0", "email": "c0@new.example"}]})
    assert r.json() == {"received": 1, "inserted": 0, "updated": 1}
    r = api("POST", "/customers/csv", "marketer", headers=CSV,
            content=csv_body([["c1", "c1@new.example", "", "B", "Rome"]]))
    assert r.json() == {"received": 1, "inserted": 0, "updated": 1}
    c0 = api("GET", "/customers/c0", "marketer").json()
    c1 = api("GET", "/customers/c1", "marketer").json()
    assert (c0["segment"], c0["email"]) == ("champions", "c0@new.example")
    assert (c1["segment"], c1["email"]) == ("hibernating", "c1@new.example")
    # An explicit segment does move the customer.
    api("POST", "/customers", "marketer",
        json={"customers": [{"external_id": "c0", "email": "c0@new.example", "segment": "big_spenders"}]})
    assert api("GET", "/customers/c0", "marketer").json()["segment"] == "big_spenders"

    # A new customer without a segment has none.
    api("POST", "/customers", "marketer", json={"customers": [{"external_id": "x1", "email": "x1@example.com"}]})
    body = api("GET", "/customers/x1", "marketer").json()
    assert body["segment"] == "" and body["attributes"] == {}


BAD_JSON = [
    ([{"external_id": "a", "email": "a@example.com"}, {"external_id": "b", "email": "not-an-email"}],
     "customers[1].email", "pattern"),
    ([{"external_id": "a", "email": "a@example.com", "segment": "whales"}], "customers[0].segment", "whales"),
    ([{"external_id": "a", "email": "a@example.com"}, {"external_id": "b", "email": "b@example.com"},
      {"external_id": "a", "email": "a2@example.com"}], "customers[2].external_id", "appears twice"),
    ([{"external_id": "", "email": "a@example.com"}], "customers[0].external_id", "at least 1"),
    ([{"external_id": "a", "email": "a@example.com", "vip": True}], "customers[0].vip", "Extra inputs"),
    ([], "customers", "at least 1"),
]


def test_bad_json_import_is_422_and_writes_nothing(api):
    # One database for all cases (a fresh one per case would be slow); each case must leave it unchanged.
    api("POST", "/customers", "marketer", json={"customers": customers(2, prefix="a")})  # a0, a1 exist
    before = snapshot()
    for rows, loc, msg in BAD_JSON:
        r = api("POST", "/customers", "marketer", json={"customers": rows})
        assert r.status_code == 422, (loc, r.text)
        got_loc, got_msg = loc_and_msg(r)
        assert got_loc == loc and msg.lower() in got_msg.lower(), (loc, r.json())
        assert snapshot() == before, loc


# --- CSV upload ------------------------------------------------------------------------------------


def test_csv_upload_of_5000_rows(api):
    rows = [[f"k{i}", f"k{i}@example.com", RFM[i % 8], f"Name{i}", f"City{i % 7}"] for i in range(5000)]
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=csv_body(rows))
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 5000, "inserted": 5000, "updated": 0}
    assert count(Customer) == 5000
    assert api("GET", "/customers/k4321", "marketer").json() == {
        "external_id": "k4321", "email": "k4321@example.com", "segment": RFM[4321 % 8], "status": "active",
        "attributes": {"first_name": "Name4321", "city": "City2"}}
    counts = {s["name"]: s["customers"] for s in api("GET", "/segments", "analyst").json()}
    assert counts == {name: 625 for name in RFM}

    # The same file again, with new e-mails: all updates, no new rows.
    rows = [[ext, email.replace("example.com", "example.org"), seg, fn, city] for ext, email, seg, fn, city in rows]
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=csv_body(rows))
    assert r.json() == {"received": 5000, "inserted": 0, "updated": 5000}
    assert count(Customer) == 5000
    assert api("GET", "/customers/k17", "marketer").json()["email"] == "k17@example.org"


def test_csv_with_bom_crlf_quotes_and_no_segment_column(api):
    body = '\ufeffexternal_id,email,note\r\nq1,q1@example.com,"hello, ""world"""\r\nq2,q2@example.com,\r\n'
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=body.encode())
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 2, "inserted": 2, "updated": 0}
    q1 = api("GET", "/customers/q1", "marketer").json()
    assert q1["attributes"] == {"note": 'hello, "world"'} and q1["segment"] == ""
    assert api("GET", "/customers/q2", "marketer").json()["attributes"] == {}  # an empty cell is no attribute


GOOD = b"external_id,email,segment,first_name\nz1,z1@example.com,champions,Ann\nz2,z2@example.com,,Bob\n"
BAD_CSV = [
    ("bad-email", GOOD + b"z3,not-an-email,champions,Cy\n", "line 4.email", "pattern"),
    ("unknown-segment", GOOD + b"z3,z3@example.com,whales,Cy\n", "line 4.segment", "no segment named 'whales'"),
    ("too-many-fields", GOOD + b"z3,z3@example.com,champions,Cy,extra\n", "line 4", "more fields"),
    ("too-few-fields", GOOD + b"z3\n", "line 4.email", "string"),
    ("duplicate-id", GOOD + b"z1,z1b@example.com,champions,Ann\n", "line 4.external_id", "appears twice"),
    ("missing-email-column", b"external_id,segment\nz1,champions\n", "line 1", "email"),
    ("missing-both-columns", b"id,mail\nz1,z1@example.com\n", "line 1", "email, external_id"),
    ("non-utf8", GOOD + b"z3,z3@example.com,champions,Jos\xe9\n", "line 4", "UTF-8"),
    ("field-over-csv-limit", GOOD + b"z3,z3@example.com,champions," + b"x" * 140_000 + b"\n", "line 4",
     "field larger than field limit (131072)"),
    ("unterminated-quote", GOOD + b'z3,"z3@example.com,champions,Cy\nz4,z4@example.com,,Di\n', "line 4", "not closed"),
    ("text-after-closing-quote", GOOD + b'z3,"z3"@example.com,champions,Cy\n', "line 4", "expected after"),
    ("line-over-1-mib", GOOD + b"z3,z3@example.com,champions," + b"y," * 600_000 + b"\n", "line 4",
     "longer than 1,048,576 bytes"),
    ("empty", b"", "body", "empty"),
]


def test_bad_csv_is_422_naming_the_line_and_writes_nothing(api):
    api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": "z1", "email": "z1@old.example", "segment": "hibernating"}]})
    before = snapshot()
    for case, body, loc, msg in BAD_CSV:
        r = api("POST", "/customers/csv", "marketer", headers=CSV, content=body)
        assert r.status_code == 422, (case, r.text)
        got_loc, got_msg = loc_and_msg(r)
        assert got_loc == loc and msg.lower() in got_msg.lower(), (case, r.json())
        assert snapshot() == before, case  # z1 not updated, z2 not inserted
    # The same rows without the bad line do go in (the refusals above were about that line).
    assert api("POST", "/customers/csv", "marketer", headers=CSV, content=GOOD).json() == {
        "received": 2, "inserted": 1, "updated": 1}


def test_bad_row_after_several_written_batches_rolls_everything_back(api):
    """The import writes in batches of 2,000: a bad row late in the file must undo the earlier ones."""
    rows = [[f"k{i}", f"k{i}@example.com", "champions", "N", "C"] for i in range(2500)]
    rows.append(["k2500", "broken", "champions", "N", "C"])
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=csv_body(rows))
    assert r.status_code == 422
    assert loc_and_msg(r)[0] == "line 2502.email"  # header + 2,500 good rows + the bad one
    assert count(Customer) == 0

    body = csv_body(rows[:2500]) + b"k2500,k2500@example.com,champions,Jos\xe9,C\n"
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=body)
    assert r.status_code == 422 and loc_and_msg(r)[0] == "line 2502"
    assert count(Customer) == 0


# --- Segments --------------------------------------------------------------------------------------


def test_segments_list_with_counts_and_creation(api):
    r = api("GET", "/segments", "analyst")
    assert r.status_code == 200
    assert [s["name"] for s in r.json()] == RFM
    assert all(s["customers"] == 0 and s["description"] for s in r.json())
    api("POST", "/customers", "marketer", json={"customers": customers(5)})  # 3 champions, 2 hibernating
    api("POST", "/customers", "marketer", json={"customers": [{"external_id": "n", "email": "n@example.com"}]})
    counts = {s["name"]: s["customers"] for s in api("GET", "/segments", "marketer").json()}
    assert counts == {**{name: 0 for name in RFM}, "champions": 3, "hibernating": 2}

    # Creating one; the same name again is a conflict.
    r = api("POST", "/segments", "marketer", json={"name": "vip_2024", "description": "our VIPs"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "vip_2024" and created["description"] == "our VIPs" and created["customers"] == 0
    listed = api("GET", "/segments", "analyst").json()
    assert [s["name"] for s in listed] == RFM + ["vip_2024"]
    api("POST", "/customers", "marketer", json={"customers": customers(2, segments=("vip_2024",), prefix="v")})
    assert {s["name"]: s["customers"] for s in api("GET", "/segments", "analyst").json()}["vip_2024"] == 2

    r = api("POST", "/segments", "marketer", json={"name": "vip_2024"})
    assert r.status_code == 409
    assert r.json() == {"error": "conflict", "detail": "segment 'vip_2024' already exists"}
    r = api("POST", "/segments", "marketer", json={"name": "champions"})
    assert r.status_code == 409
    assert count(Segment) == 9


def test_bad_segment_name_is_422(api):
    for name in ["VIP", "has space", "", "a" * 65, "with-dash", "émigré", None]:
        r = api("POST", "/segments", "marketer", json={"name": name})
        assert r.status_code == 422, name
        assert loc_and_msg(r)[0] == "name", name
    assert api("POST", "/segments", "marketer", json={"name": "a" * 64}).status_code == 201
    assert count(Segment) == 9


# --- Orders and RFM derivation ---------------------------------------------------------------------


def order(oid: str, customer: str, days_ago: float, amount: float, now: datetime) -> dict:
    return {"order_id": oid, "customer_external_id": customer,
            "ordered_at": (now - timedelta(days=days_ago)).isoformat(), "amount": amount}


def test_orders_validation_and_reimport(api):
    api("POST", "/customers", "marketer", json={"customers": customers(1)})
    now = datetime.now(UTC)
    r = api("POST", "/orders", "marketer", json={"orders": [
        order("o1", "c0", 1, 10.0, now), order("o2", "ghost", 1, 10.0, now)]})
    assert r.status_code == 422
    assert loc_and_msg(r) == ("orders[1].customer_external_id", "no customer 'ghost'")
    assert count(Order) == 0
    r = api("POST", "/orders", "marketer", json={"orders": [order("o1", "c0", 1, -5.0, now)]})
    assert r.status_code == 422 and loc_and_msg(r)[0] == "orders[0].amount"
    assert api("POST", "/orders", "marketer", json={"orders": []}).status_code == 422
    assert count(Order) == 0

    # A re-imported order id updates the order, never duplicates it.
    assert api("POST", "/orders", "marketer", json={"orders": [order("o1", "c0", 1, 10.0, now)]}).json() == {
        "received": 1}
    api("POST", "/orders", "marketer", json={"orders": [order("o1", "c0", 1, 250.0, now)]})
    assert count(Order) == 1
    with session_scope() as s:
        assert s.execute(select(Order.amount)).scalar_one() == 250.0


def test_duplicate_order_id_in_one_batch_is_422(api):
    api("POST", "/customers", "marketer", json={"customers": customers(1)})
    now = datetime.now(UTC)
    r = api("POST", "/orders", "marketer", json={"orders": [
        order("o1", "c0", 1, 10.0, now), order("o1", "c0", 2, 20.0, now)]})
    assert r.status_code == 422
    assert loc_and_msg(r)[0] == "orders[1].order_id"
    assert count(Order) == 0


# customer -> (orders as (days ago, amount), expected segment). Thresholds: recent <= 60 days,
# frequent >= 4 orders in the 365-day lookback, high spend >= 200 within it.
PROFILES = {
    "champ": ([(1, 50), (10, 50), (20, 50), (59, 50)], "champions"),
    "loyal": ([(2, 10), (3, 10), (4, 10), (5, 10), (6, 10)], "loyal_regulars"),
    "big": ([(30, 250)], "big_spenders"),
    "newbie": ([(1, 20)], "new_or_occasional"),
    "almost_loyal": ([(5, 50), (6, 50), (7, 50)], "new_or_occasional"),  # 3 orders: not frequent
    "almost_big": ([(5, 100), (6, 99.99)], "new_or_occasional"),  # 199.99: not high spend
    "cant_lose": ([(61, 100), (100, 100), (200, 100), (300, 100)], "cant_lose_them"),  # 61 days: lapsed
    "at_risk": ([(90, 5), (120, 5), (150, 5), (180, 5)], "at_risk_regulars"),
    "lapsed_big": ([(90, 300)], "lapsed_big_spenders"),
    "never": ([], "hibernating"),
    "ancient": ([(400, 500), (401, 500), (402, 500), (403, 500)], "hibernating"),  # all outside the lookback
    # Old orders count neither toward frequency nor spend: 3 recent small orders + a big one 400 days ago.
    "mixed": ([(1, 10), (2, 10), (3, 10), (400, 1000)], "new_or_occasional"),
}


def test_derive_puts_customers_into_the_right_rfm_segments(api):
    now = datetime.now(UTC)
    # Everyone starts in champions: derivation must move them from purchase history alone.
    people = [{"external_id": name, "email": f"{name}@example.com", "segment": "champions"} for name in PROFILES]
    assert api("POST", "/customers", "marketer", json={"customers": people}).status_code == 200
    orders = [order(f"{name}-{i}", name, days, amount, now)
              for name, (history, _) in PROFILES.items() for i, (days, amount) in enumerate(history)]
    r = api("POST", "/orders", "marketer", json={"orders": orders})
    assert r.status_code == 200, r.text
    assert r.json() == {"received": len(orders)}

    r = api("POST", "/segments/derive", "marketer")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customers"] == len(PROFILES)
    expected_counts: dict[str, int] = {}
    for _, seg in PROFILES.values():
        expected_counts[seg] = expected_counts.get(seg, 0) + 1
    assert body["by_segment"] == expected_counts
    assert abs(datetime.fromisoformat(body["as_of"]) - now) < timedelta(minutes=5)

    got = {name: api("GET", f"/customers/{name}", "marketer").json()["segment"] for name in PROFILES}
    assert got == {name: seg for name, (_, seg) in PROFILES.items()}
    listed = {s["name"]: s["customers"] for s in api("GET", "/segments", "analyst").json()}
    assert listed == {name: expected_counts.get(name, 0) for name in RFM}

    # New purchases move a customer on the next derivation; derivation is otherwise stable.
    api("POST", "/orders", "marketer", json={"orders": [order("never-1", "never", 0.5, 500.0, now)]})
    r = api("POST", "/segments/derive", "marketer")
    assert r.json()["by_segment"]["big_spenders"] == 2
    assert api("GET", "/customers/never", "marketer").json()["segment"] == "big_spenders"
    assert api("GET", "/customers/champ", "marketer").json()["segment"] == "champions"

    # Timestamps with an offset are converted, naive ones are taken as UTC.
    api("POST", "/customers", "marketer", json={"customers": [{"external_id": "tz", "email": "tz@example.com"}]})
    tokyo = (now - timedelta(days=59)).astimezone(ZoneInfo("Asia/Tokyo"))
    naive = (now - timedelta(days=30)).replace(tzinfo=None)
    r = api("POST", "/orders", "marketer", json={"orders": [
        {"order_id": "t1", "customer_external_id": "tz", "ordered_at": tokyo.isoformat(), "amount": 100},
        {"order_id": "t2", "customer_external_id": "tz", "ordered_at": naive.isoformat(), "amount": 100},
    ]})
    assert r.status_code == 200, r.text
    assert api("POST", "/segments/derive", "marketer").json()["by_segment"]["big_spenders"] == 3
    assert api("GET", "/customers/tz", "marketer").json()["segment"] == "big_spenders"
