"""Beat's sweeper: work whose task was lost is found in the database and handed out again.

The broker is a fast path, not the source of truth. A task is lost when the worker holding it dies
(Redis would hand it out again only after its visibility timeout, an hour), or when the broker was
down when it was sent. Every MAB_SWEEP_INTERVAL_SECONDS, for each queued or running period of an
active campaign, the sweeper hands out again:

- the chunks whose holder stopped: a lease that ran out, or a holder process on this host that no
  longer exists (a worker killed mid-chunk; its lease need not run out first);
- with send windows, the chunks whose window has opened since they were created (once each,
  campaigns/services/send_windows.py); a chunk whose window has not opened is never lost;
- when the period has not moved for a chunk lease: its plan (`run_period`, for a period still
  queued or not fully planned, but not while it waits between two waves: beat plans the next wave
  when it is due) and its chunks still pending.

Handing out twice is safe: a chunk is delivered under its lease and the ledger sends only queued
rows; a plan skips the segments already claimed. To keep duplicates few, a period's work is handed
out again at most once per lease (`send_period.redispatched_at`).
"""

import logging
from datetime import datetime

from campaigns import jobs, metrics
from campaigns.db import session_scope
from campaigns.models import PeriodStatus, SendPeriod, utcnow
from campaigns.repositories import campaigns as repo
from campaigns.repositories import chunks as chunk_repo
from campaigns.services import period_health, send_windows
from campaigns.services.sending import dead_local_holder
from campaigns.settings import get_settings

log = logging.getLogger(__name__)


def sweep(now: datetime | None = None) -> dict:
    """Beat's entry point: {"plans": [period ids], "chunks": [chunk ids]} handed out again."""
    now = now or utcnow()
    lease = get_settings().chunk_lease_seconds
    plans: list[int] = []
    chunks: list[int] = []
    released: list[int] = []  # chunks whose send window opened: handed out for the first time
    with session_scope() as session:
        for period in repo.in_flight_of_active_campaigns(session):
            due = send_windows.release_due(session, period.id, now)
            released += due
            if period.redispatched_at and (now - period.redispatched_at).total_seconds() < lease:
                continue  # handed out lately: give those tasks their time
            plan, lost = _lost_work(session, period, now, lease)
            lost = [c for c in lost if c not in due]  # just released: not lost
            if due:  # handed out now: give those tasks their time (a lease) as after a redispatch
                period.redispatched_at = now
            if plan or lost:
                period.redispatched_at = now
                plans += [period.id] if plan else []
                chunks += lost
                log.warning("period %s of campaign %s: handing out again %s", period.number, period.campaign_id,
                            _describe(plan, lost), extra={"campaign_id": period.campaign_id, "period_id": period.id})
    # After the commit: a task must find redispatched_at already written.
    for period_id in plans:
        jobs.run_period(period_id)
    jobs.deliver_chunks(released + chunks)
    metrics.observe_redispatch("plan", len(plans))
    metrics.observe_redispatch("chunk", len(chunks))
    metrics.observe_window_release(len(released))
    return {"plans": plans, "chunks": released + chunks}


def _lost_work(session, period: SendPeriod, now: datetime, lease: float) -> tuple[bool, list[int]]:
    """(plan lost?, chunk ids lost) of one period."""
    moved = [t for t in (period_health.last_moved(period), repo.last_claim_at(session, period.id)) if t]
    idle = (now - max(moved)).total_seconds() > lease if moved else True
    between_waves = period.next_wave_at is not None and now < period.next_wave_at  # beat plans it when due
    plan = idle and not between_waves and (period.status == PeriodStatus.QUEUED or period.planned_at is None)
    lost = [chunk_id for chunk_id, holder in chunk_repo.abandoned(session, period.id, now, include_pending=idle)
            if holder is None or dead_local_holder(holder)]
    return plan, lost


def _describe(plan: bool, chunks: list[int]) -> str:
    parts = (["its plan"] if plan else []) + ([f"{len(chunks)} chunks ({_ids(chunks)})"] if chunks else [])
    return " and ".join(parts)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
