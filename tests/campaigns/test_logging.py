"""Structured logs: one JSON object per line with its context, and no personal data. A whole period and
an event batch run through the real tasks (Celery in eager mode, so the task hooks fire), with every
logger at DEBUG, and not one customer email reaches the log."""

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from campaigns import signing
from campaigns.db import session_scope
from campaigns.logging_config import configure_logging, log_context, redact
from campaigns.models import PeriodStatus, SendPeriod
from tests.api.conftest import Api
from tests.campaigns.test_periods import sends_of
from tests.factories import api_keys, small_campaign_payload
from tests.factories import customers as make_customers


@pytest.fixture
def api(database_url, redis_server):
    with TestClient(create_app()) as client:
        yield Api(client, api_keys())


@pytest.fixture
def eager():
    from worker.app import celery_app

    conf = celery_app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager = conf.task_eager_propagates = True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


@pytest.fixture
def captured():
    buf = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buf)
    yield buf
    configure_logging()


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_period_and_an_event_batch_log_no_customer_email(api, eager, captured):
    people = make_customers(300)
    r = api("POST", "/customers", "marketer", json={"customers": people})
    assert r.status_code in (200, 201), r.text
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload())
    cid = r.json()["id"]
    assert api("POST", f"/campaigns/{cid}/start", "marketer").status_code == 200
    r = api("POST", f"/campaigns/{cid}/periods", "marketer")  # eager: the whole period runs now
    assert r.status_code == 202, r.text
    with session_scope() as s:
        period = s.get(SendPeriod, r.json()["id"])
        assert (period.status, period.sent) == (PeriodStatus.COMPLETED, 300)
    sends = sends_of(period.id)

    # feedback: tracked clicks, a bulk batch with conversions by customer, an unsubscribe
    for send in sends[:5]:
        assert api("GET", f"/t/{signing.sign('click', send.id)}", None, follow_redirects=False).status_code == 307
    batch = [{"event_id": f"o-{i}", "type": "conversion", "campaign_id": cid,
              "customer_external_id": people[i]["external_id"], "revenue": 10.0} for i in range(20)]
    assert api("POST", "/events", "ingest", json={"events": batch}).status_code == 202
    token = signing.sign("unsub", sends[7].id)
    assert api("POST", f"/u/{token}", None, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    logged = lines(captured)
    assert len(logged) > 10
    for line in logged:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert line["time"].endswith("Z")
    text = captured.getvalue()
    leaked = [p["email"] for p in people if p["email"] in text]
    assert leaked == []
    assert token not in text and signing.sign("click", sends[0].id) not in text  # route templates only

    # the context that makes a line useful
    tasks = {line.get("task") for line in logged}
    assert {"worker.tasks.run_period", "worker.tasks.deliver_chunk", "worker.tasks.process_events"} <= tasks
    assert any(line.get("task") == "worker.tasks.run_period" and line.get("period_id") == period.id
               for line in logged)
    assert any(line.get("task") == "worker.tasks.deliver_chunk" and isinstance(line.get("chunk_id"), int)
               for line in logged)
    access = [line for line in logged if line["logger"] == "api.access"]
    assert any(line["route"] == "/t/{token}" and line["status"] == 307 for line in access)
    assert any(line["route"] == "/campaigns/{campaign_id}/periods" and line.get("campaign_id") == cid
               for line in access)


def test_emails_and_sql_parameters_are_masked_even_when_code_logs_them(captured):
    log = logging.getLogger("campaigns.test")
    with log_context(campaign_id=7, period_id=3):
        log.error("delivery to %s refused", "ann.lee+promo@mail.example.co.uk")
    try:
        raise RuntimeError("(psycopg.errors.UniqueViolation) duplicate key\n[SQL: INSERT INTO customer (email) "
                           "VALUES (%(email)s)]\n[parameters: {'email': 'bob@example.com', 'first_name': 'Bob'}]")
    except RuntimeError:
        log.exception("import failed", extra={"campaign_id": 7, "data": {"args": ["carol@example.com"]}})
    first, second = lines(captured)
    assert first["message"] == "delivery to <email> refused"
    assert (first["campaign_id"], first["period_id"], first["level"]) == (7, 3, "ERROR")
    assert "period_id" not in second  # the context ended with its block
    assert "data" not in second  # only whitelisted extras: Celery's task arguments never get in
    assert "Bob" not in second["exc"] and "bob@" not in second["exc"]
    assert "[parameters: <hidden>]" in second["exc"] and second["exc_type"] == "RuntimeError"
    assert "@" not in captured.getvalue()


def test_text_format_carries_the_same_context_and_masking():
    buf = io.StringIO()
    configure_logging(level="INFO", fmt="text", stream=buf)
    try:
        with log_context(task="worker.tasks.deliver_chunk", chunk_id=12):
            logging.getLogger("x").warning("to a@b.org")
    finally:
        configure_logging()
    out = buf.getvalue()
    assert "WARNING x: to <email> [task=worker.tasks.deliver_chunk chunk_id=12]" in out
    assert redact("no personal data here") == "no personal data here"


def test_the_cli_default_level_yields_to_an_explicit_setting(monkeypatch):
    from campaigns.settings import get_settings

    def info_logged() -> bool:
        buf = io.StringIO()
        configure_logging(stream=buf, default_level="WARNING")
        logging.getLogger("campaigns.cli").info("step done")
        return "step done" in buf.getvalue()

    try:
        monkeypatch.delenv("MAB_LOG_LEVEL", raising=False)
        get_settings.cache_clear()
        assert not info_logged()
        monkeypatch.setenv("MAB_LOG_LEVEL", "info")
        get_settings.cache_clear()
        assert info_logged()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        configure_logging()
