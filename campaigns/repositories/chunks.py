"""Queries over send chunks: creation, leases, completion."""

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, text, update
from sqlmodel import Session

from campaigns.db import is_postgres
from campaigns.models import Campaign, ChunkStatus, SendChunk, SendPeriod, utcnow

_PLAN_LOCK_SPACE = 0x4D4142  # "MAB": the first key of the plan's advisory locks, the period id the second


def lock_plan(session: Session, period_id: int) -> None:
    """Serialise the claims of one period (a redelivered coordinator beside the original) for the
    rest of the transaction, without touching the period's row, which delivery updates meanwhile.
    PostgreSQL: a transaction-level advisory lock. SQLite: its one writer lock does it, taken by the
    claim's first write (`campaigns.mark_claimed`) before the claim reads the audience and the
    ledger's last id."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:space, :period)"),
                        {"space": _PLAN_LOCK_SPACE, "period": period_id})


def create(session: Session, period_id: int, ranges: list[tuple[int, int]], release_at: datetime | None = None,
           window: str | None = None, sizes: list[int] | None = None) -> list[int]:
    """Chunks for `ranges` of send ids, numbered after the period's existing ones; their ids. With
    send windows: not delivered before `release_at`, the `window`'s, holding `sizes` sends."""
    if not ranges:
        return []
    t = SendChunk.__table__
    last = session.execute(select(func.coalesce(func.max(t.c.number), 0)).where(t.c.period_id == period_id))
    first_number = last.scalar_one() + 1
    now = utcnow()
    session.execute(
        t.insert(),
        [
            {"period_id": period_id, "number": first_number + i, "first_send_id": a, "last_send_id": b,
             "status": ChunkStatus.PENDING, "attempts": 0, "sent": 0, "failed": 0, "updated_at": now,
             "release_at": release_at, "window": window, "size": sizes[i] if sizes else None}
            for i, (a, b) in enumerate(ranges)
        ],
    )
    stmt = select(t.c.id).where(t.c.period_id == period_id, t.c.number >= first_number).order_by(t.c.number)
    return list(session.execute(stmt).scalars())


def get(session: Session, chunk_id: int) -> SendChunk | None:
    return session.get(SendChunk, chunk_id)


def take_lease(session: Session, chunk_id: int, now: datetime, until: datetime, holder: str,
               dead_holder: str | None = None) -> bool:
    """Take the chunk when nobody holds it (pending, or its holder's lease ran out), or when it is
    still held by `dead_holder`, a process known to be dead. One UPDATE, so two workers can never
    both win."""
    t = SendChunk.__table__
    free = (t.c.status == ChunkStatus.PENDING) | (t.c.lease_until < now)
    if dead_holder is not None:
        free = free | (t.c.holder == dead_holder)
    result = session.execute(
        update(t)
        .where(t.c.id == chunk_id, t.c.status != ChunkStatus.DONE, free)
        .values(status=ChunkStatus.RUNNING, lease_until=until, holder=holder, attempts=t.c.attempts + 1,
                updated_at=now)
    )
    return result.rowcount == 1


def holder_of(session: Session, chunk_id: int) -> str | None:
    t = SendChunk.__table__
    stmt = select(t.c.holder).where(t.c.id == chunk_id, t.c.status == ChunkStatus.RUNNING)
    return session.execute(stmt).scalar_one_or_none()


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
        .values(status=ChunkStatus.PENDING, lease_until=None, holder=None, updated_at=utcnow())
    )


def mark_done(session: Session, chunk_id: int) -> None:
    t = SendChunk.__table__
    session.execute(update(t).where(t.c.id == chunk_id).values(status=ChunkStatus.DONE, lease_until=None,
                                                               holder=None, updated_at=utcnow()))


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


class ChunkFacts(NamedTuple):
    """What a period's unfinished chunks are doing, for the stall diagnosis and the sweeper."""

    pending: int
    held: int  # running, lease still valid
    expired: int  # running, lease ran out: the holder stopped
    first_held: int | None  # the number of a held chunk, and its lease
    held_until: datetime | None
    first_expired: int | None
    expired_at: datetime | None
    last_update: datetime | None  # the newest change to any of its chunks


def facts(session: Session, period_id: int, now: datetime) -> ChunkFacts:
    t = SendChunk.__table__
    rows = session.execute(
        select(t.c.number, t.c.status, t.c.lease_until, t.c.updated_at)
        .where(t.c.period_id == period_id, t.c.status != ChunkStatus.DONE).order_by(t.c.number)
    ).all()
    held = [r for r in rows if r.status == ChunkStatus.RUNNING and r.lease_until and r.lease_until >= now]
    expired = [r for r in rows if r.status == ChunkStatus.RUNNING and (not r.lease_until or r.lease_until < now)]
    last = session.execute(select(func.max(t.c.updated_at)).where(t.c.period_id == period_id)).scalar_one()
    return ChunkFacts(
        pending=sum(r.status == ChunkStatus.PENDING for r in rows), held=len(held), expired=len(expired),
        first_held=held[0].number if held else None, held_until=held[0].lease_until if held else None,
        first_expired=expired[0].number if expired else None,
        expired_at=expired[0].lease_until if expired else None, last_update=last,
    )


def abandoned(session: Session, period_id: int, now: datetime, include_pending: bool) -> list[tuple[int, str | None]]:
    """(id, holder) of the unfinished chunks that may have nobody working on them: running with a
    lease that ran out, running at all (the caller checks whether the holder is alive), and — when
    the period has not moved for a lease — pending, whose task was lost with a worker or the broker."""
    t = SendChunk.__table__
    candidates = t.c.status == ChunkStatus.RUNNING
    if include_pending:  # a chunk waiting for its send window is not lost (send_windows.release_due)
        candidates = candidates | ((t.c.status == ChunkStatus.PENDING)
                                   & (t.c.release_at.is_(None) | (t.c.release_at <= now)))
    stmt = select(t.c.id, t.c.holder, t.c.status, t.c.lease_until).where(t.c.period_id == period_id, candidates)
    rows = session.execute(stmt.order_by(t.c.number)).all()
    return [(r.id, None if r.status == ChunkStatus.PENDING or r.lease_until < now else r.holder) for r in rows]
