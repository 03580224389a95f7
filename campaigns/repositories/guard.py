"""Queries of the auto-pause guard: the periods it watches, their unsubscribes and complaints, and
what it records (the campaign's status reason, the period it tripped on).

`campaign.status_reason` and `send_period.guard_tripped_at` come with migration 0006; they are read
and written here through lightweight table clauses, so these queries do not depend on the ORM
classes declaring them.
"""

from datetime import datetime

from sqlalchemy import and_, column, func, or_, select, table, text, update
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from campaigns.models import Campaign, CampaignStatus, Event, EventStatus, EventType, PeriodStatus

_period = table(
    "send_period",
    column("id"), column("campaign_id"), column("number"), column("status"), column("sent"),
    column("started_at", UTCDateTime()), column("completed_at", UTCDateTime()),
    column("guard_tripped_at", UTCDateTime()),
)
_campaign = table("campaign", column("id"), column("status_reason"))
_send = table("send", column("id"), column("period_id"))

# The same predicate as the partial index ix_event_negative_feedback (migration 0006), written out so
# the planner (PostgreSQL with bound parameters, SQLite always) can see that the index applies.
NEGATIVE = (EventType.UNSUBSCRIBE.value, EventType.COMPLAINT.value)
NEGATIVE_PREDICATE = text(f"event.type IN ('{NEGATIVE[0]}', '{NEGATIVE[1]}')")


def watched_periods(session: Session, since: datetime, min_sends: int) -> list:
    """Periods of active campaigns the guard judges: running, or finished (completed or stopped)
    since `since`; with at least `min_sends` sends; not already the cause of an auto-pause."""
    p = _period.c
    stmt = (
        select(p.id, p.campaign_id, p.number, p.sent)
        .join(Campaign, Campaign.id == p.campaign_id)
        .where(
            Campaign.status == CampaignStatus.ACTIVE,
            p.guard_tripped_at.is_(None),
            p.sent >= min_sends,
            or_(
                p.status == PeriodStatus.RUNNING,
                and_(p.status.in_([PeriodStatus.COMPLETED, PeriodStatus.FAILED]),
                     func.coalesce(p.completed_at, p.started_at) >= since),
            ),
        )
        .order_by(p.campaign_id, p.number)
    )
    return list(session.execute(stmt).all())


def negative_feedback(session: Session, campaign_ids: set[int], period_ids: set[int]) -> dict[tuple[int, str], int]:
    """(period id, event type) -> sends of the period with at least one attributed unsubscribe or
    complaint. Counted per send: one recipient complaining twice is one complaint."""
    if not period_ids:
        return {}
    stmt = (
        select(_send.c.period_id, Event.type, func.count(func.distinct(Event.send_id)))
        .select_from(Event)
        .join(_send, _send.c.id == Event.send_id)
        .where(
            NEGATIVE_PREDICATE,
            Event.campaign_id.in_(sorted(campaign_ids)),
            Event.status == EventStatus.APPLIED,
            _send.c.period_id.in_(sorted(period_ids)),
        )
        .group_by(_send.c.period_id, Event.type)
    )
    return {(pid, type_): n for pid, type_, n in session.execute(stmt).all()}


def mark_tripped(session: Session, period_ids: list[int], now: datetime) -> None:
    session.execute(update(_period).where(_period.c.id.in_(period_ids)).values(guard_tripped_at=now))


def set_status_reason(session: Session, campaign_id: int, reason: str | None) -> None:
    session.execute(update(_campaign).where(_campaign.c.id == campaign_id).values(status_reason=reason))


def status_reason(session: Session, campaign_id: int) -> str | None:
    return session.execute(select(_campaign.c.status_reason).where(_campaign.c.id == campaign_id)).scalar_one_or_none()


def tripped_at(session: Session, period_id: int) -> datetime | None:
    return session.execute(select(_period.c.guard_tripped_at).where(_period.c.id == period_id)).scalar_one_or_none()
