"""Regression tests for what the schemathesis run (tests/api/test_fuzz.py) found, each as a plain
request: so that a fix stays fixed even where the bounded fuzz run would not hit the case again."""

import pytest

from tests.factories import customers, small_campaign_payload

TOO_BIG = 2**31  # one past PostgreSQL's INTEGER (the ids' columns): a 500 there, as 2**63 was on SQLite


@pytest.fixture
def campaign_id(api):
    assert api("POST", "/customers", json={"customers": customers(2)}).status_code == 200
    r = api("POST", "/campaigns", json=small_campaign_payload())
    assert r.status_code == 201, r.text
    return r.json()["id"]


def invalid_at(r, loc: str) -> list[str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    return [d["msg"] for d in body["detail"] if d["loc"] == loc]


@pytest.mark.parametrize(("method", "path", "loc"), [
    ("GET", f"/campaigns?offset={2**63}", "query.offset"),
    ("GET", f"/campaigns/{TOO_BIG}", "path.campaign_id"),
    ("POST", f"/campaigns/{TOO_BIG}/periods", "path.campaign_id"),
    ("GET", f"/campaigns/1/periods/{TOO_BIG}", "path.number"),
    ("POST", f"/api-keys/{TOO_BIG}/revoke", "path.key_id"),
])
def test_integers_past_the_database_range_are_a_422_not_a_500(api, method, path, loc):
    assert invalid_at(api(method, path), loc)


def test_event_ids_past_their_columns_range_are_a_422(api):
    r = api("POST", "/events", json={"events": [{"event_id": "e1", "type": "click", "send_id": 2**63}]})
    assert invalid_at(r, "events[0].send_id")  # sends have BIGINT ids
    r = api("POST", "/events", json={"events": [{"event_id": "e1", "type": "click", "campaign_id": TOO_BIG,
                                                  "customer_external_id": "c0"}]})
    assert invalid_at(r, "events[0].campaign_id")


@pytest.mark.parametrize("path", ["/segments", "/campaigns", "/api-keys", "/campaigns/1/periods",
                                  "/campaigns/1/variants"])
def test_a_cursor_past_every_id_is_the_end_of_the_list(api, campaign_id, path):
    r = api("GET", path, params={"cursor": "3000000000"})  # an INTEGER overflow on PostgreSQL (a 500)
    assert r.status_code == 200, r.text
    assert r.json() == [] and "X-Next-Cursor" not in r.headers


def test_an_allocation_cursor_past_every_period_is_the_end(api, campaign_id):
    r = api("GET", f"/campaigns/{campaign_id}/allocations", params={"cursor": "3000000000.3000000000"})
    assert r.status_code == 200 and r.json() == []


@pytest.mark.parametrize(("body", "loc"), [
    ({"events": [{"event_id": "e1", "type": "click", "campaign_id": False, "customer_external_id": "c0"}]},
     "events[0].campaign_id"),
    ({"events": [{"event_id": "e1", "type": "conversion", "send_id": 1, "revenue": True}]}, "events[0].revenue"),
    ({"events": [{"event_id": "e1", "type": "click", "send_id": 1, "occurred_at": 0}]}, "events[0].occurred_at"),
])
def test_events_refuse_booleans_for_numbers_and_numbers_for_dates(api, body, loc):
    assert invalid_at(api("POST", "/events", "ingest", json=body), loc)


def test_a_draft_refuses_a_boolean_holdout_share(api, campaign_id):
    r = api("PATCH", f"/campaigns/{campaign_id}", json={"holdout_share": False})
    assert invalid_at(r, "holdout_share")
    assert api("GET", f"/campaigns/{campaign_id}").json()["holdout_share"] == 0.1  # unchanged


def test_customer_consent_is_a_json_boolean(api):
    r = api("POST", "/customers", json={"customers": [{**customers(1)[0], "consent": 1}]})
    assert invalid_at(r, "customers[0].consent")


def test_audit_times_are_iso_dates_and_any_id_shaped_cursor_reads(api):
    assert invalid_at(api("GET", "/audit", params={"until": "0.5"}), "query.until")
    assert api("GET", "/audit", params={"until": "2030-01-01T00:00:00Z"}).status_code == 200
    r = api("GET", "/audit", params={"cursor": str(10**17)})  # past any id: the newest entries
    assert r.status_code == 200, r.text


def test_a_method_a_path_does_not_have_is_a_405_naming_every_method_it_has(api, campaign_id):
    # POST /campaigns/{id}/variants used to reach the lifecycle route as action "variants" (a 422)
    r = api("POST", f"/campaigns/{campaign_id}/variants")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    assert api("POST", f"/campaigns/{campaign_id}/start").json()["status"] == "active"
    # GET and POST /u/{token} are two routes: the Allow of either names both
    r = api("DELETE", "/u/some-token", None)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
    assert r.json()["error"] == "method_not_allowed"


def test_a_body_that_cannot_be_parsed_is_a_422_in_the_error_shape(api):
    r = api("POST", "/segments", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input" and r.json()["detail"][0]["loc"] == "body"


def test_the_openapi_document_states_the_error_responses(api):
    doc = api("GET", "/openapi.json", None).json()
    patch = doc["paths"]["/campaigns/{campaign_id}"]["patch"]["responses"]
    assert {"401", "403", "404", "409", "413", "422", "429"} <= set(patch)
    assert patch["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/InvalidInput"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert {} in doc["paths"]["/metrics"]["get"]["security"]  # the key is optional there
    assert "security" not in doc["paths"]["/health"]["get"]
    webhook = doc["paths"]["/webhooks/conversions"]["post"]["responses"]
    assert {"401", "503"} <= set(webhook)
    limit = next(p for p in doc["paths"]["/segments"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000


@pytest.mark.parametrize(("method", "path", "kw", "loc"), [
    ("POST", "/api-keys", {"json": {"name": "a\x00b", "role": "admin"}}, "name"),
    ("POST", "/customers", {"json": {"customers": [{**customers(1)[0], "external_id": "c\x00"}]}},
     "customers"),
    ("POST", "/events", {"json": {"events": [{"event_id": "e\x00", "type": "click", "send_id": 1}]}}, "events"),
    ("GET", "/customers/a%00b", {}, "path.external_id"),
    ("GET", "/customers/a%00b/export", {}, "path.external_id"),
    ("GET", "/audit?action=a%00", {}, "query.action"),
])
def test_a_nul_character_is_a_422_not_a_postgresql_error(api, method, path, kw, loc):
    # PostgreSQL text cannot hold NUL: these were 500s there (SQLite stored or compared them)
    r = api(method, path, **kw)
    assert r.status_code == 422, r.text
    assert any(d["loc"] == loc and "NUL" in d["msg"] for d in r.json()["detail"]), r.json()
