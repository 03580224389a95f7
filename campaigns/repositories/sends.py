"""Queries over the send ledger: audience selection, bulk claims, delivery results, aggregates."""

from sqlalchemy import and_, bindparam, case, func, select, update
from sqlmodel import Session

from campaigns.db import insert_ignoring_conflicts
from campaigns.models import Customer, CustomerStatus, Send, SendPeriod, SendStatus


def eligible_customer_ids(session: Session, segment_id: int, period_id: int) -> list[int]:
    """Active customers of the segment not yet claimed in this period, in id order (deterministic)."""
    already = select(Send.customer_id).where(Send.period_id == period_id)
    stmt = (
        select(Customer.id)
        .where(
            Customer.segment_id == segment_id,
            Customer.status == CustomerStatus.ACTIVE,
            Customer.id.not_in(already),
        )
        .order_by(Customer.id)
    )
    return list(session.execute(stmt).scalars())


def claim_sends(session: Session, rows: list[dict]) -> None:
    """Insert ledger rows; a (period, customer) already claimed is skipped by the unique constraint."""
    if rows:
        session.execute(insert_ignoring_conflicts(session, Send.__table__, ["period_id", "customer_id"]), rows)


def queued_batch(session: Session, period_id: int, limit: int):
    """The next chunk of claimed-but-unsent rows, with what rendering needs about the customer."""
    stmt = (
        select(
            Send.id,
            Send.arm,
            Customer.external_id,
            Customer.email,
            Customer.attributes,
            Customer.status,
        )
        .join(Customer, Customer.id == Send.customer_id)
        .where(Send.period_id == period_id, Send.status == SendStatus.QUEUED)
        .order_by(Send.id)
        .limit(limit)
    )
    return session.execute(stmt).all()


def record_results(session: Session, results: list[dict]) -> None:
    """executemany: [{"sid", "status", "error", "message_id", "sent_at"}, …]; only queued rows move."""
    if not results:
        return
    t = Send.__table__
    stmt = (
        update(t)
        .where(and_(t.c.id == bindparam("sid"), t.c.status == SendStatus.QUEUED))
        .values(
            status=bindparam("new_status"),
            error=bindparam("err"),
            message_id=bindparam("mid"),
            sent_at=bindparam("at"),
        )
    )
    session.connection().execute(stmt, results)


def count_period(session: Session, period_id: int) -> dict[str, int]:
    stmt = select(Send.status, func.count()).where(Send.period_id == period_id).group_by(Send.status)
    return dict(session.execute(stmt).all())


def update_period_counts(session: Session, period: SendPeriod) -> None:
    counts = count_period(session, period.id)
    period.total = sum(counts.values())
    period.sent = counts.get(SendStatus.SENT, 0)
    period.failed = counts.get(SendStatus.FAILED, 0)


def arm_aggregates(session: Session, campaign_id: int, segment_id: int | None = None):
    """Sufficient statistics per (segment, arm) over delivered sends, aggregated by the database."""
    clicked = func.sum(case((Send.first_click_at.is_not(None), 1), else_=0))
    converted = func.sum(case((Send.first_conversion_at.is_not(None), 1), else_=0))
    stmt = (
        select(
            Send.segment_id,
            Send.arm,
            func.count().label("sends"),
            clicked.label("clicks"),
            converted.label("conversions"),
            func.coalesce(func.sum(Send.revenue), 0.0).label("revenue"),
            func.coalesce(func.sum(Send.revenue * Send.revenue), 0.0).label("revenue_sq"),
        )
        .where(Send.campaign_id == campaign_id, Send.status == SendStatus.SENT)
        .group_by(Send.segment_id, Send.arm)
    )
    if segment_id is not None:
        stmt = stmt.where(Send.segment_id == segment_id)
    return session.execute(stmt).all()


def period_assignments(session: Session, period_id: int, after_id: int, limit: int):
    """One page of a period's ledger for export, keyed by send id (keyset pagination)."""
    stmt = (
        select(Send.id, Customer.external_id, Customer.email, Send.segment_id, Send.arm, Send.propensity, Send.status)
        .join(Customer, Customer.id == Send.customer_id)
        .where(Send.period_id == period_id, Send.id > after_id)
        .order_by(Send.id)
        .limit(limit)
    )
    return session.execute(stmt).all()
