"""Queries over the send ledger: audience selection, bulk claims, delivery results, aggregates."""

from datetime import datetime

import numpy as np
from sqlalchemy import and_, bindparam, case, func, select, update
from sqlmodel import Session

from campaigns.db import insert_ignoring_conflicts
from campaigns.models import Customer, CustomerStatus, Send, SendPeriod, SendStatus


def eligible_customer_ids(
    session: Session, segment_id: int, period_id: int, cap: tuple[int, datetime] | None = None
) -> np.ndarray:
    """Active, consenting customers of the segment not yet claimed in this period and under the
    cross-campaign frequency cap (`cap` = (max emails, since when)), in id order (deterministic)."""
    already = select(Send.customer_id).where(Send.period_id == period_id)
    stmt = select(Customer.id).where(
        Customer.segment_id == segment_id,
        Customer.status == CustomerStatus.ACTIVE,
        Customer.consent.is_(True),
        Customer.id.not_in(already),
    )
    if cap is not None:
        limit, since = cap
        capped = (
            select(Send.customer_id)
            .where(Send.status == SendStatus.SENT, Send.sent_at >= since)
            .group_by(Send.customer_id)
            .having(func.count() >= limit)
        )
        stmt = stmt.where(Customer.id.not_in(capped))
    ids = session.execute(stmt.order_by(Customer.id)).scalars().all()
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


def claim_sends(session: Session, rows: list[dict]) -> None:
    """Insert ledger rows; a (period, customer) already claimed is skipped by the unique constraint."""
    if rows:
        session.execute(insert_ignoring_conflicts(session, Send.__table__, ["period_id", "customer_id"]), rows)


def send_id_range(session: Session, period_id: int) -> tuple[int | None, int | None]:
    stmt = select(func.min(Send.id), func.max(Send.id)).where(Send.period_id == period_id)
    return tuple(session.execute(stmt).one())


def queued_batch(session: Session, period_id: int, limit: int, first_id: int = 0, last_id: int | None = None):
    """The next claimed-but-unsent rows of a chunk (a send id range), with what rendering needs
    about the customer — read just before delivery, so suppression is checked at send time."""
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
        .where(Send.period_id == period_id, Send.status == SendStatus.QUEUED, Send.id >= first_id)
        .order_by(Send.id)
        .limit(limit)
    )
    if last_id is not None:
        stmt = stmt.where(Send.id <= last_id)
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


def add_progress(session: Session, period_id: int, sent: int, failed: int) -> None:
    """Atomic increments: chunks finishing on many workers at once never lose a count."""
    t = SendPeriod.__table__
    session.execute(update(t).where(t.c.id == period_id).values(sent=t.c.sent + sent, failed=t.c.failed + failed))


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
