"""Schedules: every cadence's next slot in its time zone, and refusals naming the field (pure code)."""

from datetime import UTC, datetime, timedelta

import pytest

from campaigns import schedules
from campaigns.errors import InvalidInput

FRIDAY = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)


def slot(cadence, schedule, after=FRIDAY):
    return schedules.next_slot(cadence, schedules.normalize(cadence, schedule), after)


def test_weekly_slot_is_the_local_weekday_and_hour():
    assert slot("weekly", {"weekday": "tuesday", "hour": 10, "timezone": "Europe/Paris"}) == datetime(
        2026, 12, 8, 9, 0, tzinfo=UTC)  # 10:00 in Paris is 09:00 UTC in winter
    assert slot("weekly", None) == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # defaults: Monday 09:00 UTC
    # summer time: 10:00 in Paris is 08:00 UTC
    assert slot("weekly", {"weekday": "tuesday", "hour": 10, "timezone": "Europe/Paris"},
                datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2026, 6, 2, 8, 0, tzinfo=UTC)


def test_the_next_slot_is_strictly_after_and_never_now():
    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # exactly Monday 09:00
    assert slot("weekly", None, at) == at + timedelta(weeks=1)
    assert slot("daily", {"hour": 16}) == datetime(2026, 12, 5, 16, 0, tzinfo=UTC)
    assert slot("hourly", {"minute": 30}) == datetime(2026, 12, 4, 16, 30, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "expected"), [
    ("*/15 * * * *", datetime(2026, 12, 4, 16, 15, tzinfo=UTC)),
    ("0 9 1 * *", datetime(2027, 1, 1, 9, 0, tzinfo=UTC)),
    ("30 8 * * 1-5", datetime(2026, 12, 7, 8, 30, tzinfo=UTC)),
    ("0 0 * * 7", datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),  # 7 is Sunday
    ("0 0 13 * 5", datetime(2026, 12, 11, 0, 0, tzinfo=UTC)),  # both days restricted: either matches
])
def test_cron(cron, expected):
    assert slot("cron", {"cron": cron}) == expected


def test_manual_has_no_slot_and_no_schedule():
    assert schedules.next_slot("manual", None, FRIDAY) is None
    with pytest.raises(InvalidInput) as exc:
        schedules.normalize("manual", {"hour": 9})
    assert exc.value.field == "schedule"


@pytest.mark.parametrize(("cadence", "schedule", "field"), [
    ("weekly", {"timezone": "Nowhere/Town"}, "schedule.timezone"),
    ("cron", {}, "schedule.cron"),
    ("cron", {"cron": "61 * * * *"}, "schedule.cron"),
    ("cron", {"cron": "0 9 * *"}, "schedule.cron"),
    ("cron", {"cron": "0 0 31 2 *"}, "schedule.cron"),  # never
    ("daily", {"cron": "0 9 * * *"}, "schedule.cron"),
])
def test_bad_schedules_are_refused_naming_the_field(cadence, schedule, field):
    with pytest.raises(InvalidInput) as exc:
        schedules.normalize(cadence, schedule)
    assert exc.value.field == field
