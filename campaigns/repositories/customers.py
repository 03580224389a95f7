"""Queries over customers, segments and orders."""

from datetime import datetime

from sqlalchemy import and_, bindparam, case, func, not_, select, update
from sqlmodel import Session

from campaigns.db import upsert
from campaigns.models import Customer, CustomerStatus, Order, Segment, Send, SendStatus, utcnow


def segments_by_name(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Segment.name, Segment.id)).all())


def segment_customer_counts(session: Session) -> dict[int, int]:
    rows = session.execute(select(Customer.segment_id, func.count()).group_by(Customer.segment_id)).all()
    return {seg: n for seg, n in rows if seg is not None}


def existing_customer_ids(session: Session, external_ids: list[str]) -> dict[str, int]:
    stmt = select(Customer.external_id, Customer.id).where(Customer.external_id.in_(external_ids))
    return dict(session.execute(stmt).all())


def external_ids_by_email(session: Session, lowered_emails: list[str]) -> dict[str, str]:
    """Lower-cased address -> the external id of a customer who has it (index ix_customer_email_lower)."""
    if not lowered_emails:
        return {}
    address = func.lower(Customer.email)
    stmt = select(address, Customer.external_id).where(address.in_(lowered_emails))
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


def derive_rfm_segments(
    session: Session, segment_of: dict[tuple[bool, bool, bool], int], *, until: datetime, since: datetime,
    recent_since: datetime, frequent_orders: int, high_spend: float,
) -> None:
    """Set every customer's segment from their orders in one set-based UPDATE: recent = last order
    (up to `until`) at or after `recent_since`; frequent / high spend = orders / spend within
    [since, until]. Correlated subqueries use the order table's customer_id index."""
    c, o = Customer.__table__, Order.__table__
    mine = o.c.customer_id == c.c.id
    in_window = and_(mine, o.c.ordered_at >= since, o.c.ordered_at <= until)
    last = select(func.max(o.c.ordered_at)).where(mine, o.c.ordered_at <= until).scalar_subquery()
    orders = select(func.count()).where(in_window).scalar_subquery()
    spend = select(func.coalesce(func.sum(o.c.amount), 0.0)).where(in_window).scalar_subquery()
    flags = (func.coalesce(last >= recent_since, False), orders >= frequent_orders, spend >= high_spend)

    def matches(key: tuple[bool, bool, bool]):
        return and_(*(flag if wanted else not_(flag) for flag, wanted in zip(flags, key, strict=True)))

    segment = case(*[(matches(key), sid) for key, sid in segment_of.items()], else_=segment_of[(False, False, False)])
    # erased customers keep no segment: they are out of every audience for good
    live = c.c.status != CustomerStatus.ERASED
    session.execute(update(c).where(live).values(segment_id=segment, updated_at=utcnow()))


def set_status(session: Session, customer_id: int, status: CustomerStatus) -> None:
    # an old unsubscribe link of an erased customer must not turn `erased` back into something else
    session.execute(update(Customer).where(Customer.id == customer_id, Customer.status != CustomerStatus.ERASED)
                    .values(status=status, updated_at=utcnow()))


def sample_active(session: Session, segment_ids: list[int], limit: int) -> list[Customer]:
    """The first active customers of these segments, by id (a stable sample)."""
    return list(session.execute(
        select(Customer).where(Customer.segment_id.in_(segment_ids), Customer.status == CustomerStatus.ACTIVE)
        .order_by(Customer.id).limit(limit)).scalars())


def bounce_active(session: Session, external_ids: list[str]) -> int:
    """Mark these customers bounced (only active ones: never resurrect or overwrite another state)."""
    if not external_ids:
        return 0
    done = session.execute(update(Customer).where(Customer.external_id.in_(external_ids),
                                                  Customer.status == CustomerStatus.ACTIVE)
                           .values(status=CustomerStatus.BOUNCED, updated_at=utcnow()))
    return done.rowcount


def recent_send_errors(session: Session, external_id: str, n: int) -> list[str | None]:
    """The error of each of the customer's last `n` tried sends (any campaign), newest first
    (None for a delivered one)."""
    customer_id = select(Customer.id).where(Customer.external_id == external_id).scalar_subquery()
    return list(session.execute(
        select(Send.error).where(Send.customer_id == customer_id, Send.status != SendStatus.QUEUED)
        .order_by(Send.id.desc()).limit(n)).scalars())
