"""Send windows: when, in each customer's local time, a campaign's emails may leave.

A campaign may declare windows such as `["tue 09:00", "tue 18:00", "sat 11:00"]` (a weekday and a
local time). They become a built-in factor, `send_window`, whose levels are the windows: every arm
is a (message × window) pair, so the engine learns the window like any other factor (the structured
model gets it as a factor; the report shows its effect). Templates see it only if they use
`{{ send_window }}`.

Each email is released at its window's next opening in the customer's time zone (the customer's
`timezone` attribute, an IANA name; the campaign's time zone when it has none or an unknown one).
A window stays open for `OPEN_MINUTES`: a period planned a little after a window opened still sends
in it now rather than a week later. Pure code: no database here.
"""

import re
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from campaigns.errors import InvalidInput

FACTOR = "send_window"
ATTRIBUTE = "timezone"  # the customer attribute that names a customer's time zone
OPEN_MINUTES = 60
MAX_WINDOWS = 28
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
_FULL = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
         "saturday": "sat", "sunday": "sun"}
_WINDOW = re.compile(r"^\s*([a-z]+)\s+([0-9]{1,2}):([0-9]{2})\s*$")


def normalize_window(text: str, field: str) -> str:
    """'Tuesday 9:00' -> 'tue 09:00', or a 422 naming the field."""
    match = _WINDOW.match(text.lower()) if isinstance(text, str) else None
    day = match and _FULL.get(match.group(1), match.group(1))
    if not match or day not in DAYS:
        raise InvalidInput(field, f"'{text}' is not a window: a weekday and a local time, e.g. 'tue 09:00'")
    hour, minute = int(match.group(2)), int(match.group(3))
    if hour > 23 or minute > 59:
        raise InvalidInput(field, f"'{text}': the time must be between 00:00 and 23:59")
    return f"{day} {hour:02d}:{minute:02d}"


def normalize(windows: list[str] | None, factors: dict, field: str = "send_windows") -> list[str] | None:
    """The stored windows (normalised, in the given order), None for none; a 422 naming the field."""
    if not windows:
        return None
    if FACTOR in factors:
        raise InvalidInput(f"factors.{FACTOR}", f"'{FACTOR}' is the built-in factor of `send_windows`: "
                           "declare the windows there")
    if len(windows) > MAX_WINDOWS:
        raise InvalidInput(field, f"at most {MAX_WINDOWS} windows")
    out = [normalize_window(w, f"{field}[{i}]") for i, w in enumerate(windows)]
    for i, w in enumerate(out):
        if w in out[:i]:
            raise InvalidInput(f"{field}[{i}]", f"'{w}' is listed twice")
    return out


def check_timezone(name: str, field: str) -> str:
    if zone(name) is None:
        raise InvalidInput(field, f"unknown time zone '{name}' (an IANA name, e.g. Europe/Paris)")
    return name


@lru_cache(maxsize=1024)
def zone(name) -> ZoneInfo | None:
    """The time zone of an attribute value, or None when it is not a known IANA name."""
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def opening(window: str, tz: ZoneInfo, start: datetime) -> datetime:
    """The UTC time the window opens for a customer in `tz`: its occurrence that is open at `start`
    (opened less than OPEN_MINUTES before) or, if none is, the next one after `start`."""
    day_name, clock = window.split()
    hour, minute = (int(x) for x in clock.split(":"))
    weekday = DAYS.index(day_name)
    local = start.astimezone(tz)
    for offset in range(-1, 9):
        day = local.date() + timedelta(days=offset)
        if day.weekday() != weekday:
            continue
        at = datetime.combine(day, time(hour, minute), tz).astimezone(UTC)
        if at + timedelta(minutes=OPEN_MINUTES) > start:
            return at
    raise AssertionError("unreachable: a weekday recurs within a week")


def release_times(windows: list[str], window_of: np.ndarray, zone_names: np.ndarray, default_tz: str,
                  start: datetime) -> tuple[np.ndarray, int]:
    """Each customer's release time (epoch seconds), from the index of its window and its time zone
    attribute ("" or None: none given), and how many customers had an unknown time zone (they get
    the campaign's). Computed once per distinct (window, zone), not per customer."""
    default = zone(default_tz) or ZoneInfo("UTC")
    names = np.asarray(["" if z is None else str(z) for z in zone_names] if isinstance(zone_names, list)
                       else zone_names, dtype=object).astype(str)
    distinct, zone_code = np.unique(names, return_inverse=True)
    zone_code = zone_code.reshape(-1)
    zones = [zone(name) if name else default for name in distinct.tolist()]
    unknown = np.array([z is None for z in zones], dtype=bool)
    fallbacks = int(np.bincount(zone_code, minlength=len(distinct))[unknown].sum()) if len(names) else 0
    zones = [z or default for z in zones]
    width = max(len(distinct), 1)
    pairs, inverse = np.unique(window_of.astype(np.int64) * width + zone_code, return_inverse=True)
    at = np.empty(len(pairs), dtype=np.float64)
    for k, p in enumerate(pairs.tolist()):
        w, z = divmod(p, width)
        at[k] = opening(windows[w], zones[z], start).timestamp()
    return at[inverse.reshape(-1)], fallbacks
