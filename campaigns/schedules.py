"""When a recurring campaign sends: every cadence is a cron expression in a named time zone.

`weekly` is one weekday at a local hour and minute, `daily` an hour and minute, `hourly` a minute
past every hour, `cron` any five-field expression (minute hour day-of-month month day-of-week).
Pure code: the first period goes out at the next slot after the start, never at the start itself.
"""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaigns.errors import InvalidInput

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")  # cron numbering
DEFAULTS = {"weekday": "monday", "hour": 9, "minute": 0, "timezone": "UTC"}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
HORIZON_DAYS = 366 * 5  # `0 0 29 2 1` (29 February on a Monday) recurs within 28 years; refuse what never does


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{name}: bad step in '{part}'")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"{name}: '{part}' is not a range")
            start, end = int(a), int(b)
        elif body.isdigit():
            start = int(body)
            end = high if step else start
        else:
            raise ValueError(f"{name}: '{part}' is not a number, range or *")
        if not (low <= start <= end <= high):
            raise ValueError(f"{name}: '{part}' is outside {low}-{high}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


def parse_cron(expression: str) -> tuple[frozenset[int], ...]:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError("a cron expression has five fields: minute hour day-of-month month day-of-week")
    fields = [_field(p, name, low, high) for p, (name, low, high) in zip(parts, FIELDS, strict=True)]
    fields[4] = frozenset(d % 7 for d in fields[4])  # 7 is Sunday too
    # cron's rule: when both day fields are restricted, a day matching either one is a slot
    restricted = (parts[2] != "*", parts[4] != "*")
    return (*fields, frozenset(i for i, r in enumerate(restricted) if r))


def cron_of(cadence: str, schedule: dict) -> str | None:
    if cadence == "manual":
        return None
    if cadence == "cron":
        return schedule["cron"]
    minute, hour = schedule["minute"], schedule["hour"]
    if cadence == "hourly":
        return f"{minute} * * * *"
    if cadence == "daily":
        return f"{minute} {hour} * * *"
    return f"{minute} {hour} * * {WEEKDAYS.index(schedule['weekday'])}"


def normalize(cadence: str, schedule: dict | None) -> dict | None:
    """The stored schedule of a cadence (defaults filled in), or a 422 naming the field."""
    if cadence == "manual":
        if schedule:
            raise InvalidInput("schedule", "a manual campaign has no schedule (choose weekly, daily, hourly or cron)")
        return None
    given = {k: v for k, v in (schedule or {}).items() if v is not None}
    out = {**DEFAULTS, **given}
    try:
        ZoneInfo(out["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("schedule.timezone", f"unknown time zone '{out['timezone']}' (e.g. Europe/Paris)") from None
    if cadence == "cron":
        if not out.get("cron"):
            raise InvalidInput("schedule.cron", "the cron cadence needs a cron expression, e.g. '0 9 * * 1'")
        try:
            parse_cron(out["cron"])
        except ValueError as exc:
            raise InvalidInput("schedule.cron", str(exc)) from None
        out = {"cron": " ".join(out["cron"].split()), "timezone": out["timezone"]}
    elif out.get("cron"):
        raise InvalidInput("schedule.cron", f"a cron expression needs cadence 'cron', not '{cadence}'")
    if next_slot(cadence, out, datetime.now(UTC)) is None:
        raise InvalidInput("schedule.cron", "the expression never matches a date in the next five years")
    return out


def next_slot(cadence: str, schedule: dict | None, after: datetime) -> datetime | None:
    """The first slot strictly after `after` (UTC), or None for a manual campaign."""
    expression = cron_of(cadence, {**DEFAULTS, **(schedule or {})})
    if expression is None:
        return None
    minutes, hours, days, months, weekdays, restricted = parse_cron(expression)
    zone = ZoneInfo((schedule or {}).get("timezone") or "UTC")
    local = after.astimezone(zone)
    for offset in range(HORIZON_DAYS):
        day = local.date() + timedelta(days=offset)
        if day.month not in months or not _day_matches(day, days, weekdays, restricted):
            continue
        for hour in sorted(hours):
            for minute in sorted(minutes):
                slot = datetime.combine(day, time(hour, minute), zone).astimezone(UTC)
                if slot > after:
                    return slot
    return None


def _day_matches(day: date, days, weekdays, restricted) -> bool:
    in_month, in_week = day.day in days, (day.isoweekday() % 7) in weekdays
    if restricted == {0, 1}:
        return in_month or in_week
    return in_month and in_week
