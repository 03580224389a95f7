"""Queries of the rule that shares customers at the frequency cap among campaigns planned at once
(services/contention.py)."""

from typing import NamedTuple

from sqlalchemy import and_, select, text, true
from sqlmodel import Session

from campaigns.db import is_postgres
from campaigns.models import AllocationSnapshot, Campaign, CampaignSegment, CampaignStatus, PeriodStatus, SendPeriod

_CAP_LOCK = (0x4D4142, 0)  # the plan locks' key space ("MAB"); 0 is never a period id


def lock_cap(session: Session) -> None:
    """Serialise every segment claim of every period under a frequency cap, for the rest of the
    transaction: a claim reads the others' claims, so two claims at once could both take a
    customer's last slot. PostgreSQL: a transaction-level advisory lock. SQLite: its one writer lock
    does it, taken by the claim's first write (`campaigns.mark_claimed`) before anything is read."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"),
                        {"space": _CAP_LOCK[0], "key": _CAP_LOCK[1]})


class Rival(NamedTuple):
    """A period of another active campaign, in flight, that targets the segment and has not claimed
    it yet; `snapshot` is its allocation for the segment (None while its plan has not opened)."""

    period_id: int
    campaign_id: int
    priority: int
    objective: str
    snapshot: AllocationSnapshot | None


def unclaimed_rivals(session: Session, campaign_id: int, segment_id: int) -> list[Rival]:
    snap = AllocationSnapshot
    stmt = (
        select(SendPeriod.id, Campaign.id, Campaign.priority, Campaign.objective, snap)
        .join(Campaign, Campaign.id == SendPeriod.campaign_id)
        .join(CampaignSegment, and_(CampaignSegment.campaign_id == Campaign.id,
                                    CampaignSegment.segment_id == segment_id))
        .outerjoin(snap, and_(snap.period_id == SendPeriod.id, snap.segment_id == segment_id))
        .where(SendPeriod.status.in_((PeriodStatus.QUEUED, PeriodStatus.RUNNING)),
               SendPeriod.planned_at.is_(None), Campaign.status == CampaignStatus.ACTIVE,
               Campaign.id != campaign_id, snap.claimed_at.is_(None))
        .order_by(SendPeriod.id)
    )
    return [Rival(*row) for row in session.execute(stmt).all()]


def unplanned_periods(session: Session, period_id: int, claimed_only: bool = True) -> list[int]:
    """Running periods of active campaigns that have not claimed a segment `period_id` has claimed
    (or, not `claimed_only`, targets): those it may have let go on."""
    mine, theirs = AllocationSnapshot.__table__.alias("mine"), AllocationSnapshot.__table__.alias("theirs")
    stmt = (select(SendPeriod.id).distinct().join(Campaign, Campaign.id == SendPeriod.campaign_id)
            .join(theirs, theirs.c.period_id == SendPeriod.id)
            .join(mine, and_(mine.c.segment_id == theirs.c.segment_id, mine.c.period_id == period_id))
            .where(SendPeriod.status == PeriodStatus.RUNNING, SendPeriod.planned_at.is_(None),
                   Campaign.status == CampaignStatus.ACTIVE, SendPeriod.id != period_id,
                   mine.c.claimed_at.is_not(None) if claimed_only else true(), theirs.c.claimed_at.is_(None))
            .order_by(SendPeriod.id))
    return list(session.execute(stmt).scalars())


def periods_lost_to(session: Session, campaign_id: int) -> list[tuple[int, dict]]:
    """(period number, lost_to) of the campaign's periods that lost customers to the cap."""
    stmt = (select(SendPeriod.number, SendPeriod.lost_to)
            .where(SendPeriod.campaign_id == campaign_id, SendPeriod.lost_to.is_not(None))
            .order_by(SendPeriod.number))
    return [(number, lost) for number, lost in session.execute(stmt).all() if lost]


def campaign_names(session: Session, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(session.execute(select(Campaign.id, Campaign.name).where(Campaign.id.in_(ids))).all())
