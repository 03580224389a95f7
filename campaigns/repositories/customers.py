"""Queries over customers, segments and orders."""

from datetime import datetime

from sqlalchemy import bindparam, case, func, select, update
from sqlmodel import Session

from campaigns.db import upsert
from campaigns.models import Customer, CustomerStatus, Order, Segment, utcnow


def segments_by_name(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Segment.name, Segment.id)).all())


def segment_customer_counts(session: Session) -> dict[int, int]:
    rows = session.execute(select(Customer.segment_id, func.count()).group_by(Customer.segment_id)).all()
    return {seg: n for seg, n in rows if seg is not None}


def existing_customer_ids(session: Session, external_ids: list[str]) -> dict[str, int]:
    stmt = select(Customer.external_id, Customer.id).where(Customer.external_id.in_(external_ids))
    return dict(session.execute(stmt).all())


def upsert_customers(session: Session, rows: list[dict]) -> None:
    """Insert new customers, update known ones. Status (unsubscribed, bounced) is never reset here,
    and a row without a segment keeps the segment the customer already has."""
    if not rows:
        return
    stmt = upsert(
        session,
        Customer.__table__,
        ["external_id"],
        lambda new: {
            "email": new.email,
            "attributes": new.attributes,
            "updated_at": new.updated_at,
            "segment_id": func.coalesce(new.segment_id, Customer.__table__.c.segment_id),
        },
    )
    session.execute(stmt, rows)


def set_consent(session: Session, rows: list[dict]) -> None:
    """[{"ext": external id, "consent": bool}]: only for rows whose import said so explicitly."""
    if rows:
        t = Customer.__table__
        session.connection().execute(
            update(t).where(t.c.external_id == bindparam("ext")).values(consent=bindparam("consent")), rows
        )


def get_customer(session: Session, external_id: str) -> Customer | None:
    return session.exec(select(Customer).where(Customer.external_id == external_id)).scalars().first()


def upsert_orders(session: Session, rows: list[dict]) -> None:
    if rows:
        session.execute(upsert(session, Order.__table__, ["order_id"], ["customer_id", "ordered_at", "amount"]), rows)


def rfm_aggregates(session: Session, since: datetime, until: datetime):
    """Per customer: days-since-last-order input, order count and spend within the lookback window,
    computed by the database in one pass (never row by row in Python)."""
    in_window = (Order.ordered_at >= since) & (Order.ordered_at <= until)
    stmt = (
        select(
            Order.customer_id,
            func.max(Order.ordered_at).label("last_order"),
            func.sum(case((in_window, 1), else_=0)).label("orders"),
            func.coalesce(func.sum(case((in_window, Order.amount), else_=0.0)), 0.0).label("spend"),
        )
        .where(Order.ordered_at <= until)
        .group_by(Order.customer_id)
    )
    return session.execute(stmt).all()


def all_customer_ids(session: Session) -> list[int]:
    return list(session.execute(select(Customer.id)).scalars())


def set_segments(session: Session, assignments: list[dict]) -> None:
    """Bulk update: [{"cid": customer id, "sid": segment id}, …] in one executemany."""
    if assignments:
        stmt = (
            update(Customer.__table__)
            .where(Customer.__table__.c.id == bindparam("cid"))
            .values(segment_id=bindparam("sid"), updated_at=utcnow())
        )
        session.connection().execute(stmt, assignments)


def set_status(session: Session, customer_id: int, status: CustomerStatus) -> None:
    session.execute(update(Customer).where(Customer.id == customer_id).values(status=status, updated_at=utcnow()))
