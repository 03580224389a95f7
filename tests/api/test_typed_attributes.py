"""Typed attributes and one address per customer, through real HTTP (SQLite and PostgreSQL)."""

from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import Customer

CSV = {"Content-Type": "text/csv"}


def count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Customer)).scalar_one()


def test_csv_columns_are_typed_by_inference_and_annotation(api):
    body = ("external_id,email,segment,loyalty_points,spend,vip,last_visit,zip,code:int,city\n"
            "a1,a1@example.com,champions,1200,12.5,true,2026-03-01,01234,7,Lyon\n"
            "a2,a2@example.com,champions,80,3,no,2025-12-31,75001,,\n")
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=body.encode())
    assert r.status_code == 200, r.text
    a1 = api("GET", "/customers/a1", "marketer").json()["attributes"]
    a2 = api("GET", "/customers/a2", "marketer").json()["attributes"]
    assert a1 == {"loyalty_points": 1200, "spend": 12.5, "vip": True, "last_visit": "2026-03-01",
                  "zip": "01234", "code": 7, "city": "Lyon"}
    assert a2 == {"loyalty_points": 80, "spend": 3.0, "vip": False, "last_visit": "2025-12-31", "zip": "75001"}
    assert type(a1["loyalty_points"]) is int and type(a2["spend"]) is float


def test_a_value_that_does_not_fit_its_annotated_column_is_422_naming_line_and_column(api):
    body = b"external_id,email,points:int\nb1,b1@example.com,10\nb2,b2@example.com,ten\n"
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == "line 3.points" and "'ten' is not a valid int" in detail["msg"]
    assert count() == 0  # nothing written


def test_an_unknown_annotation_is_422_naming_the_header(api):
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=b"external_id,email,points:money\nx,x@e.com,1\n")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "line 1"
    assert "unknown type 'money'" in r.json()["detail"][0]["msg"]


def test_json_import_keeps_json_types(api):
    r = api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": "j1", "email": "j1@example.com", "attributes": {"points": 5, "ratio": 0.5, "vip": False,
                                                                          "note": "12"}}]})
    assert r.status_code == 200, r.text
    assert api("GET", "/customers/j1", "marketer").json()["attributes"] == {
        "points": 5, "ratio": 0.5, "vip": False, "note": "12"}


def test_a_second_customer_with_an_address_in_use_is_refused_naming_both(api):
    r = api("POST", "/customers", "marketer", json={"customers": [{"external_id": "e1", "email": "Ann@Example.com"}]})
    assert r.status_code == 200
    r = api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": "e2", "email": "new@example.com"}, {"external_id": "e3", "email": "ann@example.com"}]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == "customers[1].email" and "'e1'" in detail["msg"] and "'e3'" in detail["msg"]
    assert count() == 1
    # within one file too, naming both lines' customers
    body = b"external_id,email\nf1,same@example.com\nf2,SAME@example.com\n"
    r = api("POST", "/customers/csv", "marketer", headers=CSV, content=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "line 3.email"
    assert "'f1'" in r.json()["detail"][0]["msg"]
    # the same customer re-imported with its own address is fine
    r = api("POST", "/customers", "marketer", json={"customers": [{"external_id": "e1", "email": "ann@example.com"}]})
    assert r.status_code == 200, r.text
