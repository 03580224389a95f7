"""Waves inside a period (test, then send): the campaign's setting and its checks.

A campaign with `waves = {"first_share": s, "wait_hours": h}` mails, in each period, a seeded random
share s of every segment's eligible customers first, then the rest h hours later from the updated
posterior. The wait must end before the next period can start, so it is shorter than the cadence's
interval (the shortest gap between two slots of a cron cadence); a manual cadence has no interval.
"""
from datetime import UTC, datetime, timedelta

import numpy as np

from campaigns import schedules
from campaigns.errors import InvalidInput

LAST = 2  # test, then send: two waves
MAX_WAIT_HOURS = 168.0  # a week: a second wave later than that is another period
SLOTS_CHECKED = 50  # consecutive cron slots whose shortest gap bounds the wait


def cadence_interval(cadence: str, schedule: dict | None, now: datetime | None = None) -> timedelta | None:
    """The shortest gap between two consecutive slots of the cadence, or None for a manual one."""
    slot = schedules.next_slot(cadence, schedule, now or datetime.now(UTC))
    if slot is None:
        return None
    shortest = None
    for _ in range(SLOTS_CHECKED):
        following = schedules.next_slot(cadence, schedule, slot)
        if following is None:
            break
        gap = following - slot
        shortest = gap if shortest is None or gap < shortest else shortest
        slot = following
    return shortest


def normalize(waves: dict | None, cadence: str, schedule: dict | None, send_windows: list | None = None) -> dict | None:
    """The stored setting, or a 422 naming the field: a share strictly inside (0, 1), a positive
    wait shorter than the cadence's interval, and no send windows (a window holds a wave's emails
    back, so its clicks would not be in when the wait ends)."""
    if waves is None:
        return None
    if send_windows:
        raise InvalidInput("waves", "waves and send_windows do not combine: a send window holds the first wave's "
                           "emails until it opens, so its clicks would not be in when the wait ends")
    share, wait = float(waves["first_share"]), float(waves["wait_hours"])
    if not 0.0 < share < 1.0:
        raise InvalidInput("waves.first_share", "the first wave's share must be strictly between 0 and 1")
    if not 0.0 < wait <= MAX_WAIT_HOURS:
        raise InvalidInput("waves.wait_hours", f"the wait must be positive and at most {MAX_WAIT_HOURS:g} hours")
    interval = cadence_interval(cadence, schedule)
    if interval is not None and wait >= interval.total_seconds() / 3600:
        raise InvalidInput("waves.wait_hours", f"the wait ({wait:g} h) must be shorter than the cadence's "
                           f"interval ({interval.total_seconds() / 3600:g} h): the second wave would "
                           "overlap the next period")
    return {"first_share": share, "wait_hours": wait}


def first_wave(customer_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The customers of a segment in its first wave: a seeded random `share` of them (rounded), in
    their original order. The rest wait for the next wave, which claims whoever has no send yet."""
    take = int(round(share * len(customer_ids)))
    chosen = np.random.default_rng(seed).choice(len(customer_ids), size=take, replace=False)
    return customer_ids[np.sort(chosen)]


def next_wave_at(setting: dict, first_wave_planned: datetime) -> datetime:
    return first_wave_planned + timedelta(hours=float(setting["wait_hours"]))
