"""Queries of the lift report. Every one aggregates in the database and returns at most a few rows
per (period, segment, arm): the report never reads the ledger row by row.

The ledger is filtered by `period_id IN (the campaign's periods)`: its only indexes are the unique
(period_id, customer_id) and (customer_id), none on campaign_id (see models.Send).
"""

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from campaigns.db import dialect_insert
from campaigns.models import (
    AllocationSnapshot,
    AuditLog,
    Campaign,
    Event,
    ModelAction,
    Order,
    ReportSnapshot,
    Send,
    SendPeriod,
)

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
                 nxt.version == SendPeriod.number + 1, nxt.wave == 1),
        )
        .where(Event.campaign_id == campaign_id, Event.status == APPLIED, Send.period_id.in_(period_ids))
        .group_by(Send.period_id)
    )
    return session.execute(stmt).all()


def failures(session: Session, period_ids: list[int]):
    """Failed sends per (period, reason), the reason read from the ledger's error text (bounded:
    a handful of classes, not one row per distinct message), with one example message each."""
    if not period_ids:
        return []
    reason = case(
        (Send.error.like("suppressed:%"), "suppressed at send time"),
        (Send.error.like("render failed:%"), "template failed to render"),
        (Send.error.like("deferred %"), "deferred by the mail server until given up"),
        (Send.error.is_(None), "no reason recorded"),
        else_="refused by the mail server",
    )
    stmt = (
        select(Send.period_id, reason.label("reason"), func.count().label("sends"),
               func.min(Send.error).label("example"))
        .where(Send.period_id.in_(period_ids), Send.status == "failed")
        .group_by(Send.period_id, reason)
    )
    return session.execute(stmt).all()


def excluded_events(session: Session, campaign_id: int):
    """Feedback events excluded as bots or scanners, by type and rule."""
    stmt = (
        select(Event.type, Event.reason, func.count().label("events"))
        .where(Event.campaign_id == campaign_id, Event.status == EXCLUDED)
        .group_by(Event.type, Event.reason)
    )
    return session.execute(stmt).all()


def campaign_changes(session: Session, campaign_id: int):
    """Successful mutating API calls on the campaign (edits, starts, pauses, resumes) and what the
    service recorded itself (template versions, failure halts), oldest first."""
    stmt = (
        select(AuditLog.created_at, AuditLog.action, AuditLog.key_name, AuditLog.key_role, AuditLog.detail)
        .where(AuditLog.object_type == "campaign", AuditLog.object_id == campaign_id,
               AuditLog.outcome == "success", ~AuditLog.action.like("GET %"))
        .order_by(AuditLog.id)
    )
    return session.execute(stmt).all()


def guard_trips(session: Session, campaign_id: int):
    stmt = (
        select(SendPeriod.number, SendPeriod.guard_tripped_at)
        .where(SendPeriod.campaign_id == campaign_id, SendPeriod.guard_tripped_at.is_not(None))
        .order_by(SendPeriod.number)
    )
    return session.execute(stmt).all()


def pre_campaign_moments(session: Session, period_ids: list[int], before):
    """Per (segment, side) of the delivered sends: the sufficient statistics of regression adjustment
    on each customer's pre-campaign spend (x1) and order count (x2), orders strictly before `before`.
    side is 'control' for the holdout (arm -1), else 'bandit'. Outcomes: clicked, converted (0/1
    per send) and revenue."""
    if not period_ids:
        return []
    pre = (
        select(Order.customer_id, func.sum(Order.amount).label("spend"), func.count().label("orders"))
        .where(Order.ordered_at < before)
        .group_by(Order.customer_id)
        .subquery()
    )
    x1 = func.coalesce(pre.c.spend, 0.0)
    x2 = func.coalesce(pre.c.orders, 0) * 1.0
    y = {"click": case((Send.first_click_at.is_not(None), 1.0), else_=0.0),
         "conv": case((Send.first_conversion_at.is_not(None), 1.0), else_=0.0),
         "rev": func.coalesce(Send.revenue, 0.0)}
    side = case((Send.arm < 0, "control"), else_="bandit")
    cols = [Send.segment_id, side.label("side"), func.count().label("n"),
            func.sum(x1).label("sx1"), func.sum(x2).label("sx2"), func.sum(x1 * x1).label("sx1x1"),
            func.sum(x2 * x2).label("sx2x2"), func.sum(x1 * x2).label("sx1x2"),
            func.sum(y["rev"] * y["rev"]).label("syy_rev")]
    for name, expr in y.items():
        cols += [func.sum(expr).label(f"sy_{name}"), func.sum(expr * x1).label(f"sy1_{name}"),
                 func.sum(expr * x2).label(f"sy2_{name}")]
    stmt = (
        select(*cols)
        .select_from(Send)
        .outerjoin(pre, pre.c.customer_id == Send.customer_id)
        .where(Send.period_id.in_(period_ids), Send.status == "sent")
        .group_by(Send.segment_id, side)
    )
    return session.execute(stmt).all()


def input_facts(session: Session, campaign_id: int) -> list:
    """What the report reads, in a few cheap rows (index lookups and a GROUP BY over the campaign's
    events, never the ledger): when none of them changed, neither did the report. Sends change only
    through their period's counters or through feedback events, which both show here."""
    campaign = select(Campaign.status, Campaign.status_reason, Campaign.updated_at, Campaign.template_version,
                      Campaign.started_at).where(Campaign.id == campaign_id)
    periods = (select(SendPeriod.id, SendPeriod.status, SendPeriod.total, SendPeriod.sent, SendPeriod.failed,
                      SendPeriod.planned_at, SendPeriod.completed_at, SendPeriod.guard_tripped_at)
               .where(SendPeriod.campaign_id == campaign_id).order_by(SendPeriod.id))
    events = (select(Event.status, func.count(), func.max(Event.id))
              .where(Event.campaign_id == campaign_id).group_by(Event.status).order_by(Event.status))
    latest = select(
        select(func.max(AllocationSnapshot.id)).where(AllocationSnapshot.campaign_id == campaign_id).scalar_subquery(),
        select(func.max(ModelAction.id)).where(ModelAction.campaign_id == campaign_id).scalar_subquery(),
        select(func.max(AuditLog.id)).where(AuditLog.object_type == "campaign",
                                            AuditLog.object_id == campaign_id).scalar_subquery(),
        # an erasure deletes a customer's orders (the covariates of the adjusted lift) and is audited
        select(func.max(AuditLog.id)).where(AuditLog.object_type == "customer",
                                            ~AuditLog.action.like("GET %")).scalar_subquery(),
        select(func.max(Order.id)).scalar_subquery(),
    )
    return [tuple(session.execute(stmt).all()) for stmt in (campaign, periods, events, latest)]


def stored_report(session: Session, campaign_id: int) -> ReportSnapshot | None:
    return session.get(ReportSnapshot, campaign_id)


def stored_marks(session: Session) -> dict[int, tuple[str, object, float]]:
    """campaign id -> (mark, computed_at, compute_seconds) of every stored report."""
    rows = session.execute(select(ReportSnapshot.campaign_id, ReportSnapshot.mark, ReportSnapshot.computed_at,
                                  ReportSnapshot.compute_seconds)).all()
    return {r.campaign_id: (r.mark, r.computed_at, r.compute_seconds) for r in rows}


def store_report(session: Session, row: dict) -> None:
    """Insert or replace a campaign's stored report, unless the stored one was computed from a
    newer snapshot (two workers refreshing at once: the newer data wins, whoever finishes last)."""
    stmt = dialect_insert(session)(ReportSnapshot).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ReportSnapshot.campaign_id],
        set_={k: stmt.excluded[k] for k in ("mark", "computed_at", "compute_seconds", "report")},
        where=ReportSnapshot.computed_at <= stmt.excluded.computed_at,
    )
    session.execute(stmt)


def reportable_campaign_ids(session: Session) -> list[int]:
    """Campaigns with at least one period: the ones whose report the workers keep up to date."""
    return list(session.execute(select(SendPeriod.campaign_id).distinct()).scalars())


REFUSED = and_(Send.status == "failed", Send.error.is_not(None), ~Send.error.like("suppressed:%"),
               ~Send.error.like("render failed:%"), ~Send.error.like("deferred %"))


def refusals_by_arm(session: Session, period_ids: list[int]):
    """Per (segment, arm): sends the mail server refused for good (not suppressions, render failures or
    deferrals given up)."""
    if not period_ids:
        return []
    stmt = (select(Send.segment_id, Send.arm, func.count().label("refused"))
            .where(Send.period_id.in_(period_ids), REFUSED).group_by(Send.segment_id, Send.arm))
    return session.execute(stmt).all()


def negative_events_by_arm(session: Session, campaign_id: int):
    """Per (segment, arm, type): bounce, complaint and unsubscribe events on the campaign's sends."""
    stmt = (select(Send.segment_id, Send.arm, Event.type, func.count().label("events"))
            .join(Send, Send.id == Event.send_id)
            .where(Event.campaign_id == campaign_id, Event.type.in_(("bounce", "complaint", "unsubscribe")))
            .group_by(Send.segment_id, Send.arm, Event.type))
    return session.execute(stmt).all()


def profit_moments(session: Session, campaign_id: int, period_ids: list[int]):
    """Per (segment, arm) over delivered sends, what per-send profit's mean and variance need:
    sends, converted sends, revenue and its square, unsubscribed sends (an applied unsubscribe
    event), and the cross sums revenue x converted, revenue x unsubscribed, converted x unsubscribed."""
    if not period_ids:
        return []
    unsubscribed = (select(Event.send_id).where(Event.campaign_id == campaign_id, Event.type == "unsubscribe",
                                                Event.status == APPLIED).distinct().subquery())
    conv = case((Send.first_conversion_at.is_not(None), 1.0), else_=0.0)
    unsub = case((unsubscribed.c.send_id.is_not(None), 1.0), else_=0.0)
    rev = func.coalesce(Send.revenue, 0.0)
    stmt = (
        select(
            Send.segment_id, Send.arm, func.count().label("sends"),
            func.sum(conv).label("conversions"),
            func.sum(rev).label("revenue"),
            func.sum(rev * rev).label("revenue_sq"),
            func.sum(unsub).label("unsubscribes"),
            func.sum(rev * conv).label("revenue_conv"),
            func.sum(rev * unsub).label("revenue_unsub"),
            func.sum(conv * unsub).label("conv_unsub"),
        )
        .select_from(Send)
        .outerjoin(unsubscribed, unsubscribed.c.send_id == Send.id)
        .where(Send.period_id.in_(period_ids), Send.status == "sent")
        .group_by(Send.segment_id, Send.arm)
    )
    return session.execute(stmt).all()
