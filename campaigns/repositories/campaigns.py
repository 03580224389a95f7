"""Queries over campaigns, variants, periods and allocation snapshots."""

from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session

from campaigns.models import (
    AllocationSnapshot,
    Campaign,
    CampaignSegment,
    CampaignStatus,
    PeriodStatus,
    Segment,
    SendPeriod,
    Variant,
)

IN_FLIGHT = (PeriodStatus.QUEUED, PeriodStatus.RUNNING)


def get_campaign(session: Session, campaign_id: int, *, for_update: bool = False) -> Campaign | None:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalars().first()


def campaign_segments(session: Session, campaign_id: int) -> list[Segment]:
    stmt = (
        select(Segment)
        .join(CampaignSegment, CampaignSegment.segment_id == Segment.id)
        .where(CampaignSegment.campaign_id == campaign_id)
        .order_by(Segment.id)
    )
    return list(session.execute(stmt).scalars())


def variants(session: Session, campaign_id: int) -> list[Variant]:
    stmt = select(Variant).where(Variant.campaign_id == campaign_id).order_by(Variant.arm)
    return list(session.execute(stmt).scalars())


def variant_count(session: Session, campaign_id: int) -> int:
    return session.execute(select(func.count()).where(Variant.campaign_id == campaign_id)).scalar_one()


def get_period(session: Session, period_id: int) -> SendPeriod | None:
    return session.get(SendPeriod, period_id)


def period_by_number(session: Session, campaign_id: int, number: int) -> SendPeriod | None:
    stmt = select(SendPeriod).where(SendPeriod.campaign_id == campaign_id, SendPeriod.number == number)
    return session.execute(stmt).scalars().first()


def periods(session: Session, campaign_id: int) -> list[SendPeriod]:
    stmt = select(SendPeriod).where(SendPeriod.campaign_id == campaign_id).order_by(SendPeriod.number)
    return list(session.execute(stmt).scalars())


def in_flight_period(session: Session, campaign_id: int) -> SendPeriod | None:
    stmt = select(SendPeriod).where(SendPeriod.campaign_id == campaign_id, SendPeriod.status.in_(IN_FLIGHT))
    return session.execute(stmt).scalars().first()


def in_flight_periods(session: Session) -> list[SendPeriod]:
    stmt = select(SendPeriod).where(SendPeriod.status.in_(IN_FLIGHT)).order_by(SendPeriod.id)
    return list(session.execute(stmt).scalars())


def in_flight_of_active_campaigns(session: Session) -> list[SendPeriod]:
    """Periods queued or running whose campaign is active: the work the sweeper looks after."""
    stmt = (select(SendPeriod).join(Campaign, Campaign.id == SendPeriod.campaign_id)
            .where(SendPeriod.status.in_(IN_FLIGHT), Campaign.status == CampaignStatus.ACTIVE)
            .order_by(SendPeriod.id))
    return list(session.execute(stmt).scalars())


def due_waves(session: Session, now: datetime) -> list[int]:
    """Periods of active campaigns whose next wave is due (beat hands their plan out)."""
    stmt = (select(SendPeriod.id).join(Campaign, Campaign.id == SendPeriod.campaign_id)
            .where(SendPeriod.status == PeriodStatus.RUNNING, SendPeriod.next_wave_at.is_not(None),
                   SendPeriod.next_wave_at <= now, Campaign.status == CampaignStatus.ACTIVE)
            .order_by(SendPeriod.id))
    return list(session.execute(stmt).scalars())


def last_claim_at(session: Session, period_id: int) -> datetime | None:
    """When the plan last claimed a segment: a plan in progress moves here, not in the counts."""
    stmt = select(func.max(AllocationSnapshot.claimed_at)).where(AllocationSnapshot.period_id == period_id)
    return session.execute(stmt).scalar_one()


def last_period_number(session: Session, campaign_id: int) -> int:
    stmt = select(func.coalesce(func.max(SendPeriod.number), 0)).where(SendPeriod.campaign_id == campaign_id)
    return session.execute(stmt).scalar_one()


def due_campaign_ids(session: Session, now: datetime) -> list[int]:
    stmt = select(Campaign.id).where(
        Campaign.status == CampaignStatus.ACTIVE,
        Campaign.cadence != "manual",
        Campaign.next_period_at.is_not(None),
        Campaign.next_period_at <= now,
    )
    return list(session.execute(stmt).scalars())


def snapshot_for(session: Session, period_id: int, segment_id: int, wave: int = 1) -> AllocationSnapshot | None:
    stmt = select(AllocationSnapshot).where(
        AllocationSnapshot.period_id == period_id, AllocationSnapshot.segment_id == segment_id,
        AllocationSnapshot.wave == wave,
    )
    return session.execute(stmt).scalars().first()


def mark_claimed(session: Session, snapshot_id: int, now: datetime) -> bool:
    """Record that the snapshot's segment is being claimed, unless it already was: False means a
    coordinator before this one claimed it (a rerun skips it)."""
    t = AllocationSnapshot.__table__
    result = session.execute(update(t).where(t.c.id == snapshot_id, t.c.claimed_at.is_(None)).values(claimed_at=now))
    return result.rowcount == 1


def snapshots(session: Session, campaign_id: int) -> list[tuple[AllocationSnapshot, str]]:
    stmt = (
        select(AllocationSnapshot, Segment.name)
        .join(Segment, Segment.id == AllocationSnapshot.segment_id)
        .where(AllocationSnapshot.campaign_id == campaign_id)
        .order_by(AllocationSnapshot.version, AllocationSnapshot.segment_id, AllocationSnapshot.wave)
    )
    return list(session.execute(stmt).all())


def latest_snapshots(session: Session, campaign_id: int) -> dict[int, AllocationSnapshot]:
    """The newest snapshot of each segment (what the model currently believes)."""
    latest: dict[int, AllocationSnapshot] = {}
    for snap, _ in snapshots(session, campaign_id):
        latest[snap.segment_id] = snap
    return latest


def all_campaigns(session: Session) -> list[Campaign]:
    return list(session.execute(select(Campaign).order_by(Campaign.id)).scalars())


def last_periods(session: Session) -> dict[int, SendPeriod]:
    """Each campaign's newest period (by number), in one query."""
    newest = (
        select(SendPeriod.campaign_id, func.max(SendPeriod.number).label("number"))
        .group_by(SendPeriod.campaign_id)
        .subquery()
    )
    stmt = select(SendPeriod).join(
        newest, (SendPeriod.campaign_id == newest.c.campaign_id) & (SendPeriod.number == newest.c.number)
    )
    return {p.campaign_id: p for p in session.execute(stmt).scalars()}
