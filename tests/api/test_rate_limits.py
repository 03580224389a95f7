"""Rate limits per API key (ingestion, mutations) and per source address (the webhook), counted in
the real Redis: 429 `rate_limited` with Retry-After, shared by every app instance, and off when
Redis does not answer (fail open, with a warning)."""

import logging

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from campaigns.stack import free_port
from tests.factories import small_campaign_payload


@pytest.fixture
def settings_env(settings_env, redis_server):
    """The shared settings_env (tests/api/conftest.py), with the rate-limit counters of earlier
    tests cleared so every test starts with a fresh window, and a Redis timeout long enough that a
    loaded test machine never makes the limiter fail open (that case has its own test)."""
    r = redis.Redis.from_url(redis_server.url)
    for key in r.scan_iter("mab:ratelimit:*"):
        r.delete(key)
    r.close()
    settings_env(MAB_RATE_LIMIT_REDIS_TIMEOUT_SECONDS=10)
    return settings_env


def new_segment(api, role: str, name: str):
    return api("POST", "/segments", role, json={"name": name})


def assert_rate_limited(r, limit: int, what: str):
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"] == "rate_limited"
    assert f"more than {limit} {what} requests per minute" in body["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_mutations_are_limited_per_api_key_with_retry_after(api, settings_env):
    settings_env(MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE=3)
    assert [new_segment(api, "marketer", f"s{i}").status_code for i in range(3)] == [201] * 3
    r = new_segment(api, "marketer", "s3")
    assert_rate_limited(r, 3, "mutating")
    names = {s["name"] for s in api("GET", "/segments", "marketer").json()}
    assert "s3" not in names  # refused before the route ran
    assert api("GET", "/segments", "marketer").status_code == 200  # reads are never limited
    # Every mutating route shares the bucket; another key has its own.
    assert api("POST", "/campaigns", "marketer", json=small_campaign_payload()).status_code == 429
    assert new_segment(api, "admin", "by_admin").status_code == 201


def test_ingestion_has_its_own_limit(api, settings_env):
    settings_env(MAB_RATE_LIMIT_INGEST_PER_MINUTE=2, MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE=1)
    batch = {"events": [{"event_id": "e1", "type": "click", "send_id": 1}]}
    assert [api("POST", "/events", "ingest", json=batch).status_code for _ in range(2)] == [202, 202]
    assert_rate_limited(api("POST", "/events", "ingest", json=batch), 2, "ingestion")
    csv = "event_id,campaign_id,customer_external_id,revenue,occurred_at\n"
    r = api("POST", "/events/conversions.csv", "ingest", content=csv, headers={"Content-Type": "text/csv"})
    assert_rate_limited(r, 2, "ingestion")  # the two ingestion routes share one bucket
    # The ingest bucket is not the mutations one: one mutation per minute is still allowed.
    assert new_segment(api, "admin", "x").status_code == 201


def test_webhook_is_limited_per_source_address(api, settings_env):
    settings_env(MAB_RATE_LIMIT_WEBHOOK_PER_MINUTE=2)
    statuses = [api("POST", "/webhooks/conversions", None, content=b"{}").status_code for _ in range(3)]
    assert 429 not in statuses[:2] and statuses[2] == 429


def test_links_inside_emails_are_never_limited(api, settings_env):
    settings_env(MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE=1)
    assert {api("POST", "/u/not-a-token", None).status_code for _ in range(4)} == {404}


def test_zero_turns_a_limit_off(api, settings_env):
    settings_env(MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE=0)
    assert {new_segment(api, "marketer", f"z{i}").status_code for i in range(8)} == {201}


def test_the_count_is_shared_by_every_api_process(api, settings_env):
    """Two app instances (as two uvicorn processes would be) count into the same Redis window."""
    settings_env(MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE=3)
    with TestClient(create_app()) as other:
        headers = {"X-API-Key": api.keys["marketer"]}
        assert new_segment(api, "marketer", "p1").status_code == 201
        assert other.post("/segments", json={"name": "p2"}, headers=headers).status_code == 201
        assert new_segment(api, "marketer", "p3").status_code == 201
        assert_rate_limited(other.post("/segments", json={"name": "p4"}, headers=headers), 3, "mutating")


def test_limits_fail_open_when_redis_is_down(api, settings_env, caplog):
    settings_env(MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE=1, MAB_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="api.limits"):
        assert {new_segment(api, "marketer", f"d{i}").status_code for i in range(3)} == {201}
    warnings = [r for r in caplog.records if r.name == "api.limits"]
    assert len(warnings) == 1  # logged once, not once per request
    assert "rate limits off" in warnings[0].getMessage()


def test_the_openapi_document_names_429_and_413(api):
    paths = api("GET", "/openapi.json", None).json()["paths"]
    create = paths["/campaigns"]["post"]["responses"]
    assert {"413", "429"} <= set(create)
    assert "Retry-After" in create["429"]["headers"]
    assert "429" not in paths["/u/{token}"]["post"]["responses"]  # links in emails are not limited
    assert "429" not in paths["/campaigns"]["get"]["responses"]
    assert "X-Next-Cursor" in paths["/campaigns"]["get"]["responses"]["200"]["headers"]
