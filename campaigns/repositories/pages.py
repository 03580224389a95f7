"""Keyset pages of the lists the API serves: each reads at most `limit + 1` rows after the cursor's
key, in the list's own order, so a page costs the same on the first page and the ten-thousandth."""

from sqlalchemy import func, select, tuple_
from sqlmodel import Session

from campaigns.models import AllocationSnapshot, Campaign, Customer, Segment, SendPeriod, Variant


def segments(session: Session, after: int | None, limit: int) -> list[Segment]:
    stmt = select(Segment).order_by(Segment.id).limit(limit)
    if after is not None:
        stmt = stmt.where(Segment.id > after)
    return list(session.execute(stmt).scalars())


def customers_per_segment(session: Session, segment_ids: list[int]) -> dict[int, int]:
    if not segment_ids:
        return {}
    stmt = (
        select(Customer.segment_id, func.count())
        .where(Customer.segment_id.in_(segment_ids))
        .group_by(Customer.segment_id)
    )
    return dict(session.execute(stmt).all())


def campaigns(session: Session, after: int | None, offset: int, limit: int) -> list[Campaign]:
    stmt = select(Campaign).order_by(Campaign.id).offset(offset).limit(limit)
    if after is not None:
        stmt = stmt.where(Campaign.id > after)
    return list(session.execute(stmt).scalars())


def variants(session: Session, campaign_id: int, after: int | None, limit: int) -> list[Variant]:
    stmt = select(Variant).where(Variant.campaign_id == campaign_id).order_by(Variant.arm).limit(limit)
    if after is not None:
        stmt = stmt.where(Variant.arm > after)
    return list(session.execute(stmt).scalars())


def periods(session: Session, campaign_id: int, after: int | None, limit: int) -> list[SendPeriod]:
    stmt = select(SendPeriod).where(SendPeriod.campaign_id == campaign_id).order_by(SendPeriod.number).limit(limit)
    if after is not None:
        stmt = stmt.where(SendPeriod.number > after)
    return list(session.execute(stmt).scalars())


def snapshots(
    session: Session, campaign_id: int, after: tuple[int, int, int] | None, limit: int
) -> list[tuple[AllocationSnapshot, str]]:
    """Ordered by (period number, segment id, wave)."""
    stmt = (
        select(AllocationSnapshot, Segment.name)
        .join(Segment, Segment.id == AllocationSnapshot.segment_id)
        .where(AllocationSnapshot.campaign_id == campaign_id)
        .order_by(AllocationSnapshot.version, AllocationSnapshot.segment_id, AllocationSnapshot.wave)
        .limit(limit)
    )
    if after is not None:
        key = tuple_(AllocationSnapshot.version, AllocationSnapshot.segment_id, AllocationSnapshot.wave)
        stmt = stmt.where(key > tuple_(*after))
    return list(session.execute(stmt).all())
