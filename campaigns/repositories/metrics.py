"""Queries the /metrics scrape runs: small aggregates, read at scrape time."""

from sqlalchemy import and_, func, select
from sqlmodel import Session

from campaigns.models import AllocationSnapshot, Campaign, CampaignStatus, Segment


def latest_weights(session: Session) -> list:
    """(campaign_id, segment name, weights) of the newest allocation snapshot of every segment of
    every active or paused campaign. Completed campaigns drop out, so the series stay few."""
    newest = (
        select(
            AllocationSnapshot.campaign_id.label("cid"),
            AllocationSnapshot.segment_id.label("sid"),
            func.max(AllocationSnapshot.id).label("id"),  # the newest period's last wave
        )
        .join(Campaign, Campaign.id == AllocationSnapshot.campaign_id)
        .where(Campaign.status.in_([CampaignStatus.ACTIVE, CampaignStatus.PAUSED]))
        .group_by(AllocationSnapshot.campaign_id, AllocationSnapshot.segment_id)
        .subquery()
    )
    stmt = (
        select(AllocationSnapshot.campaign_id, Segment.name, AllocationSnapshot.weights)
        .join(newest, newest.c.id == AllocationSnapshot.id)
        .join(Segment, Segment.id == AllocationSnapshot.segment_id)
        .order_by(AllocationSnapshot.campaign_id, Segment.name)
    )
    return list(session.execute(stmt).all())


def campaigns_by_status(session: Session) -> dict[str, int]:
    stmt = select(Campaign.status, func.count()).group_by(Campaign.status)
    return {status: n for status, n in session.execute(stmt).all()}
