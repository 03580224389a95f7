"""Queries over a campaign's targeted audience: who it reaches, and samples of them."""

from sqlalchemy import func, select
from sqlmodel import Session

from campaigns.audience_filter import conditions
from campaigns.db import is_postgres
from campaigns.models import Customer, CustomerStatus


def _targeted(segment_id: int):
    # the same customers the period's plan selects (repositories/sends.eligible_customer_ids)
    return (Customer.segment_id == segment_id, Customer.status == CustomerStatus.ACTIVE, Customer.consent.is_(True))


def reach(session: Session, segment_ids: list[int], audience: dict | None) -> dict[int, int]:
    """Segment id -> how many active, consenting customers it has in the audience filter and lists."""
    extra = conditions(audience, is_postgres(session))
    stmt = (select(Customer.segment_id, func.count())
            .where(Customer.segment_id.in_(segment_ids), Customer.status == CustomerStatus.ACTIVE,
                   Customer.consent.is_(True), *extra)
            .group_by(Customer.segment_id))
    counts = dict(session.execute(stmt).all())
    return {sid: counts.get(sid, 0) for sid in segment_ids}


def random_sample(session: Session, segment_id: int, limit: int, audience: dict | None) -> list[tuple[str, str, dict]]:
    """Up to `limit` targeted customers of the segment, drawn at random: (external id, email, attributes)."""
    extra = conditions(audience, is_postgres(session))
    stmt = (select(Customer.external_id, Customer.email, Customer.attributes)
            .where(*_targeted(segment_id), *extra).order_by(func.random()).limit(limit))
    return [tuple(r) for r in session.execute(stmt).all()]


def customer(session: Session, external_id: str) -> Customer | None:
    return session.execute(select(Customer).where(Customer.external_id == external_id)).scalars().first()
