"""Queries over the model actions (promote, roll back, uniform, resume) of campaign segments."""

from sqlalchemy import func, select
from sqlmodel import Session

from campaigns.models import AllocationSnapshot, ModelAction, Segment


def latest_actions(session: Session, campaign_id: int) -> dict[int, ModelAction]:
    """The newest action of each segment of the campaign (it decides the segment's mode)."""
    newest = (
        select(func.max(ModelAction.id))
        .where(ModelAction.campaign_id == campaign_id)
        .group_by(ModelAction.segment_id)
    )
    stmt = select(ModelAction).where(ModelAction.id.in_(newest))
    return {a.segment_id: a for a in session.execute(stmt).scalars()}


def timeline(session: Session, campaign_id: int) -> list[tuple[ModelAction, str]]:
    """Every action of the campaign, oldest first, with its segment's name."""
    stmt = (
        select(ModelAction, Segment.name)
        .join(Segment, Segment.id == ModelAction.segment_id)
        .where(ModelAction.campaign_id == campaign_id)
        .order_by(ModelAction.id)
    )
    return list(session.execute(stmt).all())


def snapshots_of_period(session: Session, campaign_id: int, number: int) -> dict[int, AllocationSnapshot]:
    """Segment id -> the allocation snapshot of the campaign's period `number`."""
    stmt = select(AllocationSnapshot).where(
        AllocationSnapshot.campaign_id == campaign_id, AllocationSnapshot.version == number
    ).order_by(AllocationSnapshot.wave)  # a period in waves: its last wave's (the one it ended on)
    return {s.segment_id: s for s in session.execute(stmt).scalars()}


def pinned_snapshots(session: Session, campaign_id: int, pins: dict[int, int]) -> dict[int, AllocationSnapshot]:
    """Segment id -> the snapshot its pin names (segment id -> period number), in one query."""
    if not pins:
        return {}
    stmt = select(AllocationSnapshot).where(
        AllocationSnapshot.campaign_id == campaign_id,
        AllocationSnapshot.segment_id.in_(list(pins)),
        AllocationSnapshot.version.in_(set(pins.values())),
    ).order_by(AllocationSnapshot.wave)  # a period in waves: its last wave's
    return {s.segment_id: s for s in session.execute(stmt).scalars() if pins[s.segment_id] == s.version}
