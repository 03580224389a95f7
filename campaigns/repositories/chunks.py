"""Queries over send chunks: creation, leases, completion."""

from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session

from campaigns.models import Campaign, ChunkStatus, SendChunk, SendPeriod, utcnow


def create(session: Session, period_id: int, ranges: list[tuple[int, int]]) -> None:
    if ranges:
        now = utcnow()
        session.execute(
            SendChunk.__table__.insert(),
            [
                {"period_id": period_id, "number": i + 1, "first_send_id": a, "last_send_id": b,
                 "status": ChunkStatus.PENDING, "attempts": 0, "sent": 0, "failed": 0, "updated_at": now}
                for i, (a, b) in enumerate(ranges)
            ],
        )


def get(session: Session, chunk_id: int) -> SendChunk | None:
    return session.get(SendChunk, chunk_id)


def take_lease(session: Session, chunk_id: int, now: datetime, until: datetime) -> bool:
    """Take the chunk when nobody holds it (pending, or its holder's lease ran out). One UPDATE,
    so two workers can never both win."""
    t = SendChunk.__table__
    result = session.execute(
        update(t)
        .where(
            t.c.id == chunk_id,
            t.c.status != ChunkStatus.DONE,
            (t.c.status == ChunkStatus.PENDING) | (t.c.lease_until < now),
        )
        .values(status=ChunkStatus.RUNNING, lease_until=until, attempts=t.c.attempts + 1, updated_at=now)
    )
    return result.rowcount == 1


def progress(session: Session, chunk_id: int, sent: int, failed: int, until: datetime) -> None:
    t = SendChunk.__table__
    session.execute(
        update(t)
        .where(t.c.id == chunk_id)
        .values(sent=t.c.sent + sent, failed=t.c.failed + failed, lease_until=until, updated_at=utcnow())
    )


def release(session: Session, chunk_id: int) -> None:
    """Give the chunk back (paused campaign): the next worker to be handed it may take it at once."""
    t = SendChunk.__table__
    session.execute(
        update(t).where(t.c.id == chunk_id, t.c.status == ChunkStatus.RUNNING)
        .values(status=ChunkStatus.PENDING, lease_until=None, updated_at=utcnow())
    )


def mark_done(session: Session, chunk_id: int) -> None:
    t = SendChunk.__table__
    session.execute(update(t).where(t.c.id == chunk_id).values(status=ChunkStatus.DONE, lease_until=None,
                                                               updated_at=utcnow()))


def lock_period(session: Session, period_id: int) -> SendPeriod | None:
    """Serialise chunk completions of one period, so exactly one of them closes it."""
    return session.execute(select(SendPeriod).where(SendPeriod.id == period_id).with_for_update()).scalars().first()


def unfinished_ids(session: Session, period_id: int) -> list[int]:
    stmt = select(SendChunk.id).where(SendChunk.period_id == period_id, SendChunk.status != ChunkStatus.DONE)
    return list(session.execute(stmt.order_by(SendChunk.number)).scalars())


def count_unfinished(session: Session, period_id: int) -> int:
    stmt = select(func.count()).where(SendChunk.period_id == period_id, SendChunk.status != ChunkStatus.DONE)
    return session.execute(stmt).scalar_one()


def campaign_status(session: Session, campaign_id: int) -> str | None:
    """Just the status, read before every delivery batch (a pause must stop the chunk): loading the
    whole campaign row, with its templates and JSON columns, into an ORM object cost more."""
    return session.execute(select(Campaign.status).where(Campaign.id == campaign_id)).scalar_one_or_none()
