"""Queries of the lift report. Every one aggregates in the database and returns at most a few rows
per (period, segment, arm): the report never reads the ledger row by row.

The ledger is filtered by `period_id IN (the campaign's periods)`: its only indexes are the unique
(period_id, customer_id) and (customer_id), none on campaign_id (see models.Send).
"""

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from campaigns.models import AllocationSnapshot, Event, Send, SendPeriod

EXCLUDED = "excluded"  # bot/scanner events, flagged by the feedback ingestion
APPLIED = "applied"


def campaign_periods(session: Session, campaign_id: int):
    stmt = (
        select(SendPeriod.id, SendPeriod.number, SendPeriod.status, SendPeriod.created_at,
               SendPeriod.started_at, SendPeriod.completed_at)
        .where(SendPeriod.campaign_id == campaign_id)
        .order_by(SendPeriod.number)
    )
    return session.execute(stmt).all()


def ledger_groups(session: Session, period_ids: list[int]):
    """One row per (period, segment, arm, propensity, status): sends, clicked and converted sends
    (0/1 per send, as the engine counts them), revenue and its sum of squares.

    Grouping by the logged propensity keeps what off-policy estimates need (all sends of a group
    share their importance weight) at no cost: within a (period, segment, arm) it is constant.
    """
    if not period_ids:
        return []
    clicked = func.sum(case((Send.first_click_at.is_not(None), 1), else_=0))
    converted = func.sum(case((Send.first_conversion_at.is_not(None), 1), else_=0))
    stmt = (
        select(
            Send.period_id,
            Send.segment_id,
            Send.arm,
            Send.propensity,
            Send.status,
            func.count().label("sends"),
            clicked.label("clicks"),
            converted.label("conversions"),
            func.coalesce(func.sum(Send.revenue), 0.0).label("revenue"),
            func.coalesce(func.sum(Send.revenue * Send.revenue), 0.0).label("revenue_sq"),
        )
        .where(Send.period_id.in_(period_ids))
        .group_by(Send.period_id, Send.segment_id, Send.arm, Send.propensity, Send.status)
    )
    return session.execute(stmt).all()


def _later_than(session: Session, later, earlier, days: int):
    """SQL: `later` is more than `days` days after `earlier` (portable across the two databases)."""
    if session.get_bind().dialect.name == "sqlite":  # datetimes are ISO strings there
        return (func.julianday(later) - func.julianday(earlier)) > days
    return (later - earlier) > func.make_interval(0, 0, 0, days)


def late_events(session: Session, campaign_id: int, period_ids: list[int], window_days: int):
    """Per period of the send: applied feedback events, those that occurred after the next
    period's allocation snapshot of the send's segment was taken (too late to inform it), those
    received more than the attribution window after the send, and those that are either.
    """
    if not period_ids:
        return []
    nxt = aliased(AllocationSnapshot)
    after_next = and_(nxt.created_at.is_not(None), Event.occurred_at > nxt.created_at)
    after_window = and_(Send.sent_at.is_not(None), _later_than(session, Event.received_at, Send.sent_at, window_days))
    one = literal(1)
    stmt = (
        select(
            Send.period_id,
            func.count().label("events"),
            func.sum(case((after_next, one), else_=0)).label("after_next_allocation"),
            func.sum(case((after_window, one), else_=0)).label("received_after_window"),
            func.sum(case((after_next | after_window, one), else_=0)).label("late"),
        )
        .select_from(Event)
        .join(Send, Send.id == Event.send_id)
        .join(SendPeriod, SendPeriod.id == Send.period_id)
        .outerjoin(
            nxt,
            and_(nxt.campaign_id == campaign_id, nxt.segment_id == Send.segment_id,
                 nxt.version == SendPeriod.number + 1),
        )
        .where(Event.campaign_id == campaign_id, Event.status == APPLIED, Send.period_id.in_(period_ids))
        .group_by(Send.period_id)
    )
    return session.execute(stmt).all()
