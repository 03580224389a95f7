"""Request body caps (413 `too_large` before the body is parsed, whether its size is declared or it
streams in chunks), the CSV imports' own larger cap, and the caps on what a campaign stores:
template size per part and variants per campaign."""

import httpx
from sqlalchemy import func, select

from campaigns.db import session_scope
from campaigns.models import Campaign, Customer
from tests.api.test_idempotency import live_server  # noqa: F401 (a fixture)
from tests.factories import customers, small_campaign_payload


def count(model) -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def chunked(data: bytes, size: int = 500):
    """A body without Content-Length (Transfer-Encoding: chunked): only counting can catch it."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


def assert_too_large(r, setting: str):
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large"
    assert setting in r.json()["detail"]


def test_json_body_over_the_cap_is_refused_declared_or_streamed(api, settings_env):
    settings_env(MAB_MAX_BODY_BYTES=2_000)
    big = httpx.Request("POST", "/", json={"customers": customers(30)}).content
    assert len(big) > 2_000
    headers = {"Content-Type": "application/json"}
    assert_too_large(api("POST", "/customers", "marketer", content=big, headers=dict(headers)), "MAB_MAX_BODY_BYTES")
    streamed = api("POST", "/customers", "marketer", content=chunked(big), headers=dict(headers))
    assert_too_large(streamed, "MAB_MAX_BODY_BYTES")
    assert count(Customer) == 0
    small = api("POST", "/customers", "marketer", json={"customers": customers(3)})
    assert small.status_code == 200, small.text


def test_csv_imports_have_their_own_cap(api, settings_env):
    settings_env(MAB_MAX_BODY_BYTES=1_000, MAB_MAX_CSV_BYTES=4_000)
    rows = "".join(f"c{i},c{i}@example.com,champions\n" for i in range(60))
    csv = ("external_id,email,segment\n" + rows).encode()
    assert 1_000 < len(csv) < 4_000
    headers = {"Content-Type": "text/csv"}
    r = api("POST", "/customers/csv", "marketer", content=chunked(csv), headers=dict(headers))
    assert r.status_code == 200 and r.json()["inserted"] == 60, r.text
    bigger = csv + "".join(f"d{i},d{i}@example.com,champions\n" for i in range(100)).encode()
    assert len(bigger) > 4_000
    assert_too_large(api("POST", "/customers/csv", "marketer", content=bigger, headers=dict(headers)),
                     "MAB_MAX_CSV_BYTES")
    assert_too_large(api("POST", "/customers/csv", "marketer", content=chunked(bigger), headers=dict(headers)),
                     "MAB_MAX_CSV_BYTES")
    assert count(Customer) == 60
    conversions = b"event_id,campaign_id,customer_external_id,revenue,occurred_at\n" + b"x" * 4_000
    assert_too_large(api("POST", "/events/conversions.csv", "ingest", content=chunked(conversions),
                         headers=dict(headers)), "MAB_MAX_CSV_BYTES")


def test_a_real_server_refuses_a_declared_oversize_body_without_reading_it(live_server, settings_env):  # noqa: F811
    settings_env(MAB_MAX_BODY_BYTES=10_000)
    headers = {"X-API-Key": live_server["keys"]["marketer"], "Content-Type": "application/json"}
    body = b'{"customers": [' + b" " * 5_000_000 + b"]}"
    r = httpx.post(live_server["url"] + "/customers", content=body, headers=headers, timeout=30)
    assert_too_large(r, "MAB_MAX_BODY_BYTES")
    r = httpx.post(live_server["url"] + "/customers", content=chunked(body, 64_000), headers=headers, timeout=30)
    assert_too_large(r, "MAB_MAX_BODY_BYTES")


def test_template_parts_are_capped_in_bytes(api, settings_env):
    settings_env(MAB_MAX_TEMPLATE_BYTES=500)
    ok = small_campaign_payload()
    too_big = {**ok["template"], "html": "<p>" + "é" * 300 + "</p>"}  # 307 characters, 607 bytes
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(template=too_big))
    assert r.status_code == 422
    [detail] = r.json()["detail"]
    assert detail["loc"] == "template.html"
    assert "607 bytes exceed the cap of 500 (MAB_MAX_TEMPLATE_BYTES)" in detail["msg"]
    assert count(Campaign) == 0
    cid = api("POST", "/campaigns", "marketer", json=ok).json()["id"]
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"template": {**ok["template"], "text": "x" * 501}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "template.text"


def test_variants_per_campaign_are_capped(api, settings_env):
    settings_env(MAB_MAX_VARIANTS_PER_CAMPAIGN=5)
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload())  # 2 × 3 = 6 variants
    assert r.status_code == 422
    msg = "6 variants exceed the cap of 5 (MAB_MAX_VARIANTS_PER_CAMPAIGN)"
    assert r.json()["detail"] == [{"loc": "factors", "msg": msg}]
    assert count(Campaign) == 0
