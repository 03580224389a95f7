"""Send windows in the service layer: the design's built-in factor, the claim cut into one id range
per release time, what a period waiting for a window says, and the release of due chunks.

The pure parts (parsing, time zones, release times) are in campaigns/send_windows.py.
"""

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlmodel import Session

from campaigns import metrics, send_windows
from campaigns.db import on_commit
from campaigns.errors import InvalidInput
from campaigns.models import Campaign, SendPeriod, utcnow
from campaigns.repositories import campaigns as campaign_repo
from campaigns.repositories import chunks as chunk_repo
from campaigns.repositories import sends as send_repo
from campaigns.repositories import windows as window_repo
from campaigns.settings import get_settings

log = logging.getLogger(__name__)

WAITING = "waiting: window opens at"


def with_windows(data):
    """A new campaign's payload with the windows as the factor `send_window` (after its own
    factors), the stored windows and their default time zone; a 422 naming the field."""
    windows = send_windows.normalize(data.send_windows, data.factors)
    if windows is None:
        if data.send_window_timezone is not None:
            raise InvalidInput("send_window_timezone", "a time zone for send windows needs `send_windows`")
        return data, None, None
    if data.send_window_timezone is not None:
        tz = send_windows.check_timezone(data.send_window_timezone, "send_window_timezone")
    else:
        tz = (data.schedule.timezone if data.schedule is not None else None) or "UTC"
        send_windows.check_timezone(tz, "schedule.timezone")
    return data.model_copy(update={"factors": {**data.factors, send_windows.FACTOR: windows}}), windows, tz


def as_declared(fields: dict) -> dict:
    """A campaign's design as a file or a request declares it: the windows normalised, and the
    factors without the built-in `send_window` (which `send_windows` adds)."""
    windows = fields.get("send_windows")
    if not windows or not isinstance(windows, list) or not isinstance(fields.get("factors"), dict):
        return fields
    normal = [send_windows.normalize_window(w, f"send_windows[{i}]") for i, w in enumerate(windows)]
    factors = {k: v for k, v in fields["factors"].items() if k != send_windows.FACTOR}
    return {**fields, "send_windows": normal, "factors": factors}


def _groups(session: Session, campaign: Campaign, period: SendPeriod, segment_id: int, customer_ids: np.ndarray,
            arms: np.ndarray) -> tuple[list[tuple[datetime | None, str | None, np.ndarray]], int]:
    """The claim's customers grouped by release time, earliest first: [(release_at, window, positions)],
    and how many had an unknown time zone. Without windows: one group, released at once."""
    if not campaign.send_windows:
        return [(None, None, np.arange(len(customer_ids)))], 0
    windows = campaign.send_windows
    variants = campaign_repo.variants(session, campaign.id)
    # window index by arm + 1 (arm -1, the control group, gets the baseline message in its window)
    table = np.empty(len(variants) + 1, dtype=np.int64)
    table[0] = windows.index(campaign.baseline.get(send_windows.FACTOR, windows[0]))
    for v in variants:
        table[v.arm + 1] = windows.index(v.params[send_windows.FACTOR])
    window_of = table[np.asarray(arms, dtype=np.int64) + 1]
    zones = window_repo.timezones(session, segment_id, customer_ids, send_windows.ATTRIBUTE)
    at, fallbacks = send_windows.release_times(windows, window_of, zones, campaign.send_window_timezone or "UTC",
                                               period.started_at or utcnow())
    # groups by (release time, window), earliest first; positions in id order within each
    keys, inverse = np.unique(np.column_stack([at, window_of.astype(np.float64)]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    groups = [(datetime.fromtimestamp(float(keys[g, 0]), UTC), windows[int(keys[g, 1])], order[bounds[g]:bounds[g + 1]])
              for g in range(len(keys))]
    return groups, fallbacks


def claim(session: Session, campaign: Campaign, period: SendPeriod, segment_id: int, customer_ids: np.ndarray,
          arms: np.ndarray, propensities: np.ndarray) -> tuple[list[int], int]:
    """Write one segment's ledger rows and cut them into chunks: one contiguous range of send ids
    per release time (so a chunk holds the sends of one window opening), each chunk stamped with
    its release time. Returns (chunk ids, sends claimed). In the caller's transaction, under the
    plan lock: no other claim of this period runs in between."""
    groups, fallbacks = _groups(session, campaign, period, segment_id, customer_ids, arms)
    size = get_settings().send_chunk_size
    chunk_ids: list[int] = []
    total = 0
    for release_at, window, at in groups:
        before = send_repo.max_send_id(session)
        send_repo.claim_sends(session, campaign.id, period.id, segment_id, customer_ids[at], arms[at],
                              propensities[at])
        first, last, claimed = send_repo.claimed_since(session, period.id, before)
        if claimed != len(at):  # ids are handed out in order; if not, chunks would miss sends
            raise RuntimeError(f"period {period.id}: claimed {len(at)} sends, found {claimed} after id {before}")
        # Ranges of send ids: no scan of the ledger, and a range holds at most `send_chunk_size` rows.
        ranges = [(a, min(a + size - 1, last)) for a in range(first, last + 1, size)]
        # sends per chunk, for the progress per window: the range's width unless another period's
        # claim interleaved its ids (PostgreSQL, concurrent plans), then counted
        contiguous = last - first + 1 == claimed
        sizes = None if window is None else [
            b - a + 1 if contiguous else window_repo.count_in_range(session, period.id, a, b) for a, b in ranges]
        chunk_ids += chunk_repo.create(session, period.id, ranges, release_at=release_at, window=window, sizes=sizes)
        total += claimed
    send_repo.refresh_statistics(session)
    if fallbacks:
        window_repo.add_fallbacks(session, period.id, fallbacks)
        on_commit(session, lambda: metrics.observe_timezone_fallbacks(fallbacks))
        log.warning("period %s: %s customers have an unknown time zone; sent in the campaign's (%s)", period.number,
                    fallbacks, campaign.send_window_timezone,
                    extra={"campaign_id": campaign.id, "period_id": period.id, "segment_id": segment_id})
    return chunk_ids, total


def not_yet(release_at: datetime | None, now: datetime) -> str | None:
    """Why a chunk may not be delivered yet: its window has not opened."""
    if release_at is None or release_at <= now:
        return None
    return f"{WAITING} {release_at:%Y-%m-%d %H:%M} UTC"


def state(session: Session, period: SendPeriod, now: datetime) -> tuple[str, str | None] | None:
    """The period's state when its send windows explain it, else None: 'waiting' (for window … at
    …) when it is planned and every unfinished chunk waits for its window — idle on purpose, not
    stalled —, and 'sending' for a lease after a window opened, while the sweeper hands it out."""
    if period.planned_at is None:
        return None
    nxt = window_repo.next_wait(session, period.id, now)
    if nxt is not None:
        window, at = nxt
        return "waiting", f"waiting for window {window} at {at:%Y-%m-%d %H:%M} UTC"
    since = now - timedelta(seconds=get_settings().chunk_lease_seconds)
    return ("sending", None) if window_repo.opened_since(session, period.id, since, now) else None


def progress(session: Session, period: SendPeriod, now: datetime) -> list[dict]:
    """Progress per window: sends, outcomes, chunks, when it opens, and its state."""
    out = []
    for r in window_repo.by_window(session, period.id):
        state = ("done" if r.chunks_done == r.chunks else "waiting" if r.opens_at > now else "sending")
        out.append({"window": r.window, "opens_at": r.opens_at, "closes_at": r.closes_at, "state": state,
                    "total": int(r.total or 0), "sent": int(r.sent or 0), "failed": int(r.failed or 0),
                    "chunks": r.chunks, "chunks_done": r.chunks_done})
    return out


def release_due(session: Session, period_id: int, now: datetime) -> list[int]:
    """Beat: the period's chunks whose window opened since they were last touched, to hand out now.
    Each is marked handed out (its `updated_at`), so it is released once; a task lost after that is
    found as any lost chunk is (sweeper)."""
    return window_repo.release_due(session, period_id, now)
