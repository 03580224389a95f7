"""The waves setting (test, then send) through real HTTP: stored and shown, bad input is a 422 naming
the field and writes nothing, and the wait must end before the cadence's next slot."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from campaigns import waves
from campaigns.db import session_scope
from campaigns.models import Campaign
from tests.factories import small_campaign_payload


def campaigns_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Campaign)).scalar_one()


def test_waves_are_off_by_default_and_stored_when_set(api):
    plain = api("POST", "/campaigns", "marketer", json=small_campaign_payload())
    assert plain.status_code == 201, plain.text
    assert plain.json()["waves"] is None
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(
        cadence="daily", waves={"first_share": 0.15, "wait_hours": 4}))
    assert r.status_code == 201, r.text
    assert r.json()["waves"] == {"first_share": 0.15, "wait_hours": 4.0}
    got = api("GET", f"/campaigns/{r.json()['id']}", "marketer").json()
    assert got["waves"] == {"first_share": 0.15, "wait_hours": 4.0}


BAD_WAVES = [
    ({"waves": {"first_share": 0, "wait_hours": 4}}, "waves.first_share", "greater than 0"),
    ({"waves": {"first_share": 1, "wait_hours": 4}}, "waves.first_share", "less than 1"),
    ({"waves": {"first_share": 1.5, "wait_hours": 4}}, "waves.first_share", "less than 1"),
    ({"waves": {"first_share": True, "wait_hours": 4}}, "waves.first_share", ""),
    ({"waves": {"first_share": 0.2, "wait_hours": 0}}, "waves.wait_hours", "greater than 0"),
    ({"waves": {"first_share": 0.2}}, "waves.wait_hours", "required"),
    ({"waves": {"first_share": 0.2, "wait_hours": 1e308}}, "waves.wait_hours", "less than or equal to 168"),
    ({"cadence": "daily", "waves": {"first_share": 0.2, "wait_hours": 167}}, "waves.wait_hours", "shorter"),
    ({"waves": {"first_share": 0.2, "wait_hours": 4, "x": 1}}, "waves.x", "extra"),
    ({"cadence": "daily", "waves": {"first_share": 0.2, "wait_hours": 24}}, "waves.wait_hours", "shorter"),
    ({"cadence": "hourly", "waves": {"first_share": 0.2, "wait_hours": 1.5}}, "waves.wait_hours", "shorter"),
    ({"cadence": "cron", "schedule": {"cron": "0 9,13 * * *"}, "waves": {"first_share": 0.2, "wait_hours": 4}},
     "waves.wait_hours", "shorter"),
]


@pytest.mark.parametrize(("override", "loc", "message"), BAD_WAVES, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_WAVES)])
def test_bad_waves_get_422_naming_the_field_and_write_nothing(api, override, loc, message):
    before = campaigns_count()
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(**override))
    assert r.status_code == 422, r.text
    assert any(d["loc"] == loc and message.lower() in d["msg"].lower() for d in r.json()["detail"]), r.json()
    assert campaigns_count() == before


def test_a_cadence_change_rechecks_the_wait(api):
    cid = api("POST", "/campaigns", "marketer", json=small_campaign_payload(
        cadence="daily", waves={"first_share": 0.1, "wait_hours": 6})).json()["id"]
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"cadence": "hourly"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "waves.wait_hours", r.text
    assert api("GET", f"/campaigns/{cid}", "marketer").json()["cadence"] == "daily"
    r = api("PATCH", f"/campaigns/{cid}", "marketer", json={"waves": {"first_share": 0.3, "wait_hours": 2}})
    assert r.status_code == 200 and r.json()["waves"] == {"first_share": 0.3, "wait_hours": 2.0}, r.text


def test_cadence_interval_is_the_shortest_gap_between_slots():
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert waves.cadence_interval("manual", None, now) is None
    assert waves.cadence_interval("hourly", None, now) == timedelta(hours=1)
    assert waves.cadence_interval("daily", None, now) == timedelta(days=1)
    assert waves.cadence_interval("weekly", None, now) == timedelta(days=7)
    assert waves.cadence_interval("cron", {"cron": "0 9,13 * * *"}, now) == timedelta(hours=4)
    # a time zone's daylight-saving change makes one day 23 hours long: the wait must fit it too
    assert waves.cadence_interval("daily", {"timezone": "Europe/Paris"}, datetime(2027, 3, 1, tzinfo=UTC)) \
        == timedelta(hours=23)


def test_waves_and_send_windows_do_not_combine(api):
    before = campaigns_count()
    r = api("POST", "/campaigns", "marketer", json=small_campaign_payload(
        waves={"first_share": 0.15, "wait_hours": 4}, send_windows=["tue 09:00", "sat 11:00"]))
    assert r.status_code == 422, r.text
    assert "waves" in r.text and "send_windows" in r.text
    assert campaigns_count() == before
