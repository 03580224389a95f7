"""Operations endpoints through real HTTP requests: /health (liveness, no dependencies), /ready (database,
migrations at head, broker; 503 naming the failed check) and /metrics (Prometheus text, open unless
MAB_METRICS_REQUIRE_KEY). SQLite and PostgreSQL."""

import math
import subprocess
import sys
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from alembic import command
from campaigns import metrics
from campaigns.db import session_scope
from campaigns.migrate import alembic_config
from campaigns.models import AllocationSnapshot, PeriodStatus, Segment
from campaigns.services import health, periods
from campaigns.settings import get_settings
from campaigns.stack import free_port
from tests.campaigns.test_periods import new_period, setup_campaign
from tests.conftest import point_at


def samples(api) -> dict[tuple[str, tuple], float]:
    r = api("GET", "/metrics", None)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_samples, name: str, **labels) -> float:
    return all_samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def setting(monkeypatch):
    def set_(key: str, val: str) -> None:
        monkeypatch.setenv(key, val)
        get_settings.cache_clear()

    yield set_
    get_settings.cache_clear()


# --- /health and /ready -----------------------------------------------------------------------------


def test_health_and_ready_need_no_key_and_ready_reports_every_check(api):
    assert api("GET", "/health", None).json() == {"status": "ok"}
    r = api("GET", "/ready", None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "broker"}
    assert all(c["ok"] for c in body["checks"].values())
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"] == list(
        health.migration_heads())


def test_ready_is_503_when_the_schema_is_behind_the_code(api, database_url):
    command.stamp(alembic_config(database_url), "0005")  # the schema as an older release left it
    r = api("GET", "/ready", None)
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "not_ready"
    m = body["detail"]["migrations"]
    assert m["ok"] is False and m["current"] == ["0005"] and m["head"] == list(health.migration_heads())
    assert "schema at 0005" in m["error"]
    assert body["detail"]["database"]["ok"] and body["detail"]["broker"]["ok"]
    assert api("GET", "/health", None).status_code == 200  # liveness does not care


def test_ready_is_503_naming_the_broker_when_redis_is_down(api, setting):
    setting("MAB_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    r = api("GET", "/ready", None)
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert detail["broker"]["ok"] is False and "ConnectionError" in detail["broker"]["error"]
    assert detail["database"]["ok"] and detail["migrations"]["ok"]


def test_database_down_fails_ready_but_not_health(api, tmp_path):
    point_at(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", tmp_path / "outbox")
    r = api("GET", "/ready", None)
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert detail["database"]["ok"] is False and "OperationalError" in detail["database"]["error"]
    assert detail["migrations"] == {"ok": False, "error": "skipped: the database is unreachable"}
    assert api("GET", "/health", None).json() == {"status": "ok"}
    r = api("GET", "/metrics", None)  # the scrape survives it and says which source failed
    assert r.status_code == 200 and 'mab_scrape_source_up{source="database"} 0.0' in r.text


# --- /metrics -----------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_template_and_status(api):
    before = samples(api)
    assert api("GET", "/campaigns/424242", "analyst").status_code == 404
    assert api("GET", "/campaigns/424243", "analyst").status_code == 404
    assert api("GET", "/no/such/route", None).status_code == 404
    after = samples(api)
    labels = {"method": "GET", "route": "/campaigns/{campaign_id}", "status": "404"}
    assert value(after, "mab_http_requests_total", **labels) - value(before, "mab_http_requests_total", **labels) == 2
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "mab_http_requests_total", **unmatched) - value(before, "mab_http_requests_total",
                                                                        **unmatched) == 1
    hist = {"method": "GET", "route": "/campaigns/{campaign_id}"}
    assert value(after, "mab_http_request_duration_seconds_count", **hist) - value(
        before, "mab_http_request_duration_seconds_count", **hist) == 2
    # the raw paths never become labels
    assert not any("424242" in str(key) for key in after)


def test_metrics_are_open_by_default_and_admin_only_when_required(api, setting):
    assert api("GET", "/metrics", None).status_code == 200
    setting("MAB_METRICS_REQUIRE_KEY", "true")
    r = api("GET", "/metrics", None)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    for role in ("marketer", "analyst", "ingest"):
        r = api("GET", "/metrics", role)
        assert r.status_code == 403 and r.json()["detail"] == f"role '{role}' may not do this (allowed: admin)"
    assert api("GET", "/metrics", "admin").status_code == 200
    assert api("GET", "/health", None).status_code == 200 and api("GET", "/ready", None).status_code == 200


def test_queue_depth_is_read_from_redis_at_scrape_time(api):
    from worker.tasks import start_due_periods

    before = value(samples(api), "mab_queue_messages", queue="mab")
    for _ in range(3):
        start_due_periods.delay()  # no worker consumes the test broker
    after = samples(api)
    assert value(after, "mab_queue_messages", queue="mab") - before == 3
    assert value(after, "mab_scrape_source_up", source="queue") == 1


def test_allocation_entropy_of_the_newest_snapshots(api, redis_server):
    cid = setup_campaign(300)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        snaps = s.execute(select(AllocationSnapshot, Segment.name).join(
            Segment, Segment.id == AllocationSnapshot.segment_id).where(AllocationSnapshot.campaign_id == cid)).all()
    got = samples(api)
    assert len(snaps) == 2
    for snap, segment in snaps:
        expected = -sum(w * math.log2(w) for w in snap.weights if w > 0)
        labels = {"campaign_id": str(cid), "segment": segment}
        assert value(got, "mab_allocation_entropy_bits", **labels) == pytest.approx(expected)
        assert 0 <= expected <= math.log2(6) + 1e-9
        assert value(got, "mab_allocation_arms", **labels) == 6
    assert value(got, "mab_campaigns", status="active") == 1
    # a completed campaign's allocations drop out
    assert api("POST", f"/campaigns/{cid}/complete", "marketer").status_code == 200
    assert not any(k[0] == "mab_allocation_entropy_bits" for k in samples(api))


def test_counts_of_another_process_show_in_this_one(api):
    """Multiprocess mode: what a worker process counts is in the API's scrape."""
    backend = f"test-{uuid.uuid4().hex[:8]}"
    code = f"from campaigns import metrics; metrics.observe_sends(5, 1, 2, {backend!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    got = samples(api)
    assert {o: value(got, "mab_sends_total", outcome=o, backend=backend) for o in ("sent", "failed", "suppressed")} \
        == {"sent": 5, "failed": 1, "suppressed": 2}
    assert metrics.MULTIPROCESS_DIR is not None


# --- the pure helpers ---------------------------------------------------------------------------------


def test_metric_helpers_pure():
    assert metrics.entropy_bits([0.25] * 4) == pytest.approx(2.0)
    assert metrics.entropy_bits([1.0, 0.0]) == 0.0
    backend = f"pure-{uuid.uuid4().hex[:8]}"
    metrics.observe_send_results([
        {"new_status": "sent", "err": None}, {"new_status": "sent", "err": None},
        {"new_status": "failed", "err": "suppressed: customer is unsubscribed"},
        {"new_status": "failed", "err": "render failed: UndefinedError"},
    ], backend)
    assert [metrics.SENDS.labels(o, backend)._value.get() for o in ("sent", "failed", "suppressed")] == [2, 1, 1]

    kind = f"t{uuid.uuid4().hex[:6]}"  # an event type of its own: the counters start at zero
    batch = [{"event_id": "a", "type": kind}, {"event_id": "a", "type": kind}, {"event_id": "b", "type": kind},
             {"event_id": "c", "type": "unknown-" + kind}]
    new_rows = [{"type": kind, "status": "applied"}, {"type": "unknown-" + kind, "status": "unattributed"}]
    metrics.observe_events_folded(batch, new_rows)
    assert metrics.EVENTS_PROCESSED.labels(kind, "applied")._value.get() == 1
    assert metrics.EVENTS_PROCESSED.labels(kind, "duplicate")._value.get() == 2
    assert metrics.EVENTS_PROCESSED.labels("unknown-" + kind, "unattributed")._value.get() == 1
    assert metrics.EVENTS_PROCESSED.labels("unknown-" + kind, "duplicate")._value.get() == 0

    from campaigns.schemas import EventIn

    before = metrics.EVENTS_RECEIVED.labels("complaint")._value.get()
    metrics.observe_events_received([EventIn(event_id="x", type="complaint", send_id=1), {"type": "complaint"},
                                     {"type": kind}])
    assert metrics.EVENTS_RECEIVED.labels("complaint")._value.get() == before + 2
    assert metrics.EVENTS_RECEIVED.labels(kind)._value.get() == 1
