"""Queries of send windows: customers' time zones, chunks by window, chunks whose window opened."""

from datetime import datetime
from typing import NamedTuple

import numpy as np
from sqlalchemy import case, func, select, text, update
from sqlmodel import Session

from campaigns.db import is_postgres
from campaigns.models import ChunkStatus, Customer, SendChunk, SendPeriod


def timezones(session: Session, segment_id: int, customer_ids: np.ndarray, attribute: str) -> np.ndarray:
    """The `attribute` value of each customer as text (aligned with `customer_ids`, which are in id
    order as `sends.eligible_customer_ids` returns them), "" where it has none. One query per
    segment, reading only the customers that have the attribute."""
    out = np.full(len(customer_ids), "", dtype=object)
    if not len(customer_ids):
        return out
    value = (Customer.attributes.op("->>")(attribute) if is_postgres(session)
             else func.json_extract(Customer.attributes, f"$.{attribute}"))
    rows = session.execute(select(Customer.id, value).where(Customer.segment_id == segment_id, value.is_not(None))
                           .order_by(Customer.id)).all()
    if not rows:
        return out
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    values = np.array([str(r[1]) for r in rows], dtype=object)
    where = np.minimum(np.searchsorted(customer_ids, ids), len(customer_ids) - 1)
    found = customer_ids[where] == ids  # customers with the attribute but not in this claim are skipped
    out[where[found]] = values[found]
    return out


def count_in_range(session: Session, period_id: int, first: int, last: int) -> int:
    return session.execute(text("SELECT count(*) FROM send WHERE id >= :a AND id <= :b AND period_id + 0 = :p"),
                           {"a": first, "b": last, "p": period_id}).scalar_one()


def add_fallbacks(session: Session, period_id: int, n: int) -> None:
    t = SendPeriod.__table__
    session.execute(update(t).where(t.c.id == period_id).values(timezone_fallbacks=t.c.timezone_fallbacks + n))


def next_wait(session: Session, period_id: int, now: datetime) -> tuple[str, datetime] | None:
    """(window, opens at) of the next window the period waits for, when every unfinished chunk is
    waiting for its window; None when some chunk may be delivered now (or none is left)."""
    t = SendChunk.__table__
    unfinished = (t.c.period_id == period_id) & (t.c.status != ChunkStatus.DONE)
    ready = unfinished & (t.c.release_at.is_(None) | (t.c.release_at <= now))
    if session.execute(select(t.c.id).where(ready).limit(1)).first() is not None:
        return None
    row = session.execute(select(t.c.window, t.c.release_at).where(unfinished).order_by(t.c.release_at, t.c.number)
                          .limit(1)).first()
    return (row.window, row.release_at) if row else None


def opened_since(session: Session, period_id: int, since: datetime, now: datetime) -> bool:
    """Whether one of the period's unfinished chunks had its window open in (since, now]."""
    t = SendChunk.__table__
    stmt = select(t.c.id).where(t.c.period_id == period_id, t.c.status != ChunkStatus.DONE,
                                t.c.release_at > since, t.c.release_at <= now).limit(1)
    return session.execute(stmt).first() is not None


class WindowRow(NamedTuple):
    window: str
    opens_at: datetime
    closes_at: datetime
    total: int
    sent: int
    failed: int
    chunks: int
    chunks_done: int


def by_window(session: Session, period_id: int) -> list[WindowRow]:
    t = SendChunk.__table__
    stmt = (select(t.c.window, func.min(t.c.release_at), func.max(t.c.release_at), func.sum(t.c.size),
                   func.sum(t.c.sent), func.sum(t.c.failed), func.count(),
                   func.sum(case((t.c.status == ChunkStatus.DONE, 1), else_=0)))
            .where(t.c.period_id == period_id, t.c.window.is_not(None))
            .group_by(t.c.window).order_by(func.min(t.c.release_at), t.c.window))
    return [WindowRow(*r) for r in session.execute(stmt).all()]


def release_due(session: Session, period_id: int, now: datetime) -> list[int]:
    """Ids of the period's pending chunks whose window has opened and that nobody touched since,
    marked as handed out (updated_at = now) so the next sweep does not release them again."""
    t = SendChunk.__table__
    due = ((t.c.period_id == period_id) & (t.c.status == ChunkStatus.PENDING) & (t.c.release_at <= now)
           & (t.c.updated_at < t.c.release_at))
    ids = list(session.execute(select(t.c.id).where(due).order_by(t.c.number)).scalars())
    if ids:
        session.execute(update(t).where(t.c.id.in_(ids)).values(updated_at=now))
    return ids
